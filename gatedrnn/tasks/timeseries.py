"""Forecasting a column of any CSV file.

Windows of ``window`` past values (the target, plus any ``features`` columns) predict the
next ``horizon`` values of the target directly (one output per step ahead, not by feeding
forecasts back). The last ``test_size`` rows are held out: each test value is forecast from
the true values before it (rolling origin). Normalization is fitted on the training rows
only. With ``log`` the series is modelled in log space, and with ``difference`` the window
is read relative to its last value and the network predicts the change from it (a learned
correction to persistence, blind to the level): both help on trending, multiplicative series
such as airline passengers, whose test values lie above anything seen in training.

Baselines on the same test rows: persistence (the last value), seasonal naive (the value
one ``season`` earlier), and SARIMA(1,1,1)(0,1,1)_season when statsmodels is installed.
Metrics: RMSE, MAE and MAPE (%) in the series' own units, averaged over all horizons.
"""

from __future__ import annotations

import csv
import io

import torch
import torch.nn.functional as F

from gatedrnn.tasks.base import Task, batch_generator
from gatedrnn.tasks.data import DataError, data_path, finite_number, read_text


def read_columns(path, target: str, features: list[str]) -> dict[str, torch.Tensor]:
    text = read_text(path)
    rows = list(csv.reader(io.StringIO(text)))
    header = [h.strip() for h in rows[0]]
    wanted = [target] + features
    for name in wanted:
        if name not in header:
            raise DataError(f"{path}: no column {name!r}; the columns are {', '.join(header)}")
    columns = {name: [] for name in wanted}
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        for name in wanted:
            cell = row[header.index(name)].strip() if header.index(name) < len(row) else ""
            columns[name].append(finite_number(cell, f"{path}, line {line}: column {name!r}"))
    values = {name: torch.tensor(v, dtype=torch.float64) for name, v in columns.items()}
    if len(values[target]) < 10:
        raise DataError(f"{path}: {len(values[target])} rows are too few to forecast")
    return values


def error_metrics(forecast: torch.Tensor, actual: torch.Tensor) -> dict[str, float]:
    err = forecast - actual
    return {
        "rmse": float(err.pow(2).mean().sqrt()),
        "mae": float(err.abs().mean()),
        "mape": float((err.abs() / actual.abs().clamp_min(1e-12)).mean() * 100),
    }


class TimeSeries(Task):
    name = "timeseries"
    readout = "last"
    metric = "rmse"
    lower_is_better = True
    options = {
        "target": (str, "", "timeseries task: the column to forecast"),
        "features": (str, "", "timeseries task: extra input columns, comma-separated"),
        "window": (int, 24, "timeseries task: past steps the model reads"),
        "horizon": (int, 1, "timeseries task: steps ahead to forecast"),
        "test_size": (int, 0, "timeseries task: held-out rows at the end (0: the last 20%)"),
        "season": (int, 12, "timeseries task: season length of the seasonal-naive baseline"),
        "log": (bool, False, "timeseries task: model the log of the series"),
        "difference": (bool, False, "timeseries task: predict the change from the last value"),
    }

    def __init__(self, data, target="", features="", window=24, horizon=1, test_size=0, season=12, log=False,
                 difference=False):  # fmt: skip
        if not target:
            raise DataError("the timeseries task needs --target COLUMN")
        for name, value in (("window", window), ("horizon", horizon), ("season", season)):
            if value < 1:
                raise ValueError(f"--{name} must be a positive integer, got {value}")
        self.path, self.window, self.horizon, self.season = data, window, horizon, season
        self.log, self.difference = log, difference
        feature_names = [f.strip() for f in features.split(",") if f.strip()]
        columns = read_columns(data_path(data, self.name, "a CSV file"), target, feature_names)
        self.series = columns[target]  # (N,) in the series' own units
        N = len(self.series)
        self.test_size = test_size or max(horizon, N // 5)
        self.train_end = N - self.test_size  # rows [0, train_end) train, the rest test
        if self.train_end < window + horizon + 2:
            raise DataError(f"{data}: {self.train_end} training rows cannot fill a window of {window} "
                            f"and a horizon of {horizon}")  # fmt: skip
        if log and bool((self.series <= 0).any()):
            raise DataError(f"{data}: --log needs positive values in {target!r}")
        model_space = self.series.log() if log else self.series
        inputs = torch.stack([model_space] + [columns[f] for f in feature_names], dim=1)  # (N, F)
        train = inputs[: self.train_end]
        self.mean, self.std = train.mean(0), train.std(0).clamp_min(1e-12)  # fitted on training rows only
        self.inputs = ((inputs - self.mean) / self.std).float()  # (N, F)
        self.target = self.inputs[:, 0]
        self.input_size, self.output_size = inputs.shape[1], horizon
        origins = torch.arange(window, self.train_end - horizon + 1)  # forecast origins inside training
        n_valid = max(1, len(origins) // 10)
        self.origins = {"train": origins[:-n_valid], "valid": origins[-n_valid:],
                        "test": torch.arange(self.train_end, N - horizon + 1)}  # fmt: skip
        self.baseline = self.baselines()["persistence"]["rmse"]

    def _windows(self, origins):
        """inputs (n, window, F) and targets (n, horizon) for forecasts made at ``origins``."""
        idx = origins[:, None] + torch.arange(-self.window, 0)  # (n, W)
        ahead = origins[:, None] + torch.arange(self.horizon)  # (n, horizon)
        targets = self.target[ahead]
        windows = self.inputs[idx]  # (n, W, F)
        if self.difference:  # everything relative to the last value seen: the level drops out
            last = self.target[origins - 1]
            targets = targets - last[:, None]
            windows = torch.cat([windows[..., :1] - last[:, None, None], windows[..., 1:]], dim=-1)
        return windows, targets

    def train_batch(self, step, batch_size, seed):
        pick = torch.randint(0, len(self.origins["train"]), (batch_size,), generator=batch_generator(seed, step))
        return self._windows(self.origins["train"][pick])

    def split(self, name, seed):
        return self._windows(self.origins[name])

    def loss(self, output, target):
        return F.mse_loss(output, target)

    def to_units(self, output, origins) -> torch.Tensor:
        """Model outputs (n, horizon) back to the series' own units."""
        z = output.double()
        if self.difference:
            z = z + self.target[origins - 1][:, None].double()
        z = z * self.std[0] + self.mean[0]
        return z.exp() if self.log else z

    def actual(self, origins) -> torch.Tensor:
        return self.series[origins[:, None] + torch.arange(self.horizon)]

    @torch.no_grad()
    def evaluate(self, model, split, seed, device="cpu"):
        was_training = model.training
        model.eval()
        inputs, _ = self.split(split, seed)
        output = model(inputs.to(device)).cpu()
        model.train(was_training)
        origins = self.origins[split]
        return error_metrics(self.to_units(output, origins), self.actual(origins))

    def metrics(self, output, target):
        return {"rmse": float((output - target).pow(2).mean().sqrt())}

    def baselines(self) -> dict[str, dict[str, float]]:
        """Persistence, seasonal naive and (with statsmodels) SARIMA on the test rows."""
        origins = self.origins["test"]
        actual = self.actual(origins)
        steps = torch.arange(self.horizon)
        persistence = self.series[origins - 1][:, None].expand_as(actual)
        lag = (steps // self.season + 1) * self.season  # the same season, at least one back
        seasonal = self.series[origins[:, None] + steps - lag]
        result = {"persistence": error_metrics(persistence, actual), "seasonal naive": error_metrics(seasonal, actual)}
        sarima = self._sarima(origins)
        if sarima is not None:
            result["SARIMA"] = error_metrics(sarima, actual)
        return result

    def _sarima(self, origins):
        try:
            import warnings

            from statsmodels.tsa.statespace.sarimax import SARIMAX
        except ImportError:
            return None
        series = self.series.log() if self.log else self.series
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = SARIMAX(series[: self.train_end].numpy(), order=(1, 1, 1),
                          seasonal_order=(0, 1, 1, self.season)).fit(disp=False)  # fmt: skip
            forecasts = []
            for origin in origins.tolist():  # rolling origin, parameters fitted on training rows only
                state = fit.apply(series[:origin].numpy())
                forecasts.append(state.forecast(self.horizon))
        import numpy as np

        out = torch.from_numpy(np.asarray(forecasts, dtype=np.float64))
        return out.exp() if self.log else out

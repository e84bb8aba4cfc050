"""The timeseries task: loading, windows, baselines against hand computation, a short run."""

import pytest
import torch

from gatedrnn.cli import main
from gatedrnn.tasks.data import DataError
from gatedrnn.tasks.timeseries import TimeSeries, error_metrics


def write_csv(path, values, header="t,y"):
    path.write_text(header + "\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))
    return path


def test_error_metrics_by_hand():
    m = error_metrics(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 4.0]))
    assert m == {"rmse": 1.0, "mae": 1.0, "mape": pytest.approx((50 + 25) / 2)}


def test_windows_targets_and_baselines(tmp_path):
    series = [float(i % 4 + 10 * (i // 4)) for i in range(40)]  # a season of 4 on a trend
    task = TimeSeries(str(write_csv(tmp_path / "s.csv", series)), target="y", window=5, horizon=2, test_size=8,
                      season=4)  # fmt: skip
    x, y = task.split("test", 0)
    assert x.shape == (7, 5, 1) and y.shape == (7, 2)
    origin = int(task.origins["test"][0])
    assert origin == 32
    torch.testing.assert_close(task.actual(task.origins["test"])[0], torch.tensor(series[32:34], dtype=torch.float64))
    # normalization fitted on the 32 training rows only
    train = torch.tensor(series[:32], dtype=torch.float64)
    torch.testing.assert_close(task.mean[0], train.mean())
    b = task.baselines(sarima=False)
    actual = torch.tensor([series[o + h] for o in range(32, 39) for h in range(2)], dtype=torch.float64)
    persistence = torch.tensor([series[o - 1] for o in range(32, 39) for h in range(2)], dtype=torch.float64)
    seasonal = torch.tensor([series[o + h - 4] for o in range(32, 39) for h in range(2)], dtype=torch.float64)
    assert b["persistence"]["rmse"] == pytest.approx(error_metrics(persistence, actual)["rmse"])
    assert b["seasonal naive"]["rmse"] == pytest.approx(error_metrics(seasonal, actual)["rmse"])


def test_difference_and_log_round_trip(tmp_path):
    series = [100 * 1.05**i for i in range(60)]
    task = TimeSeries(str(write_csv(tmp_path / "s.csv", series)), target="y", window=6, test_size=12, log=True,
                      difference=True)  # fmt: skip
    _, targets = task.split("test", 0)
    back = task.to_units(targets, task.origins["test"])  # the true targets map back to the series
    torch.testing.assert_close(back, task.actual(task.origins["test"]), rtol=1e-5, atol=1e-3)


def test_airline_baselines_match_the_published_ones(shared_data):
    task = TimeSeries(str(shared_data("timeseries/airline.csv")), target="Passengers", test_size=48)
    b = task.baselines()
    assert b["persistence"]["rmse"] == pytest.approx(48.0, abs=0.05)
    assert b["seasonal naive"]["rmse"] == pytest.approx(41.9, abs=0.05)
    pytest.importorskip("statsmodels")
    assert b["SARIMA"]["rmse"] == pytest.approx(14.9, abs=0.05)  # README: on the raw series (13.8 with --log)


def test_short_run_beats_persistence(tmp_path, monkeypatch):
    monkeypatch.setattr(TimeSeries, "_sarima", lambda self, origins: None)  # seconds of fitting, not needed here
    t = torch.arange(200, dtype=torch.float64)
    series = (torch.sin(2 * torch.pi * t / 12) * 10 + 50).tolist()
    data = write_csv(tmp_path / "sine.csv", series)
    run = tmp_path / "run"
    assert main(["train", "--task", "timeseries", "--data", str(data), "--target", "y", "--window", "12",
                 "--cell", "gru", "--hidden-size", "16", "--steps", "300", "--lr", "1e-2", "--out", str(run),
                 "--no-report"]) == 0  # fmt: skip
    result = __import__("json").loads((run / "result.json").read_text())
    rmse, persistence = result["test"]["rmse"], result["baselines"]["persistence"]["rmse"]
    assert persistence == TimeSeries(str(data), target="y", window=12).baselines(sarima=False)["persistence"]["rmse"]
    assert rmse < 0.5 * persistence


def test_bad_csv_files(tmp_path, capsys):
    with pytest.raises(DataError, match="no column 'sales'; the columns are t, y"):
        TimeSeries(str(write_csv(tmp_path / "a.csv", range(30))), target="sales")
    (tmp_path / "b.csv").write_text("t,y\n0,1\n1,two\n")
    with pytest.raises(DataError, match=r"b.csv, line 3: column 'y' holds 'two', not a number"):
        TimeSeries(str(tmp_path / "b.csv"), target="y")
    with pytest.raises(DataError, match="needs --target"):
        TimeSeries(str(tmp_path / "b.csv"))
    assert main(["train", "--task", "timeseries", "--data", str(tmp_path / "b.csv"), "--target", "y",
                 "--out", str(tmp_path / "run")]) == 2  # fmt: skip
    assert "line 3" in capsys.readouterr().err


def test_preset_with_overrides(shared_data, tmp_path, monkeypatch):
    monkeypatch.setattr(TimeSeries, "_sarima", lambda self, origins: None)  # seconds of fitting, not needed here
    shared_data("timeseries/airline.csv")
    run = tmp_path / "run"
    assert main(["train", "--preset", "airline", "--cell", "gru", "--steps", "20", "--window", "12", "--out", str(run),
                 "--no-report"]) == 0  # fmt: skip
    config = __import__("json").loads((run / "config.json").read_text())
    assert config["steps"] == 20 and config["hidden_size"] == 16
    assert config["extra"]["window"] == 12 and config["extra"]["target"] == "Passengers" and config["extra"]["log"]


def test_time_axis_reads_dates_or_numbers_and_dates_what_follows():
    from datetime import datetime

    from gatedrnn.tasks.timeaxis import time_axis

    monthly = time_axis("Date", ["1960-10", "1960-11", "1960-12"])
    assert monthly.format == "%Y-%m" and [monthly.label(d) for d in monthly.extend(3)] == ["1961-01", "1961-02",
                                                                                            "1961-03"]  # fmt: skip
    quarterly = time_axis("q", ["2020-01-31", "2020-04-30"])  # not the same day of the month: 90 days apart
    assert quarterly.extend(1) == [datetime(2020, 7, 29)]  # a constant difference in days is kept
    weekly = time_axis("date", ["19580329", "19580405", "19580412"])  # co2.csv's dates
    assert [weekly.label(d) for d in weekly.extend(2)] == ["19580419", "19580426"]
    years = time_axis("YEAR", ["1700", "1701", "1702"])
    assert years.format is None and [years.label(v) for v in years.extend(2)] == ["1703", "1704"]
    assert time_axis("t", ["1", "2", "4"]).extend(1) is None  # irregular: not dated
    assert time_axis("when", ["2001-01", "2001-03", "2001-02"]) is None  # not increasing
    assert time_axis("name", ["a", "b"]) is None


def test_without_statsmodels_sarima_is_skipped_and_said_so(tmp_path, monkeypatch):
    import sys

    for name in ("statsmodels", "statsmodels.tsa.statespace.sarimax"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importing it fails
    task = TimeSeries(str(write_csv(tmp_path / "s.csv", [float(i % 5) for i in range(40)])), target="y", window=4)
    assert set(task.baselines()) == {"persistence", "seasonal naive"}
    assert any("the SARIMA baseline is skipped: statsmodels is not installed" in line for line in task.notes)

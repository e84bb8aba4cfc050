"""The timeseries task's report figure: forecasts against the actual series over the test
period, each model beside the baselines computed on the same rows, dated by the CSV's time
axis where it has one."""

from __future__ import annotations

from pathlib import Path

CONTEXT = 2  # test periods of the series drawn before the test rows


def forecast_against_actual(runs, path: Path) -> bool:
    """One panel per horizon shown (1 step ahead, and the last step when it is further)."""
    from gatedrnn.diagnostics.report import COLORS, _plt, _save

    plt = _plt()
    task = runs[0].task
    origins = task.origins["test"]
    steps = sorted({0, task.horizon - 1})
    x = task.axis.values if task.axis is not None else list(range(len(task.series)))
    start = max(0, task.train_end - CONTEXT * task.test_size)
    baselines = task.baseline_forecasts("test")
    forecasts = [run.task.forecasts(run.model, "test", next(run.model.parameters()).device)
                 for run in runs]  # each (n, horizon)  # fmt: skip
    fig, axes = plt.subplots(len(steps), 1, figsize=(11, 4 * len(steps)), squeeze=False, layout="constrained")
    for ax, k in zip(axes[:, 0], steps):
        rows = (origins + k).tolist()  # the rows the k-step-ahead forecasts are for
        when = [x[r] for r in rows]
        actual = task.series[rows]
        ax.plot(x[start : task.train_end], task.series[start : task.train_end].numpy(), color="0.6",
                label="actual (before the test rows)")  # fmt: skip
        ax.plot(when, actual.numpy(), color="black", linewidth=2, label="actual")
        for (name, values), style in zip(baselines.items(), (":", "--", "-.")):
            rmse = task.error_metrics(values[:, k], actual)["rmse"]
            ax.plot(when, values[:, k].numpy(), linestyle=style, color="0.35", label=f"{name} (RMSE {rmse:.4g})")
        for run, values in zip(runs, forecasts):
            rmse = task.error_metrics(values[:, k], actual)["rmse"]
            ax.plot(when, values[:, k].numpy(), color=COLORS.get(run.cell), marker="o", markersize=3,
                    label=f"{run.label} (RMSE {rmse:.4g})")  # fmt: skip
        ax.axvspan(when[0], when[-1], color="0.93", zorder=0)
        ax.set_title(f"{task.columns[0]}: forecasts {k + 1} step{'s' if k else ''} ahead over the test rows")
        ax.set_ylabel(task.columns[0])
        ax.set_xlabel(task.axis.name if task.axis is not None else "row of the CSV")
        ax.legend(fontsize=8)
        if task.axis is not None and task.axis.format is not None:  # dates: slanted, so that they fit
            plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    _save(fig, path)
    return True


FIGURES = [
    ("forecast.png", forecast_against_actual, "The test rows (shaded): the actual series (black; grey before "
     "them), each model's forecasts, each made from the true values before it (rolling origin), and the "
     "baselines on the same rows: persistence (the last value), seasonal naive (the value one season "
     "back) and SARIMA(1,1,1)(0,1,1) when statsmodels is installed, its parameters fitted on the training "
     "rows. The legend gives each line's RMSE."),
]  # fmt: skip

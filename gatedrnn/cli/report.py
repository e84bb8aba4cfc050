"""``gatedrnn report``: the HTML report of one or several runs, side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from gatedrnn.cli.errors import UsageError, run_errors
from gatedrnn.cli.run_options import add_run_options

EXAMPLES = """examples:
  gatedrnn report runs/adding-lstm
  gatedrnn report runs/adding-rnn runs/adding-lstm runs/adding-gru --out runs/adding-compare
"""


def add_parser(sub):
    p = sub.add_parser("report", help="write an HTML report of one or several runs", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="folders gatedrnn train wrote")
    p.add_argument("--out", type=Path, help="report folder (default: the run folder, when there is one)")
    add_run_options(p, data=True, runs="runs")
    p.set_defaults(run=run)
    return p


def report_runs(run_dirs, out: Path, task=None, trust_edited: bool = False, data=None) -> Path:
    """Writes the report of the runs in ``run_dirs`` (all of one task) into ``out``; returns
    its ``report.html``. ``task``: the runs' task, where it is one of your own;
    ``trust_edited``: accept run files edited since the checkpoint; ``data``: the data the
    user gives (see :func:`gatedrnn.runs.data_to_read`)."""
    import copy

    from gatedrnn import checkpoint, runs
    from gatedrnn.diagnostics.report import RunView, write_report

    views, tasks = [], {}
    for run_dir in run_dirs:
        config = runs.load_config(run_dir, trust_edited)
        config.data = runs.data_to_read(config, run_dir, data)
        # the data read once; the model at initialization, for gradient flow
        built, initial = runs.build(config, run_dir, task)
        tasks.setdefault((config.task, config.length), f"{run_dir} is {built.describe(config.data)}")
        model = copy.deepcopy(initial)
        state = checkpoint.load_model(run_dir, model, expect=runs.identity(config))
        result_path = Path(run_dir) / runs.RESULT
        result = runs.read_json(result_path) if result_path.exists() else {}
        summary = {"run": str(run_dir), "cell": config.cell, "step": state["step"],
                   **{f"test {k}": f"{v:.4f}" for k, v in result.get("test", {}).items()},
                   "solved at": state.get("solved_at") or "no", "status": result.get("status", "-"),
                   "wall time": f"{result['seconds'] / 60:.1f} min" if "seconds" in result else "-"}  # fmt: skip
        views.append(RunView(f"{config.cell} ({Path(run_dir).name})", config.cell, built, model,
                             runs.read_log(Path(run_dir) / runs.METRICS), config.seed, initial, summary,
                             config.data))  # fmt: skip
    if len(tasks) > 1:
        raise UsageError(f"{' and '.join(tasks.values())}: a report compares runs of one task at one length")
    first = views[0]
    return write_report(out, views, f"gatedrnn report: {first.task.describe(first.data)}",
                        " ".join(first.task.introduction()))


@run_errors
def run(args) -> int:
    if args.out is None and len(args.run_dirs) > 1:
        raise UsageError("several runs need --out for their shared report")
    print(report_runs(args.run_dirs, args.out or args.run_dirs[0], args.task, args.trust_edited, args.data))
    return 0

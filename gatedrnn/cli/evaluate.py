"""``gatedrnn evaluate``: reloads a run's checkpoint and reports its metric on the test split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gatedrnn.cli.errors import run_errors
from gatedrnn.cli.run_options import add_run_options

EXAMPLES = """examples:
  gatedrnn evaluate runs/adding-lstm
  gatedrnn evaluate runs/adding-lstm --json
"""


def add_parser(sub):
    p = sub.add_parser("evaluate", help="report a trained run's test metric", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a folder gatedrnn train wrote")
    p.add_argument("--split", choices=["test", "valid"], default="test")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_run_options(p, data=True)
    p.set_defaults(run=run)
    return p


@run_errors
def run(args) -> int:
    from gatedrnn import checkpoint, runs

    config = runs.load_config(args.run_dir, args.trust_edited)
    config.data = runs.data_to_read(config, args.run_dir, args.data)
    task, model = runs.build(config, args.run_dir, args.task)  # a text run keeps its vocab.json
    state = checkpoint.load_model(args.run_dir, model, expect=runs.identity(config))  # the same task, cell and data
    with config.mixed_precision(model):  # as the run was trained and evaluated (its precision)
        metrics = task.evaluate(model, args.split, config.seed, config.device)
    baselines = task.baseline_results(args.split)  # on the same rows, beside the model's numbers
    if args.json:
        print(json.dumps({"step": state["step"], "split": args.split, **metrics,
                          **({"baselines": baselines} if baselines else {})}))  # fmt: skip
    else:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        solved = " (solved)" if task.solved(metrics) else ""
        length = f" (T={task.length})" if getattr(task, "length", None) else ""  # the synthetic tasks' T only
        print(f"{config.cell} on {task.name}{length} at step {state['step']}: {args.split} {shown}{solved}")
        if baselines:
            print(baselines_line(baselines, args.split, task.metric))
    return 0


def baselines_line(baselines: dict, split: str, metric: str) -> str:
    """One line: each named baseline's ``metric`` on the split, e.g. the forecasters' persistence."""
    return f"baselines on the same {split} rows, {metric}: " + ", ".join(
        f"{name} {values[metric]:.4f}" for name, values in baselines.items())

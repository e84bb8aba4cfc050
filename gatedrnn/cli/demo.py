"""``gatedrnn demo``: the seed's experiment. A vanilla RNN, an LSTM and a GRU of the same
hidden size learn the adding problem at a length where the RNN cannot; the report shows why
(its gradient vanishes across time, the gates keep theirs)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from gatedrnn.cli.errors import UsageError, positive_int, run_errors
from gatedrnn.tasks.presets import PRESETS

EXAMPLES = """examples:
  gatedrnn demo                                   # ~3 minutes on 2 CPU cores
  gatedrnn demo --cells lstm gru --length 200 --steps 3000
  gatedrnn demo --seed 1 --out runs/demo-seed1
"""

SETTINGS = PRESETS["demo"]  # the task and its settings, where the vanilla RNN fails and the gated cells do not
CELLS = ("rnn", "lstm", "gru", "mgu", "mingru", "minlstm")  # the adding task's cells (a test checks they agree)
LENGTH, STEPS, HIDDEN = SETTINGS["length"], SETTINGS["steps"], SETTINGS["hidden_size"]


def add_parser(sub):
    p = sub.add_parser("demo", help="RNN vs LSTM vs GRU on the adding problem, with a report (~3 min)",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--cells", nargs="+", choices=list(CELLS), default=["rnn", "lstm", "gru"])
    p.add_argument("--length", type=positive_int, default=LENGTH, help=f"sequence length T (default {LENGTH})")
    p.add_argument("--steps", type=positive_int, default=STEPS, help=f"training steps per cell (default {STEPS})")
    p.add_argument("--hidden-size", type=positive_int, default=HIDDEN, help=f"hidden units (default {HIDDEN})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", type=Path, help="report folder (default runs/demo, or runs/demo-2, -3, ... when that "
                   "holds an earlier demo)")
    p.add_argument("--force", action="store_true", help="train into --out even if it holds an earlier run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)
    return p


def _out_folder(out: Path | None, force: bool) -> Path:
    """The demo's folder: never one holding an earlier run, unless --force says so."""
    def used(path: Path) -> bool:
        return path.exists() and (not path.is_dir() or any(path.iterdir()))

    if out is not None:
        if used(out) and not force:
            raise UsageError(f"{out} holds an earlier run; pass --force to train over it, or choose another --out")
        return out
    out, number = Path("runs/demo"), 1
    while used(out) and not force:
        number += 1
        out = Path(f"runs/demo-{number}")
    if number > 1:
        print(f"runs/demo holds an earlier demo: this one goes to {out} (--force reuses runs/demo)")
    return out


@run_errors
def run(args) -> int:
    import copy

    from gatedrnn import checkpoint
    from gatedrnn.config import TrainConfig
    from gatedrnn.diagnostics.report import RunView, write_report
    from gatedrnn.runs import build
    from gatedrnn.train import train

    if args.length < 2:
        raise UsageError(f"--length must be at least 2, got {args.length}")
    args.out = _out_folder(args.out, args.force)
    settings = {**SETTINGS, "length": args.length, "hidden_size": args.hidden_size, "steps": args.steps,
                "seed": args.seed}  # fmt: skip
    task = build(TrainConfig(**settings))[0]
    print("\n".join(task.introduction()) + "\n")
    metric = task.metric.upper() if len(task.metric) <= 4 else task.metric  # MSE, RMSE; accuracy
    rows, views = [], []
    for number, cell in enumerate(args.cells, start=1):
        config = TrainConfig(**settings, cell=cell)
        print(f"[{number}/{len(args.cells)}] training the {cell.upper()} ({config.steps} steps)", flush=True)
        task, initial = build(config)
        initial = copy.deepcopy(initial)
        started = time.perf_counter()
        result = train(config, args.out / cell, progress=not args.quiet)
        seconds = time.perf_counter() - started
        _, model = build(config)
        checkpoint.load_model(args.out / cell, model)
        row = {"cell": cell.upper(), "parameters": sum(p.numel() for p in model.parameters()),
               f"test {metric}": f"{result.test[task.metric]:.4f}", "baseline": f"{task.baseline:.3f}",
               "solved": "yes" if task.solved(result.test) else "no", "steps to solve": result.solved_at or "-",
               "time (s)": f"{seconds:.0f}"}  # fmt: skip
        rows.append(row)
        views.append(RunView(cell.upper(), cell, task, model, result.history, args.seed, initial, row))
        if result.status == "nan":
            print(f"  {cell}: {result.message}")
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in rows[0]}
    print("\n" + "  ".join(k.ljust(widths[k]) for k in rows[0]))
    for row in rows:
        print("  ".join(str(v).ljust(widths[k]) for k, v in row.items()))
    names = [cell.upper() for cell in args.cells]
    shown = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    path = write_report(args.out, views, f"gatedrnn demo: {task.describe()}",  # the task's introduction first
                        f"Here: {shown}, each with {args.hidden_size} hidden units, trained with the same "
                        "settings and seed. The figures show why a gated cell learns the task where a vanilla RNN "
                        "does not.")  # fmt: skip
    print(f"\nreport: {path}")
    return 0

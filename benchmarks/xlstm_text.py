"""The xLSTM stack against our LSTM on tiny Shakespeare, same parameter count, same wall-clock
budget (issue 28). Two settings (``--preset``):

- ``shakespeare-quick`` (the default): that preset's settings (characters, BPTT 64, batch 32,
  Adam 4e-3, no dropout, constant learning rate) run for ``--minutes`` each, the LSTM at hidden
  256. Long budgets overfit: the last weights are tested.
- ``shakespeare``, our best LSTM preset (hidden 512, BPTT 100, dropout 0.1, a cosine schedule,
  the best validation's weights kept): its cosine schedule is fitted to the budget for each
  model, so a model three times slower per step is not cut off at a third of its schedule with
  the learning rate still high. Each model's time per step and per validation pass is measured
  first (:func:`probe`: on the training loop itself and on validation passes), then it trains for as
  many steps as 97% of the budget holds after its evaluations (10, or fewer where 10 would take
  over a tenth of the budget; 2 at least), stopped by ``--max-minutes``
  at the budget if slower than measured.

The xLSTM stack (two blocks, the second an sLSTM block: ``xLSTM[1:1]``) runs at the hidden size
whose parameter count is nearest the LSTM's. Appends a row per run (validation and test loss,
steps, parameters, the command) to the JSON file.

    python benchmarks/xlstm_text.py --minutes 5
    python benchmarks/xlstm_text.py --preset shakespeare --minutes 30
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import os
import shlex
import shutil
import statistics
import time
from pathlib import Path

import torch
from tasks import append_row

from gatedrnn.models import SequenceModel
from gatedrnn.presets import resolve
from gatedrnn.runs import build
from gatedrnn.train import TrainConfig, evaluate, train

VOCAB = 65  # tiny Shakespeare's characters


def best_validation(run_dir: Path) -> dict | None:
    """The run's evaluation with the lowest validation loss (its step, seconds, loss and bits
    per character), from its ``metrics.jsonl``; None without one. The quick preset has no
    dropout and a constant learning rate, so a long budget overfits: the test loss of the last
    weights is then worse than this."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return None
    evaluations = [row for row in map(json.loads, lines) if row.get("split") == "valid"]
    if not evaluations:
        return None
    best = min(evaluations, key=lambda row: row["loss"])
    return {key: best[key] for key in ("step", "seconds", "loss", "bpc")}


def annotate(path: Path) -> None:
    """Adds ``best_valid`` to the rows of ``path`` that lack it (written before it was recorded),
    from the run folders their commands name where those still exist, and each row's
    ``xlstm_text.py`` command to the file's commands."""
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(path.read_text())
        for row in results["rows"]:
            run_dir = Path(shlex.split(row["command"])[-1])  # (its last argument: --out RUN_DIR)
            if "best_valid" not in row:
                row["best_valid"] = best_validation(run_dir)
            preset = row.get("preset", "shakespeare-quick")
            made_by = f"python benchmarks/xlstm_text.py --preset {preset} --minutes {row['minutes']:g} --out {run_dir.parent}"
            if made_by not in results["command"]:
                results["command"].append(made_by)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, path)


def probe(config: TrainConfig, probe_dir: Path) -> tuple[float, float]:
    """Seconds per training step and per evaluation (a validation pass) of ``config``.

    The step, on the training loop itself: 40 steps evaluated every 10; the span from the
    evaluation at step 10 to the one at 40, less its three evaluations, over 30 steps (the
    start-up and the first steps, slower, left out). The evaluation: the median of three
    validation passes of the model after a first one."""
    marks = {}
    short = dataclasses.replace(config, steps=40, eval_every=10, max_minutes=0, patience=0)
    shutil.rmtree(probe_dir, ignore_errors=True)
    mark = lambda step, *_: marks.setdefault(step, time.perf_counter())
    train(short, probe_dir, progress=False, on_eval=mark)
    shutil.rmtree(probe_dir, ignore_errors=True)
    task, model = build(config, None, task=config.task)
    passes = []
    for _ in range(4):
        started = time.perf_counter()
        evaluate(task, model, "valid", config.seed)
        passes.append(time.perf_counter() - started)
    eval_s = statistics.median(passes[1:])
    return (marks[40] - marks[10] - 3 * eval_s) / 30, eval_s


def parameters(cell: str, hidden: int, options: dict) -> int:
    model = SequenceModel(cell, hidden, hidden, VOCAB, num_layers=2 if cell == "xlstm" else 1, vocab_size=VOCAB,
                          cell_options=options)  # fmt: skip
    return sum(p.numel() for p in model.parameters())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["shakespeare-quick", "shakespeare"], default="shakespeare-quick")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/xlstm-text")
    parser.add_argument("--json", default="benchmarks/results/xlstm_shakespeare.json")
    parser.add_argument("--annotate", action="store_true",
                        help="add the best validation to rows written without it, from their run folders, and stop")
    args = parser.parse_args(argv)
    if args.annotate:
        annotate(Path(args.json))
        return
    torch.set_num_threads(args.threads)
    lstm_hidden = resolve(args.preset)["hidden_size"]
    target = parameters("lstm", lstm_hidden, {})
    xlstm_options = {"slstm_at": (1,), "num_heads": 4}
    sizes = range(128, 2 * lstm_hidden + 1, 4)
    hidden = min(sizes, key=lambda h: abs(parameters("xlstm", h, xlstm_options) - target))
    runs = [("lstm", lstm_hidden, 1, "", {}),
            ("xlstm", hidden, 2, " --layers 2 --slstm-at 1 --num-heads 4", xlstm_options)]  # fmt: skip
    for cell, size, layers, flags, options in runs:
        preset = resolve(args.preset)
        preset.update(hidden_size=size, layers=layers, max_minutes=args.minutes)
        extra = dict(preset.get("extra", {}))
        if cell == "xlstm":
            extra.update(num_heads=4, slstm_at="1")
        preset["extra"] = extra
        run_dir = Path(args.out) / f"{cell}-{args.preset}-{args.minutes:g}min"
        step_s = eval_s = None
        if args.preset == "shakespeare-quick":
            preset.update(steps=1_000_000, eval_every=250)
        else:  # the schedule fitted to the budget: the step time measured on the training loop itself
            step_s, eval_s = probe(TrainConfig(**preset, cell=cell), Path(args.out) / f"{cell}-probe")
            budget = 60 * args.minutes
            evaluations = min(10, max(2, int(0.1 * budget / eval_s)))  # at most 10% of it where it can
            steps = max(evaluations, int((0.97 * budget - evaluations * eval_s) / step_s))
            preset.update(steps=steps, eval_every=max(1, steps // evaluations))
        started = time.perf_counter()
        result = train(TrainConfig(**preset, cell=cell), run_dir, progress=False)
        wall = time.perf_counter() - started
        command = (f"gatedrnn train --preset {args.preset} --cell {cell} --hidden-size {size}{flags} "
                   f"--steps {preset['steps']} --eval-every {preset['eval_every']} "
                   f"--max-minutes {args.minutes:g} --out {run_dir}")  # fmt: skip
        row = {"cell": cell, "preset": args.preset, "hidden_size": size, "params": parameters(cell, size, options),
               "minutes": args.minutes, "test": result.test, "best_valid": best_validation(run_dir),
               "weights": "best validation" if preset.get("patience") else "last", "step": result.step,
               "planned_steps": preset["steps"], "step_s": step_s, "eval_s": eval_s, "status": result.status, "wall_s": wall,
               "threads": args.threads, "command": command}  # fmt: skip
        print(row, flush=True)
        append_row(Path(args.json), row)

if __name__ == "__main__":
    main()

"""The xLSTM stack against our LSTM on tiny Shakespeare, same parameter count, same wall-clock
budget (issue 28): the ``shakespeare-quick`` preset's settings (characters, BPTT 64, batch 32,
lr 4e-3) run for ``--minutes`` each, the LSTM at hidden 256, the xLSTM stack (two blocks, the
second an sLSTM block: ``xLSTM[1:1]``) at the hidden size whose parameter count is nearest the
LSTM's. Appends a row per run (validation and test loss, steps, parameters, the command) to the
JSON file.

    python benchmarks/xlstm_text.py --minutes 5
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import time
from pathlib import Path

import torch
from tasks import append_row

from gatedrnn.models import SequenceModel
from gatedrnn.presets import resolve
from gatedrnn.train import TrainConfig, train

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
            made_by = f"python benchmarks/xlstm_text.py --minutes {row['minutes']:g} --out {run_dir.parent}"
            if made_by not in results["command"]:
                results["command"].append(made_by)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, path)


def parameters(cell: str, hidden: int, options: dict) -> int:
    model = SequenceModel(cell, hidden, hidden, VOCAB, num_layers=2 if cell == "xlstm" else 1, vocab_size=VOCAB,
                          cell_options=options)  # fmt: skip
    return sum(p.numel() for p in model.parameters())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    target = parameters("lstm", 256, {})
    xlstm_options = {"slstm_at": (1,), "num_heads": 4}
    hidden = min(range(128, 321, 4), key=lambda h: abs(parameters("xlstm", h, xlstm_options) - target))
    runs = [("lstm", 256, 1, "", {}), ("xlstm", hidden, 2, " --layers 2 --slstm-at 1 --num-heads 4", xlstm_options)]
    for cell, size, layers, flags, options in runs:
        preset = resolve("shakespeare-quick")
        preset.update(steps=1_000_000, eval_every=250, max_minutes=args.minutes, hidden_size=size, layers=layers)
        extra = dict(preset.get("extra", {}))
        if cell == "xlstm":
            extra.update(num_heads=4, slstm_at="1")
        preset["extra"] = extra
        run_dir = Path(args.out) / f"{cell}-{args.minutes:g}min"
        started = time.perf_counter()
        result = train(TrainConfig(**preset, cell=cell), run_dir, progress=False)
        wall = time.perf_counter() - started
        command = (f"gatedrnn train --preset shakespeare-quick --cell {cell} --hidden-size {size}{flags} "
                   f"--steps 1000000 --eval-every 250 --max-minutes {args.minutes:g} --out {run_dir}")  # fmt: skip
        row = {"cell": cell, "hidden_size": size, "params": parameters(cell, size, options), "minutes": args.minutes,
               "test": result.test, "best_valid": best_validation(run_dir), "step": result.step,
               "status": result.status, "wall_s": wall,
               "threads": args.threads, "command": command}  # fmt: skip
        print(row, flush=True)
        append_row(Path(args.json), row)


if __name__ == "__main__":
    main()

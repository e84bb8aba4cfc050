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
import time
from pathlib import Path

import torch
from tasks import append_row

from gatedrnn.models import SequenceModel
from gatedrnn.presets import resolve
from gatedrnn.train import TrainConfig, train

VOCAB = 65  # tiny Shakespeare's characters


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
    args = parser.parse_args(argv)
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
               "test": result.test, "step": result.step, "status": result.status, "wall_s": wall,
               "threads": args.threads, "command": command}  # fmt: skip
        print(row, flush=True)
        append_row(Path(args.json), row)


if __name__ == "__main__":
    main()

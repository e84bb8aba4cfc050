"""The results table: each preset trained with RNN, LSTM and GRU, next to its published anchor.

    python benchmarks/tasks.py --presets shakespeare-quick airline --cells rnn lstm gru
    python benchmarks/tasks.py --presets babi-1k --babi 1 2 6 15 16

Prints a markdown table (test metric per cell, the anchor, wall time of the whole run on this
machine, the command that reproduces a row) and appends the rows to a JSON file.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch

from gatedrnn.presets import DATA, PRESETS
from gatedrnn.train import TrainConfig, train

ANCHORS = {
    "adding-200": "solved: test MSE < 0.01 (Le et al. 2015)",
    "copy-100": f"memoryless baseline 10 ln 8 / 120 = {10 * 2.0794 / 120:.3f} (Arjovsky et al. 2016)",
    "shakespeare-quick": "nanoGPT CPU quick-start: val loss 1.886 in 66 s on this machine",
    "shakespeare": "target val loss <= 1.55 in 30 min",
    "ptb-small": "test perplexity 114.5 (Zaremba et al. 2014, small)",
    "ptb-medium": "test perplexity 82.7 (Zaremba et al. 2014, medium)",
    "jsb": "NLL RNN 8.91 / LSTM 8.45 / GRU 8.43 (Bai et al. 2018)",
    "nottingham": "NLL RNN 4.05 / LSTM 3.29 / GRU 3.46 (Bai et al. 2018)",
    "musedata": "no anchor quoted here",
    "piano-midi": "no anchor quoted here",
    "babi-1k": "Weston et al. 2015 LSTM / Keras babi_rnn accuracy",
    "airline": "persistence RMSE 48.0, seasonal naive 41.9",
    "sunspots": "persistence and seasonal naive, computed on the same split",
    "digits": "no published anchor on this subset",
    "digits-permuted": "no published anchor on this subset",
    "mnist-rows": "no published anchor on this subset",
}
BABI_FILES = {int(p.split("_")[0][2:]): p for p in os.listdir(Path(DATA) / "babi-en10k") if p.endswith("_train.txt")} \
    if (Path(DATA) / "babi-en10k").exists() else {}  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", required=True, choices=list(PRESETS))
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    parser.add_argument("--babi", nargs="+", type=int, default=[1], help="bAbI task numbers for babi presets")
    parser.add_argument("--steps", type=int, help="override the preset's steps")
    parser.add_argument("--out", default="runs/tasks")
    parser.add_argument("--json", default="benchmarks/results/tasks.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    rows = []
    print("| preset | cell | test metrics | anchor | wall time (s) | command |")
    print("|---|---|---|---|---|---|")
    for name in args.presets:
        variants = [(name, None)]
        if name.startswith("babi"):
            variants = [(f"{name} qa{n}", BABI_FILES[n]) for n in args.babi if n in BABI_FILES]
        for label, babi_file in variants:
            for cell in args.cells:
                preset = copy.deepcopy(PRESETS[name])
                if babi_file:
                    preset["data"] = f"{DATA}/babi-en10k/{babi_file}"
                if args.steps:
                    preset["steps"] = args.steps
                config = TrainConfig(**preset, cell=cell)
                run_dir = Path(args.out) / f"{label.replace(' ', '-')}-{cell}"
                started = time.perf_counter()
                result = train(config, run_dir, progress=False)
                wall = time.perf_counter() - started
                command = f"gatedrnn train --preset {name} --cell {cell}"
                if babi_file:
                    command += f" --data {preset['data']}"
                if args.steps:
                    command += f" --steps {args.steps}"
                command += f" --out {run_dir}"
                shown = ", ".join(f"{k} {v:.4g}" for k, v in result.test.items())
                row = {"preset": label, "cell": cell, "test": result.test, "step": result.step, "status": result.status,
                       "wall_s": wall, "anchor": ANCHORS.get(name, ""), "command": command}  # fmt: skip
                rows.append(row)
                print(f"| {label} | {cell} | {shown} | {row['anchor']} | {wall:.0f} | `{command}` |", flush=True)
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        existing = json.loads(Path(args.json).read_text()) if Path(args.json).exists() else []
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(existing + rows, f, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()

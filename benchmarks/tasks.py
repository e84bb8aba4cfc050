"""The results table: each preset trained with RNN, LSTM and GRU, next to its published anchor.

    python benchmarks/tasks.py --presets shakespeare-quick airline --cells rnn lstm gru
    python benchmarks/tasks.py --presets babi-1k babi-10k --babi all

Prints a markdown table (test metric per cell, the anchor, wall time of the whole run on this
machine, the command that reproduces a row) and appends each row to a JSON file as it lands.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import time
from pathlib import Path

import torch

from gatedrnn.presets import PRESETS, data_dir, resolve
from gatedrnn.train import TrainConfig, train
from results_io import command, machine, stamped

ANCHORS = {
    "adding-200": "solved: test MSE < 0.01 (Le et al. 2015)",
    "copy-100": f"memoryless baseline 10 ln 8 / 120 = {10 * 2.0794 / 120:.3f} (Arjovsky et al. 2016)",
    "shakespeare-quick": "nanoGPT CPU quick-start: val loss 1.886 in 66 s on this machine",
    "shakespeare": "target val loss <= 1.55 in 30 min",
    "ptb-small": "test perplexity 114.5 (Zaremba et al. 2014, small)",
    "ptb-small-tied": "test perplexity 114.5 (Zaremba et al. 2014, small)",
    "ptb-medium": "test perplexity 82.7 (Zaremba et al. 2014, medium)",
    "jsb": "NLL RNN 8.91 / LSTM 8.45 / GRU 8.43 (Bai et al. 2018)",
    "nottingham": "NLL RNN 4.05 / LSTM 3.29 / GRU 3.46 (Bai et al. 2018)",
    "musedata": "no anchor quoted here",
    "piano-midi": "no anchor quoted here",
    "babi-1k": "Weston et al. 2015 LSTM / Keras babi_rnn accuracy",
    "babi-10k": "no LSTM anchor quoted for 10k",
    "airline": "persistence RMSE 48.0, seasonal naive 41.9",
    "sunspots": "persistence and seasonal naive, computed on the same split",
    "digits": "no published anchor on this subset",
    "digits-pixel": "no published anchor on this subset",
    "digits-permuted": "no published anchor on this subset",
    "mnist-rows": "no published anchor on this subset",
    "mnist-rows-permuted": "no published anchor on this subset",
    "mnist-pixel": "no published anchor on this 5k subset",
    "mnist-pixel-permuted": "no published anchor on this 5k subset",
}
# bAbI 1k accuracy (%): the LSTM of Weston et al. 2015 (Table 3) and Keras' babi_rnn example (its docstring)
WESTON_LSTM = {1: 50, 2: 20, 3: 20, 4: 61, 5: 70, 6: 48, 7: 49, 8: 45, 9: 64, 10: 44, 11: 72, 12: 74, 13: 94,
               14: 27, 15: 21, 16: 23, 17: 51, 18: 52, 19: 8, 20: 91}  # fmt: skip
KERAS_BABI_RNN = {1: 100.0, 2: 50.0, 3: 20.5, 4: 62.9, 5: 61.9, 6: 50.7, 7: 78.9, 8: 77.2, 9: 64.0, 10: 47.7,
                  11: 74.9, 12: 76.4, 13: 94.4, 14: 34.8, 15: 32.4, 16: 50.6, 17: 49.1, 18: 90.8, 19: 9.0,
                  20: 90.7}  # fmt: skip
BABI = data_dir() / "babi-en10k"
BABI_FILES = {int(p.split("_")[0][2:]): p for p in os.listdir(BABI) if p.endswith("_train.txt")} \
    if BABI.exists() else {}  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", required=True, choices=list(PRESETS))
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    parser.add_argument("--babi", nargs="+", default=["1"], help="bAbI task numbers for babi presets, or 'all'")
    parser.add_argument("--steps", type=int, help="override the preset's steps")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2: the whole machine)")
    parser.add_argument("--out", default="runs/tasks")
    parser.add_argument("--json", default="benchmarks/results/tasks.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    print("| preset | cell | test metrics | anchor | wall time (s) | command |")
    print("|---|---|---|---|---|---|")
    for name in args.presets:
        variants = [(name, None)]
        if name.startswith("babi"):
            numbers = sorted(BABI_FILES) if args.babi == ["all"] else [int(n) for n in args.babi]
            variants = [(f"{name} qa{n}", BABI_FILES[n]) for n in numbers if n in BABI_FILES]
        for label, babi_file in variants:
            for cell in args.cells:
                preset = resolve(name)
                if babi_file:
                    preset["data"] = str(BABI / babi_file)
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
                anchor = ANCHORS.get(name, "")
                if name == "babi-1k":
                    n = int(label.split("qa")[-1])
                    anchor = f"Weston LSTM {WESTON_LSTM[n]}% / Keras babi_rnn {KERAS_BABI_RNN[n]}%"
                row = {"preset": label, "cell": cell, "test": result.test, "step": result.step, "status": result.status,
                       "wall_s": wall, "threads": args.threads, "anchor": anchor, "command": command}  # fmt: skip
                print(f"| {label} | {cell} | {shown} | {anchor} | {wall:.0f} | `{command}` |", flush=True)
                if args.json:
                    append_row(Path(args.json), row)


def append_row(path: Path, row: dict) -> None:
    """Adds one row, with this process's machine, to the "rows" of the JSON file at ``path``,
    atomically (a killed run keeps every earlier row) and under a lock (runs side by side on
    separate cores each add theirs). A new file gets this command and machine as its own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(path.read_text()) if path.exists() else stamped([])
        if command() not in results["command"]:  # the file lists every command that added its rows
            results["command"].append(command())
        results["rows"].append({**row, "machine": machine()})
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, path)


if __name__ == "__main__":
    main()

"""Does training in mixed bfloat16 learn as float32 does (issue 30)? The adding problem at
T = 200 (the ``adding-200`` preset: until solved, test MSE < 0.01, or 4,000 steps) and tiny
Shakespeare (the ``shakespeare-quick`` preset: 1,000 steps, test loss in nats per character),
each with the LSTM and the GRU, in ``--precision float32`` and ``--precision bfloat16``, for
each seed. The two precisions of a (task, cell, seed) run one after the other, so that a
change in the machine's load falls on both.

    python benchmarks/bf16_learning.py                       # everything: 2 tasks x 2 cells x 2 precisions x 3 seeds
    python benchmarks/bf16_learning.py --tasks adding --cells gru --seeds 0
    python benchmarks/bf16_learning.py --steps-scale 0.01 --seeds 0 --json ''   # a smoke run of the code path

Prints a markdown table (task, cell, precision, the test metric of each seed, their mean and
standard deviation, the adding runs' solving steps, the mean wall time of a run) and writes
every run to the JSON file (``--json``; rewritten after each run, so a killed run keeps the
runs before it). ``--steps-scale`` shrinks the presets' steps for a smoke run only: its
numbers say nothing about learning.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from results_io import write_json

from gatedrnn.presets import resolve
from gatedrnn.tasks import task_class
from gatedrnn.train import TrainConfig, train

TASKS = {"adding": "adding-200", "shakespeare": "shakespeare-quick"}  # --tasks name: the preset it trains
PRECISIONS = ("float32", "bfloat16")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2: the whole machine)")
    parser.add_argument("--steps-scale", type=float, default=1.0,
                        help="multiply the presets' steps by this; smoke runs only")
    parser.add_argument("--data-dir", type=Path, help="where tiny Shakespeare lies (default: the presets' data folder)")
    parser.add_argument("--out", default="runs/bf16-learning")
    parser.add_argument("--json", default="benchmarks/results/bf16_learning.json", help="'' writes none")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = []
    for name in args.tasks:
        for cell in args.cells:
            for seed in args.seeds:
                for precision in PRECISIONS:  # side by side: the machine's load falls on both
                    rows.append(run(name, cell, seed, precision, args))
                    if args.json:
                        write_json(args.json, {"steps_scale": args.steps_scale, "threads": args.threads,
                                               "rows": rows})  # fmt: skip
    print(table(rows))


def run(name: str, cell: str, seed: int, precision: str, args) -> dict:
    """One training run of the preset of task ``name``; its row."""
    preset = resolve(TASKS[name], args.data_dir)
    steps = max(1, round(preset["steps"] * args.steps_scale))
    eval_every = min(preset.get("eval_every", 100), steps)  # a smoke run evaluates at its end, as the preset would
    config = TrainConfig(**{**preset, "steps": steps, "eval_every": eval_every}, cell=cell, seed=seed,
                         precision=precision, threads=args.threads)  # fmt: skip
    run_dir = Path(args.out) / f"{name}-{cell}-{precision}-seed{seed}"
    started = time.perf_counter()
    result = train(config, run_dir, progress=False)
    wall = time.perf_counter() - started
    metric = task_class(config.task).metric
    scaled = f" --steps {steps} --eval-every {eval_every}" if args.steps_scale != 1 else ""
    command = (f"gatedrnn train --preset {TASKS[name]} --cell {cell} --seed {seed} --precision {precision} "
               f"--threads {args.threads}{scaled} --out {run_dir}")  # fmt: skip
    row = {"task": name, "preset": TASKS[name], "cell": cell, "precision": precision, "seed": seed,
           "metric": metric, "value": result.test[metric], "test": result.test, "step": result.step,
           "solved_at": result.solved_at, "status": result.status, "wall_s": wall, "command": command}  # fmt: skip
    print(f"{name} {cell} {precision} seed {seed}: test {metric} {row['value']:.4f}, step {result.step} "
          f"({result.status}), {wall:.0f} s", flush=True)  # fmt: skip
    return row


def table(rows: list[dict]) -> str:
    """The markdown table of ``rows``: one line per (task, cell, precision)."""
    lines = ["| task | cell | precision | test metric by seed | mean ± sd | solved at (steps) | wall time per run (s) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    groups: dict[tuple, list] = {}
    for row in rows:
        groups.setdefault((row["task"], row["cell"], row["precision"]), []).append(row)
    for (name, cell, precision), group in groups.items():
        values = [r["value"] for r in group]
        by_seed = ", ".join(f"{r['seed']}: {r['value']:.4f}" for r in group)
        sd = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
        solved = ", ".join("-" if r["solved_at"] is None else str(r["solved_at"]) for r in group)
        wall = statistics.mean(r["wall_s"] for r in group)
        lines.append(f"| {name} | {cell} | {precision} | {group[0]['metric']} {by_seed} | "
                     f"{statistics.mean(values):.4f}{sd} | {solved} | {wall:.0f} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()

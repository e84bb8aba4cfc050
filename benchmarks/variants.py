"""Do the variants learn? Every LSTM and GRU variant beside the plain cells, trained with the
same budget on the long-memory tasks: the adding problem (T = 200) and the copy task (T = 100),
and on one application, JSB Chorales (the `jsb` preset: next-step NLL on piano rolls), seeds
as given. Each run stops when solved or out of steps; the table gives the test metric,
the steps to solve and the wall time, and what each row tests:

- Greff et al. 2017 ("LSTM: A Search Space Odyssey"): peepholes and coupled gates (CIFG)
  change little; the forget gate and the output activation matter most.
- Tallec & Ollivier 2018: chrono initialization solves long dependencies sooner.
- Feng et al. 2024: MinGRU and MinLSTM are competitive with the GRU and the LSTM.
- Ba et al. 2016: layer normalization speeds up training of recurrent networks.

A training run, not a test: minutes per row. Writes JSON (one row per run) and prints a
markdown table (one row per variant and task, the seeds' runs summarized).

    python benchmarks/variants.py                                   # every variant, both tasks, seeds 0-2
    python benchmarks/variants.py --tasks adding --seeds 0 --steps 800
    python benchmarks/variants.py --tasks jsb --seeds 0 --json benchmarks/results/variants_jsb.json
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from results_io import write_json

from gatedrnn.presets import resolve
from gatedrnn.tasks import task_from_config
from gatedrnn.train import TrainConfig, train

TASKS = {  # task: (T, step budget, learning rate)
    "adding": (200, 1500, 1e-2),
    "copy": (100, 3000, 3e-3),
    "jsb": (100, None, None),  # the preset's settings; T: its longest training excerpt (chrono's t_max)
}
VARIANTS = {  # name: (cell, TrainConfig fields)
    "LSTM": ("lstm", {}),
    "LSTM peephole": ("lstm", {"peephole": True}),
    "LSTM CIFG": ("lstm", {"coupled": True}),
    "LSTM layer norm": ("lstm", {"layer_norm": True}),
    "LSTM chrono": ("lstm", {"chrono": "T"}),  # t_max = the task's T
    "GRU": ("gru", {}),
    "GRU reset before (Cho)": ("gru", {"reset_after": False}),
    "GRU layer norm": ("gru", {"layer_norm": True}),
    "GRU chrono": ("gru", {"chrono": "T"}),
    "MGU": ("mgu", {}),
    "MinGRU": ("mingru", {}),
    "MinLSTM": ("minlstm", {}),
}


def run_one(task, variant, seed, steps, args):
    T, budget, lr = TASKS[task]
    cell, fields = VARIANTS[variant]
    fields = {k: (T if v == "T" else v) for k, v in fields.items()}
    if task == "jsb":
        config = TrainConfig(**{**resolve("jsb"), "cell": cell, "seed": seed, "threads": args.threads, **fields,
                                **({"steps": steps} if steps else {})})  # fmt: skip
    else:
        config = TrainConfig(task=task, cell=cell, length=T, hidden_size=args.hidden_size, batch_size=args.batch_size,
                             steps=steps or budget, lr=lr, eval_every=100, stop_when_solved=True, seed=seed,
                             threads=args.threads, **fields)  # fmt: skip
    started = time.perf_counter()
    name = variant.lower().replace(" ", "-").replace("(", "").replace(")", "")
    result = train(config, f"{args.out}/{task}-{name}-seed{seed}", progress=False)
    seconds = time.perf_counter() - started
    solved = task != "jsb" and task_from_config(config).solved(result.test)
    return {"task": task, "T": T, "variant": variant, "seed": seed, "steps": config.steps, "test": result.test,
            "solved": solved, "solved_at": result.solved_at, "seconds": seconds, "status": result.status}  # fmt: skip


def summary(rows):
    """One markdown line per (task, variant): median metric, runs solved, median steps to solve."""
    lines = []
    for task in TASKS:
        for variant in VARIANTS:
            runs = [r for r in rows if r["task"] == task and r["variant"] == variant]
            if not runs:
                continue
            metric = next(iter(runs[0]["test"]))
            value = statistics.median(r["test"][metric] for r in runs)
            solved = [r["solved_at"] for r in runs if r["solved"]]
            steps = f"{statistics.median(solved):,.0f}" if solved else "-"
            seconds = statistics.median(r["seconds"] for r in runs)
            solved_runs = "-" if task == "jsb" else f"{len(solved)}/{len(runs)}"  # an application is never solved
            lines.append(f"| {task} | {runs[0]['T']} | {variant} | {metric} {value:.4f} | {solved_runs} "
                         f"| {steps} | {seconds:.0f} |")  # fmt: skip
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, help="override every task's step budget")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/variants")
    parser.add_argument("--json", default="benchmarks/results/variants.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    print("| task | T | variant | seed | test | solved | steps to solve | time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for task in args.tasks:
        for variant in args.variants:
            for seed in args.seeds:
                row = run_one(task, variant, seed, args.steps, args)
                rows.append(row)
                shown = ", ".join(f"{k} {v:.4f}" for k, v in row["test"].items())
                print(f"| {task} | {row['T']} | {variant} | {seed} | {shown} | {'yes' if row['solved'] else 'no'} "
                      f"| {row['solved_at'] or '-'} | {row['seconds']:.0f} |", flush=True)  # fmt: skip
                write_json(args.json, {"steps": args.steps, "seeds": args.seeds, "rows": rows})
    print("\n| task | T | variant | median test metric | solved | median steps to solve | median time (s) |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(summary(rows)))


if __name__ == "__main__":
    main()

"""Long-memory benchmark: RNN, LSTM and GRU on the adding and copy tasks at several lengths.

Each run trains until solved, out of steps or out of time; prints a markdown table (final
test metric, steps to solve, wall time) and writes JSON. A training run, not a test: minutes
per row. ``--preset`` takes a named recipe's settings (``gatedrnn presets``); options given
here override it.

    python benchmarks/long_memory.py                                  # the default grid
    python benchmarks/long_memory.py --task adding --lengths 200 400 --cells lstm gru --steps 6000
    python benchmarks/long_memory.py --preset adding-600 --cells rnn lstm gru --seeds 0 1 2
"""

from __future__ import annotations

import argparse

import torch
from results_io import write_json

from gatedrnn.presets import PRESETS
from gatedrnn.train import TrainConfig, train

DEFAULTS = {
    # task: (lengths, steps, learning rate)
    "adding": ([100, 200, 400], 4000, 1e-2),
    "copy": ([50, 100, 200], 6000, 3e-3),
}


def configs(args):
    """(config, run folder) of every row, in order."""
    if args.preset:
        base = {**PRESETS[args.preset]}
        tasks = [base["task"]]
    else:
        base, tasks = {}, args.task
    for task in tasks:
        lengths, steps, lr = DEFAULTS[task]
        for length in args.lengths or ([base["length"]] if "length" in base else lengths):
            for cell in args.cells:
                for seed in args.seeds:
                    values = {"task": task, "length": length, "hidden_size": 128, "batch_size": 64, "steps": steps,
                              "lr": lr, "eval_every": 100, "stop_when_solved": True, "max_minutes": 20.0,
                              **base, "cell": cell, "seed": seed, "device": args.device, "threads": args.threads}  # fmt: skip
                    for name in ("steps", "lr", "hidden_size", "batch_size", "max_minutes", "clip", "chrono"):
                        if getattr(args, name) is not None:
                            values[name] = getattr(args, name)
                    if values.get("chrono") and cell not in ("lstm", "gru"):
                        values["chrono"] = 0.0  # chrono sets gate biases: the vanilla RNN row runs without
                    if values.get("layer_norm") and cell not in ("lstm", "gru"):
                        values["layer_norm"] = False  # the gated cells' variant: the vanilla RNN row runs without
                    extra = dict(values.get("extra", {}))
                    if args.solved is not None:
                        extra["solved_mse" if task == "adding" else "solved_loss"] = args.solved
                    values["extra"] = extra
                    yield TrainConfig(**values), f"{args.out}/{task}-{length}-{cell}-seed{seed}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", nargs="+", default=list(DEFAULTS), choices=list(DEFAULTS))
    parser.add_argument("--preset", choices=[name for name, p in PRESETS.items() if p["task"] in DEFAULTS])
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    parser.add_argument("--lengths", nargs="+", type=int, help="override the task's lengths")
    parser.add_argument("--steps", type=int, help="override the step budget")
    parser.add_argument("--lr", type=float, help="override the learning rate")
    parser.add_argument("--clip", type=float, help="override the gradient-norm clip")
    parser.add_argument("--chrono", type=float, help="chrono initialization up to this many steps (LSTM, GRU)")
    parser.add_argument("--solved", type=float, help="adding: solved below this MSE; copy: also below this loss")
    parser.add_argument("--hidden-size", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--max-minutes", type=float, help="wall-time cap per run (default 20, or the preset's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run (0: torch's choice)")
    parser.add_argument("--out", default="runs/long_memory")
    parser.add_argument("--json", default="benchmarks/results/long_memory.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads or torch.get_num_threads())

    rows = []
    print("| task | T | cell | seed | test metric | baseline | solved | steps to solve | steps | time (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for config, run_dir in configs(args):
        result = train(config, run_dir, progress=False)
        from gatedrnn.tasks import task_from_config

        task = task_from_config(config)
        solved = task.solved(result.test)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in result.test.items())
        row = {"task": config.task, "T": config.length, "cell": config.cell, "seed": config.seed, "test": result.test,
               "baseline": task.baseline, "solved": solved, "solved_at": result.solved_at, "steps": result.step,
               "seconds": result.seconds, "status": result.status, "config": vars(config)}  # fmt: skip
        rows.append(row)
        print(f"| {config.task} | {config.length} | {config.cell} | {config.seed} | {shown} | {task.baseline:.4f} "
              f"| {'yes' if solved else 'no'} | {result.solved_at or '-'} | {result.step} | {result.seconds:.0f} |",
              flush=True)  # fmt: skip
        if args.json:
            write_json(args.json, rows)


if __name__ == "__main__":
    main()

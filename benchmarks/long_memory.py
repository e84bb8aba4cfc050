"""Long-memory benchmark: RNN, LSTM and GRU on the adding and copy tasks at several lengths.

Each run trains until solved or out of steps; prints a markdown table (final test metric,
steps to solve, wall time) and writes JSON. A training run, not a test: minutes per row.

    python benchmarks/long_memory.py                                  # the default grid
    python benchmarks/long_memory.py --task adding --lengths 200 400 --cells lstm gru --steps 6000
"""

from __future__ import annotations

import argparse
import time

import torch
from results_io import write_json

from gatedrnn.train import TrainConfig, train

DEFAULTS = {
    # task: (lengths, steps, learning rate)
    "adding": ([100, 200, 400], 4000, 1e-2),
    "copy": ([50, 100, 200], 6000, 3e-3),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", nargs="+", default=list(DEFAULTS), choices=list(DEFAULTS))
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    parser.add_argument("--lengths", nargs="+", type=int, help="override the task's lengths")
    parser.add_argument("--steps", type=int, help="override the task's step budget")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=20.0, help="wall-time cap per run")
    parser.add_argument("--out", default="runs/long_memory")
    parser.add_argument("--json", default="benchmarks/results/long_memory.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    rows = []
    print("| task | T | cell | test metric | baseline | solved | steps to solve | time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for task in args.task:
        lengths, steps, lr = DEFAULTS[task]
        for length in args.lengths or lengths:
            for cell in args.cells:
                config = TrainConfig(task=task, cell=cell, length=length, hidden_size=args.hidden_size,
                                     batch_size=args.batch_size, steps=args.steps or steps, lr=lr, eval_every=100,
                                     stop_when_solved=True, seed=args.seed)  # fmt: skip
                started = time.perf_counter()
                deadline = started + args.max_minutes * 60

                def on_eval(step, metrics, model):
                    if time.perf_counter() > deadline:
                        raise TimeoutError

                run_dir = f"{args.out}/{task}-{length}-{cell}"
                try:
                    result = train(config, run_dir, progress=False, on_eval=on_eval)
                    test, solved_at, status = result.test, result.solved_at, result.status
                except TimeoutError:
                    from gatedrnn.train import evaluate, build
                    from gatedrnn import checkpoint

                    task_obj, model = build(config)
                    state = checkpoint.load_model(run_dir, model)
                    test, solved_at, status = evaluate(task_obj, model, "test", config.seed), state["solved_at"], "timeout"
                seconds = time.perf_counter() - started
                from gatedrnn.tasks import make_task

                t = make_task(task, length=length)
                shown = ", ".join(f"{k} {v:.4f}" for k, v in test.items())
                solved = t.solved(test)
                row = {"task": task, "T": length, "cell": cell, "test": test, "baseline": t.baseline,
                       "solved": solved, "solved_at": solved_at, "seconds": seconds, "status": status}  # fmt: skip
                rows.append(row)
                print(f"| {task} | {length} | {cell} | {shown} | {t.baseline:.4f} | {'yes' if solved else 'no'} "
                      f"| {solved_at or '-'} | {seconds:.0f} |", flush=True)  # fmt: skip
    if args.json:
        write_json(args.json, rows)


if __name__ == "__main__":
    main()

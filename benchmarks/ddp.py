"""Training steps per second in one process and in several under torchrun (DDP, gloo), on the
cores of this machine: the same ``gatedrnn train`` run, the same global batch, each layout
given the same cores.

    python benchmarks/ddp.py                      # 2 cores: 1 process x 2 threads vs 2 processes x 1 thread
    python benchmarks/ddp.py --quick              # tiny sizes, a check that it runs (numbers mean nothing; not saved)

Rows, for ``--cores C`` (default 2):
- 1 process x 1 thread: what one core does (the scale the others are read against);
- 1 process x C threads: torch's intra-op threads split each matrix product;
- C processes x 1 thread: DDP under torchrun, each process B / C of the batch, gradients
  all-reduced (gloo) every step.

What C cores allow: at most C times one core's rate, and less here. The recurrence is
sequential in time, so threads help only inside each step's products (small at small H);
processes split the batch instead, but each one still draws the whole global batch (which
keeps the run equal to one process), all-reduces every gradient each step, and in a small
batch runs matrix products too narrow to be efficient. Run it on an otherwise quiet machine:
the processes compete for the same cores with whatever else runs.

The rate is measured by the trainer itself, from ``metrics.jsonl``'s clock between the
training rows of step 10 and the last step, with no evaluation between them: start-up, the
kernels' build, the first steps and the final evaluation are left out. Prints a table and
writes ``benchmarks/results/ddp.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from results_io import write_json

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = {  # name: gatedrnn train options (the global batch in --batch-size)
    "adding lstm H=128 T=100 B=64": ["--task", "adding", "--cell", "lstm", "--hidden-size", "128", "--length", "100",
                                     "--batch-size", "64"],
    "adding gru H=512 T=50 B=128": ["--task", "adding", "--cell", "gru", "--hidden-size", "512", "--length", "50",
                                    "--batch-size", "128"],
    "copy lstm H=256 T=100 B=64": ["--task", "copy", "--cell", "lstm", "--hidden-size", "256", "--length", "100",
                                   "--batch-size", "64"],
}  # fmt: skip
QUICK = {"adding lstm H=16 T=10 B=8": ["--task", "adding", "--cell", "lstm", "--hidden-size", "16", "--length", "10",
                                       "--batch-size", "8"]}  # fmt: skip


def steps_per_second(options: list[str], steps: int, processes: int, threads: int, out: Path) -> float:
    """Runs ``gatedrnn train`` (under torchrun when ``processes`` > 1) and reads its rate."""
    train = ["train", *options, "--steps", str(steps), "--eval-every", str(steps), "--no-report", "--out", str(out)]
    if processes == 1:
        command = [sys.executable, "-m", "gatedrnn", *train]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                   "-m", "gatedrnn", *train]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    clock = {r["step"]: r["seconds"] for r in rows if r["split"] == "train"}
    return (steps - 10) / (clock[steps] - clock[10])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, default=2, help="cores to share out (default 2)")
    parser.add_argument("--steps", type=int, default=210, help="training steps of each run (default 210)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 30 steps: checks that it runs")
    parser.add_argument("--out", help="results file (default benchmarks/results/ddp.json; none with --quick)")
    args = parser.parse_args(argv)
    configs, steps = (QUICK, 30) if args.quick else (CONFIGS, args.steps)
    layouts = [(1, 1), (1, args.cores), (args.cores, 1)]  # (processes, threads per process)
    print(f"steps/s of gatedrnn train, {steps} steps, on {args.cores} cores (this machine has {os.cpu_count()})")
    header = "| run | " + " | ".join(f"{p} process{'es' if p > 1 else ''} x {t} thread{'s' if t > 1 else ''}"
                                       for p, t in layouts) + f" | {args.cores} processes / 1 process x {args.cores} |"
    print(header)
    print("|---" * (len(layouts) + 2) + "|")
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, options in configs.items():
            rates = [steps_per_second(options, steps, p, t, Path(scratch) / f"{len(results)}-{p}x{t}")
                     for p, t in layouts]  # fmt: skip
            results.append({"run": name, "options": options, "steps": steps,
                            "steps_per_second": {f"{p}x{t}": rate for (p, t), rate in zip(layouts, rates)}})  # fmt: skip
            print(f"| {name} | " + " | ".join(f"{r:.1f}" for r in rates) + f" | {rates[2] / rates[1]:.2f}x |",
                  flush=True)  # fmt: skip
    out = args.out or (None if args.quick else str(ROOT / "benchmarks" / "results" / "ddp.json"))
    if out:
        write_json(out, {"cores": args.cores, "cpu_count": os.cpu_count(), "quick": args.quick, "results": results})
        print(f"wrote {out}")


if __name__ == "__main__":
    main()

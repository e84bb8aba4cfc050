"""``backend="auto"`` at shapes no benchmark chose: B in [1, 256], T in [1, 2000], I and H in
[8, 1024], drawn log-uniformly (seeded), each kept only if torch.nn's training step at it takes
at most ``--max-ms`` (200 ms). For every plain cell (RNN, LSTM, GRU), in inference and
training, side by side in one process (every step once per round, in an order drawn
afresh each round; medians of the ratios within rounds, after warm-up): torch.nn,
a second torch.nn layer with the same weights (the control: how far an identical layer reads
from the first, the noise of the measurement at that shape), gatedrnn with ``auto``
(autotuning on: its first call times the candidates; that call is warm-up here), and each of
auto's candidates forced (``torch``'s kernel and the ``fused`` loop). Prints the per-shape
ratios and their distribution; writes JSON, with what the autotuner timed at each row's first
call (``autotune.looks()``: its seconds per candidate and its choice; empty where the shape
class was remembered from an earlier row).

    python benchmarks/random_shapes.py --n 40 --seed 0
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import statistics
import time

import torch
from results_io import cpu_name, write_json
from speed import make_step
from timing import round_ratio, round_times

import gatedrnn
from gatedrnn import autotune

CELLS = ("RNN", "LSTM", "GRU")


def draw(rng: random.Random, low: int, high: int) -> int:
    return int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))


def shapes(n: int, seed: int, max_ms: float):
    """``n`` shapes (B, T, I, H) whose torch.nn LSTM training step (the slowest of the three
    cells) is at most ``max_ms``, measured once."""
    rng = random.Random(seed)
    found = []
    while len(found) < n:
        B, T, I, H = draw(rng, 1, 256), draw(rng, 1, 2000), draw(rng, 8, 1024), draw(rng, 8, 1024)  # noqa: E741
        flops = 2 * B * T * 4 * H * (I + H) * 3  # forward and backward, the GEMMs
        if flops > 4e9:  # far past the bound at this machine's speed: not worth a measurement
            continue
        lstm, x = torch.nn.LSTM(I, H), torch.randn(T, B, I)
        started = time.perf_counter()
        lstm(x)[0].sum().backward()
        if 1e3 * (time.perf_counter() - started) <= max_ms:
            found.append((B, T, I, H))
    return found


def forced(theirs, cell: str, backend: str):
    """A gatedrnn layer with ``theirs``' weights and its backend fixed: ``"auto"``, or one of
    auto's candidates (``"torch"``, which only ``auto`` chooses otherwise, or ``"fused"``). One
    layer per backend: an assignment to a layer forgets the plans it remembers of its calls."""
    layer = getattr(gatedrnn, cell).from_torch(theirs)
    layer.backend = backend
    return layer


def measure(steps, budget, seed):
    """torch.nn's median seconds (``steps[0]``), each other step's time over torch.nn's, and
    ``auto`` (``steps[2]``) over the faster of its candidates (``steps[3:]``), each the median
    over rounds of the ratio within a round (a drift of the machine's speed moves every step of
    a round alike), each round in a fresh random order (``timing.round_times``: a step reads
    slower after one that swept the caches, and a fixed order, even reversed for half the
    rounds as this benchmark did before, read an identical torch.nn layer at 1.07-1.11 at some
    small shapes), at least 30 rounds.

    ``auto`` against its faster candidate is timed again on its own, the two steps alone in
    their rounds (half the budget, at least 30 rounds): among torch.nn's steps, where the
    candidates take a tenth of torch.nn's time, the budget allows few rounds: at two such
    shapes, where auto ran the fused loop, auto over the fused loop read 0.92-1.09 in twelve
    measurements, a second fused loop over the first 0.95-1.02 in four; auto and fused loops
    alone, with more rounds, read 0.985-1.000 in six."""
    times = round_times(steps, budget, min_rounds=30, seed=seed)
    ratios = [round_ratio(ts, times[0]) for ts in times[1:]]
    best = min((3, 4), key=lambda k: ratios[k - 1])
    pair = round_times([steps[2], steps[best]], budget / 2, min_rounds=30, seed=seed)
    return statistics.median(times[0]), ratios, round_ratio(*pair)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-ms", type=float, default=200.0)
    parser.add_argument("--budget", type=float, default=1.5, help="seconds of timing per measurement (at least 30 rounds)")
    parser.add_argument("--json", default=None, help="default: benchmarks/results/random_shapes_seed{S}.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gatedrnn.set_autotune(True)
    autotune.forget()
    autotune.cache_path().unlink(missing_ok=True)  # as a first run on this machine: every shape class timed afresh
    rows = []
    print(f"CPU: {cpu_name()}, {args.threads} threads, torch {torch.__version__}, seed {args.seed}\n")
    print("| cell | B, T, I, H | mode | torch.nn ms | twin / torch.nn | auto / torch.nn | torch / torch.nn "
          "| fused / torch.nn | auto / best |")
    print("|---|---|---|---|---|---|---|---|---|")
    for B, T, I, H in shapes(args.n, args.seed, args.max_ms):  # noqa: E741
        x = torch.randn(B, T, I)
        for cell in CELLS:
            theirs = getattr(torch.nn, cell)(I, H, batch_first=True)
            twin = copy.deepcopy(theirs)  # the control: the same layer again
            ours = [forced(theirs, cell, backend) for backend in ("auto", "torch", "fused")]
            for train in (False, True):
                for layer in (theirs, twin, *ours):
                    layer.train(train)
                xin = x.clone().requires_grad_(train)
                steps = [make_step(layer, xin, train) for layer in (theirs, twin, *ours)]
                seen = len(autotune.looks())
                base, (control, auto, kernel, fused_), auto_best = measure(steps, args.budget, seed=len(rows))
                row = {"cell": cell, "B": B, "T": T, "I": I, "H": H, "mode": "training" if train else "inference",
                       "torch.nn ms": 1e3 * base, "twin": control, "auto": auto, "torch": kernel, "fused": fused_,
                       "auto / best": auto_best, "autotune": autotune.looks()[seen:]}  # fmt: skip
                rows.append(row)
                print(f"| {cell} | {B}, {T}, {I}, {H} | {row['mode']} | {1e3 * base:.2f} | {control:.2f} | {auto:.2f} "
                      f"| {kernel:.2f} | {fused_:.2f} | {row['auto / best']:.2f} |", flush=True)
    summary = {}
    for key in ("auto", "auto / best", "twin"):
        values = [r[key] for r in rows]
        summary[key] = {"min": min(values), "median": statistics.median(values), "max": max(values),
                        "over 1.05": sum(v > 1.05 for v in values), "of": len(values)}  # fmt: skip
    print(f"\n{summary}")
    write_json(args.json or f"benchmarks/results/random_shapes_seed{args.seed}.json", {"rows": rows, "summary": summary})


if __name__ == "__main__":
    main()

"""Peak memory of one training step (forward + backward) of torch.nn and of gatedrnn, each
measured in a fresh process as the growth of its peak resident set size.

    python benchmarks/memory.py --cell LSTM --shape 128 50 512 512
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import resource, torch, gatedrnn, json, sys
cell, impl, B, T, I, H = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
torch.manual_seed(0)
theirs = getattr(torch.nn, cell)(I, H)
module = theirs if impl == "torch" else getattr(gatedrnn, cell).from_torch(theirs, backend=impl.split(":")[0])
x = torch.randn(T, B, I)
kwargs = {"return_trace": True} if impl.endswith(":trace") else {}
module(x[:2], **kwargs)  # load and build everything before measuring
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = module(x, **kwargs)[0]
out.sum().backward()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_growth_mb": (after - before) / 1024}))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", default="LSTM", choices=["RNN", "LSTM", "GRU"])
    parser.add_argument("--shape", nargs=4, type=int, default=[128, 50, 512, 512], metavar=("B", "T", "I", "H"))
    args = parser.parse_args(argv)
    B, T, I, H = args.shape
    gates = {"RNN": 0, "LSTM": 5, "GRU": 4}[args.cell]  # saved (T, B, H) blocks: gates (+ c or hn)
    print(f"{args.cell} training step, B={B} T={T} I={I} H={H}; saved gate activations: "
          f"{gates * T * B * H * 4 / 2**20:.0f} MB")  # fmt: skip
    for impl in ("torch", "fused", "fused:trace", "reference"):
        out = subprocess.run([sys.executable, "-c", CHILD, args.cell, impl, *map(str, args.shape)],
                             capture_output=True, text=True, check=True)  # fmt: skip
        print(f"  {impl:12s} peak growth {json.loads(out.stdout.strip().splitlines()[-1])['peak_growth_mb']:7.0f} MB")


if __name__ == "__main__":
    main()

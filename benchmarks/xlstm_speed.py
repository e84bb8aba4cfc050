"""Speed of gatedrnn's xLSTM cells on the CPU, side by side in one process (interleaved rounds,
medians after warm-up), against torch.nn.LSTM and against the official ``xlstm`` package's CPU
paths (its ``backend="vanilla"`` sLSTM cell; its mLSTM parallel and chunkwise functions).

- sLSTM, at (B, T, H, heads) = (16, 256, 256, 4): the cell over time given the input
  projections (ours: ``gatedrnn.xlstm.slstm.run_slstm`` on the fused and reference backends;
  theirs: ``sLSTMCell`` vanilla), and the whole layer with its input projection against
  ``torch.nn.LSTM(H, H)``. Inference (no_grad) and training (forward + backward).
- mLSTM, (B, heads, head size) = (4, 4, 64), T from 256 to 4,096: ours in its chunkwise and
  parallel forms against the official parallel and chunkwise functions, on the same q, k, v
  and gate pre-activations; training (forward + backward). Time per step shows linearity in T.

Prints markdown tables, writes JSON (``benchmarks/tables.py`` renders it into docs/xlstm.md).

    python benchmarks/xlstm_speed.py
"""

from __future__ import annotations

import argparse

import torch
from results_io import cpu_name, write_json
from speed import time_pair

from gatedrnn.xlstm import mLSTM, sLSTM  # noqa: F401  (the layers, imported as a user would)
from gatedrnn.xlstm.mlstm import mlstm_sequence
from gatedrnn.xlstm.slstm import run_slstm


def _official():
    try:
        from xlstm.blocks.mlstm import backends
        from xlstm.blocks.slstm.cell import sLSTMCell, sLSTMCellConfig
    except ImportError:
        return None
    return sLSTMCell, sLSTMCellConfig, backends


def _steps(fns, train, outputs_grad=True):
    """A step per function: ``fn()`` returns a tensor; training also backpropagates its sum
    weighted by a fixed random tensor (created on first call)."""
    grads = {}

    def make(key, fn):
        if not train:

            def step():
                with torch.no_grad():
                    fn()

            return step

        def step():
            out = fn()
            if key not in grads:
                grads[key] = torch.randn_like(out)
            (out * grads[key]).sum().backward()

        return step

    return [make(k, fn) for k, fn in enumerate(fns)]


def slstm_rows(B, T, H, heads, budget):
    official = _official()
    d = H // heads
    rows = []
    xw = torch.randn(T, B, 4 * H)
    w_hh = (torch.randn(heads, 4 * d, d) / d**0.5).requires_grad_()
    b_hh = torch.zeros(4 * H, requires_grad=True)
    state = tuple(torch.zeros(B, H) for _ in range(4))
    for train in (False, True):
        x = xw.clone().requires_grad_(train)
        fns = {
            "fused": lambda: run_slstm(x, state, w_hh, b_hh, forget="sigmoid", lengths=None, backend="fused",
                                       want_trace=False)[0],
            "reference": lambda: run_slstm(x, state, w_hh, b_hh, forget="sigmoid", lengths=None,
                                           backend="reference", want_trace=False)[0],
        }  # fmt: skip
        if official is not None:
            cell_cls, config_cls, _ = official
            cell = cell_cls(config_cls(hidden_size=H, num_heads=heads, backend="vanilla", dtype="float32",
                                       enable_automatic_mixed_precision=False))  # fmt: skip
            cell.train(train)
            xb = x.detach().transpose(0, 1).contiguous().requires_grad_(train)  # (B, T, 4H)
            fns["official vanilla"] = lambda: cell(xb)[0]
        names = list(fns)
        medians = time_pair(_steps(list(fns.values()), train), budget)
        ms = dict(zip(names, (1e3 * m for m in medians)))
        row = {"what": "sLSTM cell over time", "B": B, "T": T, "H": H, "heads": heads,
               "mode": "training" if train else "inference", "ms": ms,
               "official / fused": ms.get("official vanilla", float("nan")) / ms["fused"]}  # fmt: skip
        rows.append(row)
        print(f"| sLSTM cell | {B}, {T}, {H}, {heads} | {row['mode']} | "
              + " | ".join(f"{n} {v:.1f}" for n, v in ms.items()) + f" | official/fused {row['official / fused']:.1f}x |")
    # the layers, input projection included, against torch.nn.LSTM of the same hidden size
    x = torch.randn(B, T, H)
    ours, theirs = sLSTM(H, H, num_heads=heads, batch_first=True), torch.nn.LSTM(H, H, batch_first=True)
    for train in (False, True):
        ours.train(train)
        theirs.train(train)
        medians = time_pair(_steps([lambda: theirs(x)[0], lambda: ours(x)[0]], train), budget)
        row = {"what": "layer vs torch.nn.LSTM", "B": B, "T": T, "H": H, "heads": heads,
               "mode": "training" if train else "inference",
               "ms": {"torch.nn.LSTM": 1e3 * medians[0], "gatedrnn.sLSTM": 1e3 * medians[1]},
               "sLSTM / torch.nn.LSTM": medians[1] / medians[0]}  # fmt: skip
        rows.append(row)
        print(f"| sLSTM layer | {B}, {T}, {H}, {heads} | {row['mode']} | torch.nn.LSTM {1e3 * medians[0]:.1f} | "
              f"sLSTM {1e3 * medians[1]:.1f} | ratio {row['sLSTM / torch.nn.LSTM']:.2f} |")
    return rows


def mlstm_rows(B, heads, d, lengths, chunk, budget):
    """Ours against the official forms, each pair timed in its own interleaved rounds: the
    chunkwise forms together, then (up to T = 2,048) the parallel forms with our chunkwise form,
    so that the quadratic forms' long calls neither set the chunkwise forms' number of rounds
    nor sit between their calls. Each ratio is the median over rounds of the two times in a round."""
    official = _official()
    rows = []
    for T in lengths:
        q, k, v = (torch.randn(B, heads, T, d, requires_grad=True) for _ in range(3))
        i_raw, f_raw = torch.randn(B, heads, T, requires_grad=True), (3 + torch.randn(B, heads, T)).requires_grad_()
        ours = lambda: mlstm_sequence(q, k, v, i_raw, f_raw, form="chunkwise", chunk_size=chunk)[0]
        groups = [{"chunkwise": ours}]
        if official is not None:
            backends = official[2]
            groups[0]["official chunkwise"] = lambda: backends.chunkwise_simple(q, k, v, i_raw, f_raw,
                                                                                chunk_size=chunk)  # fmt: skip
        if T <= 2048:
            groups.append({"chunkwise": ours,
                           "parallel": lambda: mlstm_sequence(q, k, v, i_raw, f_raw, form="parallel")[0]})  # fmt: skip
            if official is not None:
                groups[1]["official parallel"] = lambda: backends.parallel_stabilized_simple(
                    q, k, v, i_raw.unsqueeze(-1), f_raw.unsqueeze(-1))
        ms, over_ours = {}, {}
        for group in groups:
            medians, ratios = time_pair(_steps(list(group.values()), True), budget, ratios=True)
            for name, median, ratio in zip(group, medians, ratios):
                ms.setdefault(name, 1e3 * median)  # our chunkwise form: its first group's time
                over_ours[name] = ratio
        fastest = min((r for n, r in over_ours.items() if n.startswith("official")), default=float("nan"))
        row = {"what": "mLSTM training", "B": B, "heads": heads, "d": d, "T": T, "chunk_size": chunk, "ms": ms,
               "over chunkwise": {n: r for n, r in over_ours.items() if n != "chunkwise"},
               "us per step (chunkwise)": 1e3 * ms["chunkwise"] / T,
               "fastest official / chunkwise": fastest}  # fmt: skip
        rows.append(row)
        print(f"| mLSTM | {B}, {heads}, {d} | T={T} | " + " | ".join(f"{n} {v:.1f}" for n, v in ms.items())
              + f" | {row['us per step (chunkwise)']:.1f} us/step | official/chunkwise {fastest:.2f}x |")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timing per measurement")
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--json", default="benchmarks/results/xlstm_speed.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"CPU: {cpu_name()}, {args.threads} threads, torch {torch.__version__}, official xlstm: "
          f"{_official() is not None}\n")  # fmt: skip
    rows = slstm_rows(16, 256, 256, 4, args.budget) + mlstm_rows(4, 4, 64, args.lengths, 64, args.budget)
    write_json(args.json, rows)


if __name__ == "__main__":
    main()

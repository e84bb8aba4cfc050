"""Why the GRU trails the LSTM on music: controlled runs of one music preset.

Every variant trains the preset with one change from the GRU row, on the same seeds (the same
initial weights and batches), and reports the validation and test NLL of the weights chosen
on validation:

- ``gru``: the preset's GRU, as README's table ran it;
- ``torch-gru``: the same model with ``torch.nn.GRU`` in place of gatedrnn's layer, on the same
  initial weights: a defect in gatedrnn's GRU would show as a gap between these two;
- ``lstm``: the preset's LSTM (which the model gives a forget-gate bias of 1, Jozefowicz et al.
  2015; the GRU's update gate gets no such bias);
- ``update-bias-B``: the GRU's update-gate bias set to B (keep rate sigmoid(B)), the GRU's
  counterpart of the LSTM's forget bias;
- ``chrono-T``: chrono initialization of the update gate up to T steps;
- ``lr-X``, ``reset-before``: the learning rate, and Cho et al.'s candidate;
- ``layer-norm``: the layer-norm GRU;
- ``hidden-N``, ``dropout-P``, ``zoneout-P``, ``recurrent-dropout-P``, ``weight-decay-W``: the
  size, and the regularizers (JSB has 13.8k training frames: the GRU's validation-test gap is
  twice the LSTM's);
- ``patience-N``, ``batch-N``: early stopping and the batch size.

    python benchmarks/music_gru.py --preset jsb --seeds 0 1 2
    python benchmarks/music_gru.py --preset nottingham --variants gru update-bias-1 --seeds 0
"""

from __future__ import annotations

import argparse
import contextlib
import statistics

import torch
from results_io import write_json
from torch import nn

import gatedrnn.train as engine
from gatedrnn.presets import resolve
from gatedrnn.train import TrainConfig, train


class TorchGRU(nn.Module):
    """``torch.nn.GRU`` behind gatedrnn's call (``lengths=`` packs the batch), starting from the
    weights of the gatedrnn layer it replaces."""

    def __init__(self, ours):
        super().__init__()
        self.gru = ours.to_torch()

    def forward(self, x, hx=None, return_trace=False, lengths=None):
        if return_trace:
            raise ValueError("torch.nn.GRU gives no trace")
        if lengths is None:
            return self.gru(x, hx)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, h = self.gru(packed, hx)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out, h


def update_bias(value):
    def hook(model):
        with torch.no_grad():
            for name, p in model.rnn.named_parameters():
                if name.startswith("bias_ih"):  # r z n: z is the second block
                    size = p.shape[0] // 3
                    p[size : 2 * size] = value
                    getattr(model.rnn, name.replace("ih", "hh"))[size : 2 * size] = 0.0
    return hook


def variant(name):
    """(config changes, hook on the built model or None) of a variant's name; ``a+b`` combines
    two variants' config changes."""
    if "+" in name:
        parts = [variant(part) for part in name.split("+")]
        if any(hook is not None for _, hook in parts):
            raise ValueError(f"{name!r}: only config changes combine, not torch-gru or update-bias")
        return {k: v for changes, _ in parts for k, v in changes.items()}, None
    if name == "layer-norm":
        return {"cell": "gru", "layer_norm": True}, None
    if name in ("gru", "lstm"):
        return {"cell": name}, None
    if name == "torch-gru":
        return {"cell": "gru"}, lambda model: setattr(model, "rnn", TorchGRU(model.rnn))
    if name.startswith("update-bias-"):
        return {"cell": "gru"}, update_bias(float(name[len("update-bias-"):]))
    if name.startswith("chrono-"):
        return {"cell": "gru", "chrono": float(name[len("chrono-"):])}, None
    if name.startswith("lr-"):
        return {"cell": "gru", "lr": float(name[len("lr-"):])}, None
    if name == "reset-before":
        return {"cell": "gru", "reset_after": False}, None
    for prefix, field, kind in (("hidden-", "hidden_size", int), ("dropout-", "dropout", float),
                                ("zoneout-", "zoneout", float), ("recurrent-dropout-", "recurrent_dropout", float),
                                ("weight-decay-", "weight_decay", float), ("patience-", "patience", int),
                                ("batch-", "batch_size", int)):
        if name.startswith(prefix):
            return {"cell": "gru", field: kind(name[len(prefix):])}, None
    raise ValueError(f"unknown variant {name!r}")


@contextlib.contextmanager
def hooked(hook):
    """``train`` builds its model with ``hook`` applied (after the seeded initialization)."""
    if hook is None:
        yield
        return
    original = engine.build

    def build(config, run_dir=None):
        task, model = original(config, run_dir)
        hook(model)
        return task, model.to(config.device)

    engine.build = build
    try:
        yield
    finally:
        engine.build = original


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="jsb", choices=["jsb", "nottingham", "musedata", "piano-midi"])
    parser.add_argument("--variants", nargs="+", default=["gru", "torch-gru", "lstm", "update-bias-1", "chrono-8",
                                                          "chrono-32"])  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, help="override the preset's step budget")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/music_gru")
    parser.add_argument("--json", default="benchmarks/results/music_gru.json")
    args = parser.parse_args(argv)
    rows = []
    print("| variant | seed | validation NLL | test NLL | steps | time (s) |")
    print("|---|---|---|---|---|---|")
    for name in args.variants:
        changes, hook = variant(name)
        for seed in args.seeds:
            config = TrainConfig(**{**resolve(args.preset), **changes, "seed": seed, "threads": args.threads,
                                    **({"steps": args.steps} if args.steps else {})})
            with hooked(hook):
                result = train(config, f"{args.out}/{args.preset}-{name}-seed{seed}", progress=False)
            valid = min(r["nll"] for r in result.history if r["split"] == "valid")
            rows.append({"preset": args.preset, "variant": name, "seed": seed, "valid": valid,
                         "test": result.test["nll"], "steps": result.step, "seconds": result.seconds})  # fmt: skip
            print(f"| {name} | {seed} | {valid:.3f} | {result.test['nll']:.3f} | {result.step} "
                  f"| {result.seconds:.0f} |", flush=True)  # fmt: skip
            write_json(args.json, rows)
    print("\n| variant | mean validation NLL | mean test NLL | seeds |\n|---|---|---|---|")
    for name in args.variants:
        mine = [r for r in rows if r["variant"] == name]
        print(f"| {name} | {statistics.mean(r['valid'] for r in mine):.3f} "
              f"| {statistics.mean(r['test'] for r in mine):.3f} | {len(mine)} |")  # fmt: skip


if __name__ == "__main__":
    main()

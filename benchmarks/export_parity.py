"""Export parity: every cell and variant (2 layers, bidirectional, batch_first) exported once at
B=3, T=6 and run at other sizes, against eager PyTorch: onnxruntime on the dynamo exporter's
ONNX file, the torch.export program, and onnxruntime on the legacy exporter's file (where the
legacy graph is unrolled it runs at T=6 only, with other batch sizes). The last column is
PyTorch float32 against PyTorch float64: the rounding the float32 model carries anyway.
Prints a markdown table, writes JSON.

    python benchmarks/export_parity.py
"""

from __future__ import annotations

import argparse
import copy
import io
import warnings

import torch
from results_io import write_json
from torch.export import Dim

import gatedrnn

CONFIGS = {
    "RNN tanh": lambda **kw: gatedrnn.RNN(8, 16, **kw),
    "RNN relu": lambda **kw: gatedrnn.RNN(8, 16, nonlinearity="relu", **kw),
    "LSTM": lambda **kw: gatedrnn.LSTM(8, 16, **kw),
    "LSTM proj_size=4": lambda **kw: gatedrnn.LSTM(8, 16, proj_size=4, **kw),
    "LSTM peephole": lambda **kw: gatedrnn.LSTM(8, 16, peephole=True, **kw),
    "LSTM coupled": lambda **kw: gatedrnn.LSTM(8, 16, coupled=True, **kw),
    "LSTM layer_norm": lambda **kw: gatedrnn.LSTM(8, 16, layer_norm=True, **kw),
    "GRU": lambda **kw: gatedrnn.GRU(8, 16, **kw),
    "GRU reset_after=False": lambda **kw: gatedrnn.GRU(8, 16, reset_after=False, **kw),
    "GRU layer_norm": lambda **kw: gatedrnn.GRU(8, 16, layer_norm=True, **kw),
    "MGU": lambda **kw: gatedrnn.MGU(8, 16, **kw),
    "MinGRU": lambda **kw: gatedrnn.MinGRU(8, 16, **kw),
    "MinLSTM": lambda **kw: gatedrnn.MinLSTM(8, 16, **kw),
}
SIZES = [(1, 1), (4, 50), (16, 500)]  # (B, T) run at


def flat(value):
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in flat(v)]
    return [value]


def max_difference(got, want) -> float:
    return max(float((torch.as_tensor(g) - w).abs().max()) for g, w in zip(got, want, strict=True))


def measure(name, make, ort):
    torch.manual_seed(0)
    layer = make(num_layers=2, bidirectional=True, batch_first=True).eval()
    with torch.no_grad():  # off their initial values (peepholes start at zero, layer-norm gains at one)
        for p in layer.parameters():
            p.add_(torch.empty_like(p).uniform_(-0.1, 0.1))
    x = torch.randn(3, 6, 8)
    dynamic = ({0: Dim("B", min=1), 1: Dim("T", min=1)},)
    with torch.no_grad():
        dynamo = torch.onnx.export(layer, (x,), dynamic_shapes=dynamic, dynamo=True, verbose=False)
        dynamo = ort.InferenceSession(dynamo.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
        program = torch.export.export(layer, (x,), dynamic_shapes=dynamic).module()
        legacy_file = io.BytesIO()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.onnx.export(layer, (x,), legacy_file, dynamo=False, input_names=["x"],
                              dynamic_axes={"x": {0: "B", 1: "T"}})  # fmt: skip
        unrolled = any("unrolls the time loop" in str(w.message) for w in caught)
        legacy = ort.InferenceSession(legacy_file.getvalue(), providers=["CPUExecutionProvider"])
        exact = copy.deepcopy(layer).double()
        row = {"configuration": name, "legacy": "unrolled (T fixed)" if unrolled else "dynamic", "per_size": []}
        for B, T in SIZES:
            x = torch.randn(B, T, 8)
            want = flat(layer(x))
            x_legacy = torch.randn(B, 6, 8) if unrolled else x
            row["per_size"].append({
                "B": B, "T": T,
                "onnx_dynamo": max_difference(dynamo.run(None, {dynamo.get_inputs()[0].name: x.numpy()}), want),
                "exported_program": max_difference(flat(program(x)), want),
                "onnx_legacy": max_difference(legacy.run(None, {"x": x_legacy.numpy()}), flat(layer(x_legacy))),
                "float32_vs_float64": max_difference(want, flat(exact(x.double()))),
            })  # fmt: skip
    for key in ("onnx_dynamo", "exported_program", "onnx_legacy", "float32_vs_float64"):
        row[key] = max(size[key] for size in row["per_size"])  # the largest over the sizes
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default="benchmarks/results/export_parity.json")
    args = parser.parse_args(argv)
    import onnxruntime as ort

    sizes = ", ".join(f"B={B} T={T}" for B, T in SIZES)
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}; exported at B=3 T=6, run at {sizes}\n")
    print("| configuration | onnxruntime (dynamo) | exported program | legacy exporter | onnxruntime (legacy) "
          "| float32 vs float64 |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    rows = []
    for name, make in CONFIGS.items():
        row = measure(name, make, ort)
        rows.append(row)
        print(f"| {name} | {row['onnx_dynamo']:.1e} | {row['exported_program']:.1e} | {row['legacy']} "
              f"| {row['onnx_legacy']:.1e} | {row['float32_vs_float64']:.1e} |", flush=True)  # fmt: skip
    write_json(args.json, {"torch": torch.__version__, "onnxruntime": ort.__version__, "sizes": SIZES, "rows": rows})


if __name__ == "__main__":
    main()

"""``gatedrnn export``: a trained run's model as an ONNX file or a ``torch.export`` program, for
every batch size and sequence length, checked against PyTorch at a second size."""

from __future__ import annotations

import argparse
import contextlib
import logging
import warnings
from pathlib import Path

from gatedrnn.cli.errors import UsageError, run_errors
from gatedrnn.cli.run_options import add_run_options

EXAMPLES = """examples:
  gatedrnn export runs/adding-lstm --format onnx --out adding.onnx
  gatedrnn export runs/adding-lstm --format exported-program --out adding.pt2
  gatedrnn export runs/shakespeare --format onnx --out lm.onnx --stateful    # (tokens, state) -> (logits, state)

The file takes inputs of any batch size and length: (B, T, I) features, or (B, T) token ids for
text runs; with --stateful also the recurrent state, h (and c for an LSTM), each (L, B, H), and it
returns the state after the chunk: a stream is fed chunk by chunk. Load an exported program with
torch.export.load(FILE).module(); run an ONNX file with onnxruntime.InferenceSession(FILE).
"""

FORMATS = ("onnx", "exported-program")


def add_parser(sub):
    p = sub.add_parser("export", help="export a trained model to ONNX or a torch.export program",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a folder gatedrnn train wrote")
    p.add_argument("--format", choices=FORMATS, required=True, help="onnx (an .onnx file) or exported-program (.pt2)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="the file to write")
    p.add_argument("--stateful", action="store_true",
                   help="take and return the recurrent state as well (streaming: out, state = f(chunk, state))")
    add_run_options(p)
    p.set_defaults(run=run)
    return p


@contextlib.contextmanager
def quiet_torch():
    """Without the exporters' notes that concern torch, not the user (torch 2.13: torchvision absent,
    a deprecated pytree check, the dynamic axes' names)."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used")
            yield
    finally:
        registration.setLevel(level)


@run_errors
def run(args) -> int:
    import torch

    from gatedrnn import export as exporting
    from gatedrnn.trained import load

    if args.format == "onnx":
        missing = exporting.missing_packages(("onnx", "onnxscript"))
        if missing:
            raise UsageError(f"--format onnx needs the {' and '.join(missing)} package(s): "
                             "pip install 'gatedrnn[export]' (onnx, onnxscript, onnxruntime)")  # fmt: skip
    if not args.out.parent.is_dir():
        raise UsageError(f"--out {args.out}: the folder {args.out.parent} does not exist")
    trained = load(args.run_dir, args.task, args.trust_edited)
    try:
        module, example = exporting.prepare(trained.model, args.stateful)
    except TypeError as error:
        raise UsageError(f"{args.run_dir}: {error}") from None
    with torch.no_grad(), quiet_torch():
        if args.format == "onnx":
            exporting.save_onnx(module, example, args.out)
        else:
            exporting.save_program(module, example, args.out)
    kind = "ONNX" if args.format == "onnx" else "exported program"
    state = ", state in and out" if args.stateful else ""
    print(f"wrote {args.out}: {kind} of the {trained.config.cell} {trained.task} model, inputs "
          f"{exporting.describe(example)} (batch and time dynamic{state})")  # fmt: skip
    B, T = 3, 17  # a size it was not traced at (exporting.EXAMPLE_SIZE)
    difference = exporting.check(module, args.out, args.format, B, T, args.stateful)
    if difference is None:
        print("onnxruntime is not installed: the file was not run (pip install onnxruntime)")
    else:
        runtime = "onnxruntime" if args.format == "onnx" else "the exported program"
        print(f"checked at batch {B}, length {T}: {runtime} vs PyTorch, max abs difference {difference:.2e}")
    return 0

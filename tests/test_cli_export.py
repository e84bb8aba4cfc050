"""`gatedrnn export RUN --format onnx|exported-program --out FILE [--stateful]`: the file runs at
sizes it was not traced at and equals the trained model; mistakes are one-line errors."""

from __future__ import annotations

import re

import pytest
import torch

import gatedrnn
from gatedrnn.cli import main

TINY = ["--hidden-size", "6", "--steps", "4", "--eval-every", "2", "--batch-size", "4", "--no-report"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    text = root / "corpus.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 30)
    adding, lm = root / "adding", root / "lm"
    assert main(["train", "--task", "adding", "--cell", "gru", "--length", "6", *TINY, "--out", str(adding)]) == 0
    assert main(["train", "--task", "text", "--cell", "lstm", "--peephole", "--data", str(text), *TINY,
                 "--out", str(lm)]) == 0  # fmt: skip
    return {"adding": adding, "lm": lm}


def printed_difference(out: str) -> float:
    match = re.search(r"checked at batch 3, length 17: .* max abs difference (\S+)", out)
    assert match, out
    return float(match.group(1))


def test_export_to_onnx_runs_in_onnxruntime_at_any_size(runs, tmp_path, capsys):
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name, reason=f"{name} is not installed: pip install -e '.[export]'")
    import onnxruntime

    out = tmp_path / "adding.onnx"
    assert main(["export", str(runs["adding"]), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}: ONNX of the gru adding model, inputs input (B, T, 2) float32" in printed
    assert printed_difference(printed) <= 1e-5
    model = gatedrnn.load(runs["adding"]).model
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for B, T in [(1, 1), (5, 30)]:
        x = torch.rand(B, T, 2)
        (got,) = session.run(None, {"input": x.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(got), model(x), atol=1e-5, rtol=0)


def test_export_a_stateful_language_model_as_an_exported_program_and_stream_it(runs, tmp_path, capsys):
    out = tmp_path / "lm.pt2"
    assert main(["export", str(runs["lm"]), "--format", "exported-program", "--stateful", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "inputs input (B, T) int64, h0 (1, B, 6) float32, c0 (1, B, 6) float32" in printed
    assert printed_difference(printed) <= 1e-5
    run = gatedrnn.load(runs["lm"])
    program = torch.export.load(str(out)).module()
    ids = run.vocab.encode(list("the lazy fox jumps"), "prompt")[None]  # (1, T)
    h = c = torch.zeros(1, 1, 6)
    logits = []
    with torch.no_grad():
        for chunk in ids.split([1, 5, 12], dim=1):
            out_chunk, h, c = program(chunk, h, c)
            logits.append(out_chunk)
        whole, (h_n, c_n) = run.model.stream(ids)
    torch.testing.assert_close(torch.cat(logits, 1), whole, atol=1e-5, rtol=0)
    torch.testing.assert_close((h, c), (h_n, c_n), atol=1e-5, rtol=0)


def test_export_mistakes_are_one_line_errors(runs, tmp_path, capsys, monkeypatch):
    assert main(["export", str(tmp_path / "nothing"), "--format", "exported-program", "--out",
                 str(tmp_path / "x.pt2")]) == 2  # fmt: skip
    assert "holds no run" in capsys.readouterr().err
    assert main(["export", str(runs["adding"]), "--format", "onnx", "--out", str(tmp_path / "no" / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "does not exist" in err and "Traceback" not in err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    assert main(["export", str(runs["adding"]), "--format", "onnx", "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "--format onnx needs the onnxscript package" in err and "gatedrnn[export]" in err
    assert not (tmp_path / "x.onnx").exists()


def test_only_sequence_models_export():
    from gatedrnn.export import prepare

    with pytest.raises(TypeError, match="this run's model is a Linear"):
        prepare(torch.nn.Linear(2, 2))

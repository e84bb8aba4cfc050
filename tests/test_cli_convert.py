"""`gatedrnn convert FILE --out FILE [--from keras|flax|haste] [--cell ...]`: the file it writes
loads and computes what the source computed; the difference it prints is measured, small; mistakes
are one-line errors; its help starts no torch."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest
import torch

import gatedrnn
from gatedrnn.cli import main
from gatedrnn.cli.convert import load_module, save_module


def printed_difference(out: str) -> float:
    match = re.search(r"max abs difference (\S+)", out)
    assert match, out
    return float(match.group(1))


def one_line_error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(match, err), err


def haste_lstm(tmp_path, name="haste.pt"):
    g = torch.Generator().manual_seed(0)
    H, I = 5, 3
    state = {"kernel": torch.randn(I, 4 * H, generator=g), "recurrent_kernel": 0.4 * torch.randn(H, 4 * H, generator=g),
             "bias": torch.randn(4 * H, generator=g), "gamma": 1 + 0.2 * torch.randn(2, 4 * H, generator=g),
             "gamma_h": 1 + 0.2 * torch.randn(H, generator=g), "beta_h": 0.2 * torch.randn(H, generator=g)}  # fmt: skip
    path = tmp_path / name
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_haste_state_dict_with_its_zoneout(tmp_path, capsys, suffix):
    source, state = haste_lstm(tmp_path)
    out = tmp_path / f"lstm{suffix}"
    assert main(["convert", str(source), "--from", "haste", "--cell", "layer_norm_lstm", "--zoneout", "0.1",
                 "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "converted the haste LayerNormLSTM" in printed and "weight_ih_l0 (20, 3)" in printed
    assert "vs haste's equations (float64)" in printed
    assert printed_difference(printed) <= 1e-5
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["haste.pt", out.name])  # no temporary left
    loaded = load_module(out)
    assert type(loaded) is gatedrnn.LSTM and loaded.layer_norm and loaded.zoneout_given() == (0.0, 0.1)
    expected = gatedrnn.convert.from_haste(state, "LayerNormLSTM", zoneout=0.1)
    for (k, a), (k2, b) in zip(loaded.state_dict().items(), expected.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    assert not loaded.training
    if suffix == ".pt":  # a dict of plain values and tensors: no pickle of code
        record = torch.load(out, weights_only=True)
        assert record["class"] == "LSTM" and record["config"]["layer_norm"] is True


def test_the_haste_cell_is_read_from_the_keys_and_batch_first_is_kept(tmp_path, capsys):
    g = torch.Generator().manual_seed(1)
    state = {"kernel": torch.randn(2, 12, generator=g), "recurrent_kernel": torch.randn(4, 12, generator=g),
             "bias": torch.randn(12, generator=g), "recurrent_bias": torch.randn(12, generator=g)}  # fmt: skip
    torch.save({"state_dict": {f"rnn.{k}": v for k, v in state.items()}}, tmp_path / "ckpt.pt")
    out = tmp_path / "gru.pt"
    assert main(["convert", str(tmp_path / "ckpt.pt"), "--from", "haste", "--batch-first", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "converted the haste GRU" in printed and printed_difference(printed) <= 1e-5
    loaded = load_module(out)
    assert type(loaded) is gatedrnn.GRU and loaded.batch_first


@pytest.fixture(scope="module")
def flax_files(tmp_path_factory):
    jax = pytest.importorskip("jax", reason="jax is not installed: pip install -e '.[interop]'")
    pytest.importorskip("flax", reason="flax is not installed: pip install -e '.[interop]'")
    import flax.linen as fnn
    import jax.numpy as jnp
    from flax import serialization

    root = tmp_path_factory.mktemp("flax")
    x = jnp.ones((2, 5, 3))
    bi = fnn.Bidirectional(fnn.RNN(fnn.LSTMCell(4)), fnn.RNN(fnn.LSTMCell(4)))
    variables = bi.init(jax.random.key(0), x)
    variables = jax.tree_util.tree_map(lambda a: a + 0.3, variables)  # nonzero biases
    (root / "bi.msgpack").write_bytes(serialization.to_bytes(variables))  # variables: {"params": ...}
    mgu = fnn.MGUCell(4)
    params = mgu.init(jax.random.key(1), jnp.zeros((2, 4)), jnp.ones((2, 3)))["params"]
    (root / "mgu.msgpack").write_bytes(serialization.msgpack_serialize(params))
    from flax import nnx

    nnx_gru = nnx.RNN(nnx.GRUCell(3, 4, rngs=nnx.Rngs(0)))  # an nnx module's state, as a plain dict
    (root / "nnx.msgpack").write_bytes(serialization.msgpack_serialize(nnx.to_pure_dict(nnx.state(nnx_gru, nnx.Param))))
    simple = fnn.RNN(fnn.SimpleCell(4, activation_fn=jax.nn.relu))
    (root / "relu.msgpack").write_bytes(serialization.to_bytes(simple.init(jax.random.key(2), x)["params"]))
    return root, variables["params"]


def test_a_flax_bidirectional_lstm(flax_files, tmp_path, capsys):
    root, params = flax_files
    out = tmp_path / "bi.safetensors"
    assert main(["convert", str(root / "bi.msgpack"), "--cell", "lstm", "--out", str(out)]) == 0  # --from: .msgpack
    printed = capsys.readouterr().out
    assert "converted the Flax LSTMCell" in printed and "weight_hh_l0_reverse (16, 4)" in printed
    assert "outputs and final states of Bidirectional(LSTMCell)" in printed
    assert printed_difference(printed) <= 1e-5
    loaded = load_module(out)
    assert type(loaded) is gatedrnn.LSTM and loaded.bidirectional and loaded.batch_first
    expected = gatedrnn.convert.from_flax(params, "LSTMCell")
    for (k, a), (k2, b) in zip(loaded.state_dict().items(), expected.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k


def test_a_flax_mgu_as_the_gru_that_computes_it_and_a_relu_simple_cell(flax_files, tmp_path, capsys):
    root, _ = flax_files
    one_line_error(capsys, ["convert", str(root / "mgu.msgpack"), "--cell", "mgu", "--out", str(tmp_path / "m.pt")],
                   r"gatedrnn convert: error: MGUCell: Flax's MGU .* --as-gru")  # fmt: skip
    assert not (tmp_path / "m.pt").exists()
    assert main(["convert", str(root / "mgu.msgpack"), "--cell", "mgu", "--as-gru", "--out", str(tmp_path / "m.pt")]) == 0
    printed = capsys.readouterr().out
    assert "one step of MGUCell" in printed and printed_difference(printed) <= 1e-5
    assert type(load_module(tmp_path / "m.pt")) is gatedrnn.GRUCell
    assert main(["convert", str(root / "relu.msgpack"), "--cell", "simple", "--activation", "relu",
                 "--out", str(tmp_path / "r.pt")]) == 0  # fmt: skip
    assert printed_difference(capsys.readouterr().out) <= 1e-5
    assert load_module(tmp_path / "r.pt").mode == "RNN_RELU"


def test_an_nnx_state_saved_as_a_plain_dict(flax_files, tmp_path, capsys):
    root, _ = flax_files
    assert main(["convert", str(root / "nnx.msgpack"), "--cell", "gru", "--out", str(tmp_path / "g.pt")]) == 0
    printed = capsys.readouterr().out
    assert "outputs and final states of RNN(GRUCell)" in printed and printed_difference(printed) <= 1e-5
    assert type(load_module(tmp_path / "g.pt")) is gatedrnn.GRU


def test_mistakes_are_one_line_errors(tmp_path, capsys):
    source, _ = haste_lstm(tmp_path)
    out = str(tmp_path / "x.pt")
    one_line_error(capsys, ["convert", str(source), "--out", out], r"say which framework wrote it: --from")
    one_line_error(capsys, ["convert", str(source), "--from", "haste", "--activation", "relu", "--out", out],
                   r"--activation is not an option of --from haste")  # fmt: skip
    one_line_error(capsys, ["convert", str(source), "--from", "haste", "--cell", "gru", "--out", out],
                   r"haste's GRU has .* \(is it a LayerNormLSTM\?\)")  # fmt: skip
    one_line_error(capsys, ["convert", str(source), "--from", "haste", "--zoneout", "1.5", "--out", out],
                   r"--zoneout must be a probability")  # fmt: skip
    one_line_error(capsys, ["convert", str(tmp_path / "missing.pt"), "--from", "haste", "--out", out], r"no such file")
    one_line_error(capsys, ["convert", str(source), "--from", "haste", "--out", str(tmp_path / "no" / "x.pt")],
                   r"does not exist")  # fmt: skip
    (tmp_path / "text.msgpack").write_text("not msgpack")
    if importlib.util.find_spec("flax") is not None:
        one_line_error(capsys, ["convert", str(tmp_path / "text.msgpack"), "--cell", "gru", "--out", out],
                       r"not a Flax msgpack file")  # fmt: skip
        one_line_error(capsys, ["convert", str(tmp_path / "text.msgpack"), "--out", out], r"--from flax needs --cell")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled.pt")  # a pickle of code: refused, not run
    one_line_error(capsys, ["convert", str(tmp_path / "pickled.pt"), "--from", "haste", "--out", out],
                   r"not a state dict torch.load reads with weights_only=True")  # fmt: skip
    assert not os.path.exists(out)


def test_load_module_refuses_other_files(tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a file gatedrnn convert wrote"):
        load_module(tmp_path / "plain.pt")
    path = tmp_path / "cell.pt"
    save_module(gatedrnn.ConvLSTMCell(2, 3, (3, 5)), path)
    assert load_module(path).kernel_size == (3, 5)


@pytest.mark.skipif(importlib.util.find_spec("gatedrnn.convert.keras") is None,
                    reason="gatedrnn/convert/keras.py is not there yet")  # fmt: skip
def test_a_keras_model_file(tmp_path, capsys):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras", reason="Keras 3 is not installed: pip install -e '.[interop]'")
    model = keras.Sequential([keras.Input((6,), dtype="int32"), keras.layers.Embedding(20, 4),
                              keras.layers.LSTM(5, return_sequences=True), keras.layers.Dense(3)])  # fmt: skip
    model.save(tmp_path / "model.keras")
    out = tmp_path / "model.pt"
    assert main(["convert", str(tmp_path / "model.keras"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "converted the Keras model" in printed and printed_difference(printed) <= 1e-5
    assert out.exists()
    one_line_error(capsys, ["convert", str(tmp_path / "model.keras"), "--out", str(tmp_path / "m.safetensors")],
                   r"written whole with torch.save, to a .pt file")  # fmt: skip


def test_its_help_starts_no_torch():
    code = ("import contextlib, io, sys\nfrom gatedrnn.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    try:\n        main(['convert', '--help'])\n"
            "    except SystemExit:\n        pass\nprint(json.dumps(sorted(m for m in ('torch', 'jax', 'flax', 'keras') if m in sys.modules)))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []

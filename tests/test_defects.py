"""Issue 27's small defects, each tested by what a user sees: the warning registry kept and
torch.nn's dropout warning; a torch.nn layer or cell pickled whole and loaded as gatedrnn's;
text scoring with characters the model never saw; a text too short for its batch; the report
of runs of different lengths; and the tests the mutation campaign found missing
(``forget_bias``'s block, gradient clipping)."""

import json
import pickle
import warnings

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import gatedrnn
from gatedrnn.cli import main
from gatedrnn.train import TrainConfig, train

sig, tanh = torch.sigmoid, torch.tanh
TINY = ["--hidden-size", "6", "--steps", "4", "--eval-every", "2", "--batch-size", "8", "--no-report"]
TORCH_DROPOUT = "dropout option adds dropout after all but last recurrent layer"  # torch.nn's warning text


# -- warnings ---------------------------------------------------------------------------


def _warn_here():
    warnings.warn("gatedrnn test: a warning shown once per place", UserWarning)


def test_building_a_layer_keeps_pythons_warning_registry():
    """A warning already shown at a place is not shown again after a layer is built (a
    ``warnings.catch_warnings()`` in the constructor reset the registry, so it was)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # once per place: what Python's registry remembers
        _warn_here()
        gatedrnn.LSTM(3, 4)
        gatedrnn.GRU(3, 4, num_layers=2, dropout=0.5)
        gatedrnn.RNN(3, 4)
        gatedrnn.MGU(3, 4)
        gatedrnn.LSTM.from_torch(torch.nn.LSTM(3, 4)).to_torch()
        _warn_here()
    assert [str(w.message) for w in caught] == ["gatedrnn test: a warning shown once per place"]


def test_the_dropout_warning_is_torchs_own_and_its_filter_silences_ours():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.nn.LSTM(3, 4, dropout=0.5)
        gatedrnn.LSTM(3, 4, dropout=0.5)
    (theirs, ours) = caught
    assert (str(ours.message), ours.category) == (str(theirs.message), theirs.category)
    assert str(ours.message).startswith(TORCH_DROPOUT)
    assert ours.filename == __file__  # the caller's line, not gatedrnn's or torch's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message=TORCH_DROPOUT)  # written for torch.nn's layers
        for cls in (gatedrnn.LSTM, gatedrnn.GRU, gatedrnn.RNN, gatedrnn.MGU):
            cls(3, 4, dropout=0.5)
    assert [str(w.message) for w in caught] == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        theirs = torch.nn.GRU(3, 4, dropout=0.25)  # warns once: the conversions do not warn again
        ours = gatedrnn.GRU.from_torch(theirs)
        back = ours.to_torch()
    assert len(caught) == 1 and ours.dropout == back.dropout == 0.25


# -- a torch.nn layer or cell pickled whole, loaded as gatedrnn's -----------------------


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"])
def test_a_torch_nn_module_pickled_whole_loads_and_runs_as_gatedrnns(name, monkeypatch):
    """torch.nn's classes swapped for gatedrnn's before unpickling (the pickle names
    ``torch.nn.modules.rnn.LSTM``): the state is torch.nn's, without gatedrnn's attributes,
    which take the constructor's defaults."""
    torch.manual_seed(0)
    layer = not name.endswith("Cell")
    theirs = getattr(torch.nn, name)(3, 4, **({"num_layers": 2} if layer else {}))
    data = pickle.dumps(theirs)
    monkeypatch.setattr(torch.nn.modules.rnn, name, getattr(gatedrnn, name))
    ours = pickle.loads(data)
    monkeypatch.undo()
    assert type(ours) is getattr(gatedrnn, name)
    assert repr(ours) == repr(theirs)
    x = torch.randn(5, 2, 3) if layer else torch.randn(2, 3)
    expected, got = theirs(x), ours(x)
    expected, got = (expected[0], got[0]) if layer or name == "LSTMCell" else (expected, got)
    torch.testing.assert_close(got, expected)
    if layer:
        assert (ours.backend, ours.recurrent_dropout, ours.weight_dropout) == ("auto", 0.0, 0.0)
        assert ours.zoneout == ((0.0, 0.0) if name == "LSTM" else (0.0,))
        for backend in ("reference", "fused"):  # every path reads the defaults
            ours.backend = backend
            torch.testing.assert_close(ours(x)[0], expected[0] if isinstance(expected, tuple) else expected)


def test_a_gatedrnn_layer_pickled_whole_keeps_its_options():
    layer = gatedrnn.LSTM(3, 4, backend="reference", forget_bias=1.0, zoneout=0.1, peephole=True)
    loaded = pickle.loads(pickle.dumps(layer))
    assert repr(loaded) == repr(layer) and loaded.backend == "reference" and loaded.peephole


# -- forget_bias: in the forget gate's block, recomputed from the equations ----------------


def _gates(a, H, coupled, forget_bias):
    """i, f, g, o from the plain cell's pre-activations ``a`` (B, 4H) (coupled: f, g, o and i = 1 - f),
    ``forget_bias`` added to the forget gate's."""
    if coupled:
        a_f, a_g, a_o = a.split(H, dim=-1)
        f = sig(a_f + forget_bias)
        return 1 - f, f, tanh(a_g), sig(a_o)
    a_i, a_f, a_g, a_o = a.split(H, dim=-1)
    return sig(a_i), sig(a_f + forget_bias), tanh(a_g), sig(a_o)


@pytest.mark.parametrize("coupled", [False, True])
def test_lstm_cells_forget_bias_lands_in_the_forget_gate(coupled):
    H, b = 4, 2.5
    torch.manual_seed(0)
    plain = gatedrnn.LSTMCell(3, H, coupled=coupled).double()
    torch.manual_seed(0)
    biased = gatedrnn.LSTMCell(3, H, coupled=coupled, forget_bias=b).double()
    x, h, c = (torch.randn(2, n, dtype=torch.float64) for n in (3, H, H))
    h_new, c_new, trace = biased(x, (h, c), return_trace=True)
    a = x @ plain.weight_ih.T + plain.bias_ih + h @ plain.weight_hh.T + plain.bias_hh  # (B, 4H), or (B, 3H)
    i, f, g, o = _gates(a, H, coupled, b)
    for name, value in (("input", i), ("forget", f), ("candidate", g), ("output", o)):
        torch.testing.assert_close(trace[name], value, msg=name)
    torch.testing.assert_close(c_new, f * c + i * g)
    torch.testing.assert_close(h_new, o * tanh(f * c + i * g))
    torch.testing.assert_close(biased.bias_hh, plain.bias_hh)


@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize("coupled", [False, True])
def test_lstm_layers_forget_bias_lands_in_the_forget_gate(backend, coupled):
    H, b = 4, 2.5
    torch.manual_seed(0)
    plain = gatedrnn.LSTM(3, H, coupled=coupled).double()
    torch.manual_seed(0)
    biased = gatedrnn.LSTM(3, H, coupled=coupled, forget_bias=b, backend=backend).double()
    x, h, c = torch.randn(1, 2, 3, dtype=torch.float64), *torch.randn(2, 1, 2, H, dtype=torch.float64)
    _, _, trace = biased(x, (h, c), return_trace=True)
    a = x[0] @ plain.weight_ih_l0.T + plain.bias_ih_l0 + h[0] @ plain.weight_hh_l0.T + plain.bias_hh_l0
    for name, value in zip(("input", "forget", "candidate", "output"), _gates(a, H, coupled, b)):
        torch.testing.assert_close(trace[name][0, 0], value, msg=name)


# -- gradient clipping ------------------------------------------------------------------


def _gradients_stepped_with(clip, run_dir):
    """Every gradient the optimizer stepped with (flattened), in a short run clipped at ``clip``,
    and the run's logged rows."""
    seen = []

    def record(optimizer, args, kwargs):
        grads = [p.grad.flatten() for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        seen.append(torch.cat(grads).double())

    config = TrainConfig(task="adding", cell="lstm", length=8, hidden_size=16, batch_size=16, steps=10, eval_every=10,
                         lr=1e-2, seed=3, clip=clip)  # fmt: skip
    handle = register_optimizer_step_pre_hook(record)
    try:
        train(config, run_dir, progress=False)
    finally:
        handle.remove()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return seen, rows


def test_clip_bounds_the_gradient_norm_the_optimizer_steps_with_and_zero_turns_it_off(tmp_path):
    clip = 1e-3
    raw, raw_rows = _gradients_stepped_with(0, tmp_path / "off")
    clipped, rows = _gradients_stepped_with(clip, tmp_path / "on")
    assert len(raw) == len(clipped) == 10
    # off: the optimizer steps with the whole gradient, the norm the log reports
    assert all(g.norm() > 10 * clip for g in raw)
    logged = next(r["grad_norm"] for r in raw_rows if r["split"] == "train" and r["step"] == 10)
    assert raw[-1].norm().item() == pytest.approx(logged, rel=1e-5)
    # on: every step's gradient within the bound; the first is the same gradient scaled down to it
    assert all(g.norm() <= clip * (1 + 1e-5) for g in clipped)
    torch.testing.assert_close(clipped[0], raw[0] * clip / raw[0].norm(), rtol=1e-5, atol=1e-12)
    logged = next(r["grad_norm"] for r in rows if r["split"] == "train" and r["step"] == 10)
    assert logged > 10 * clip  # the log keeps the norm before clipping


# -- text: characters the model never saw, files too short, bytes that are not UTF-8 ---------


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("char")
    corpus = folder / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n" * 20)
    run = folder / "run"
    assert main(["train", "--task", "text", "--data", str(corpus), "--cell", "lstm", "--bptt", "16", *TINY,
                 "--out", str(run)]) == 0  # fmt: skip
    return run


def test_text_scoring_leaves_out_unknown_characters_counts_and_names_them(char_run, tmp_path, capsys):
    """A character model has no <unk>: an unknown character is left out (neither read nor
    scored), so the file scores as the same file without it; counted and named."""
    known = "a lazy fox.\nthe dog jumps\nover"
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("a lazy fox.\nthe d\u00e9og jumps\u2211\nover")  # é at line 2, column 6; ∑ on line 2 too
    without = tmp_path / "without.txt"
    without.write_text(known)
    capsys.readouterr()
    for path in (unknown, without):
        assert main(["predict", str(char_run), "--input", str(path), "--out", str(path.with_suffix(".csv")),
                     "--per-line"]) == 0  # fmt: skip
        assert main(["predict", str(char_run), "--input", str(path), "--out", str(path.with_suffix(".json"))]) == 0
    out = capsys.readouterr().out
    assert unknown.with_suffix(".csv").read_text() == without.with_suffix(".csv").read_text()
    scored, plain = (json.loads(p.with_suffix(".json").read_text()) for p in (unknown, without))
    assert scored["unknown characters"] == 2 and plain["unknown characters"] == 0
    assert {k: v for k, v in scored.items() if k not in ("input", "unknown characters")} == \
        {k: v for k, v in plain.items() if k not in ("input", "unknown characters")}  # fmt: skip
    assert (f"{unknown}: 30 char tokens scored" in out
            and "; 2 unknown characters not in the model's vocabulary (the first: '\u00e9' at line 2, column 6) "
                "left out, neither read nor scored" in out)  # fmt: skip
    assert f"{without}: 30 char tokens scored" in out and "unknown" not in out.split(str(without))[1].split("\n")[0]


@pytest.mark.parametrize("has_unk", [True, False])
def test_word_scoring_reads_unknown_words_as_unk_or_leaves_them_out(has_unk, tmp_path, capsys):
    """The same rule at the word level: ``<unk>`` where the vocabulary has it, else left out."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(("the cat sat on the mat\na dog ran " + ("<unk>" if has_unk else "far") + "\n") * 30)
    run = tmp_path / "run"
    assert main(["train", "--task", "text", "--level", "word", "--data", str(corpus), "--bptt", "8", *TINY,
                 "--out", str(run)]) == 0  # fmt: skip
    scored, same = tmp_path / "scored.txt", tmp_path / "same.txt"
    scored.write_text("the cat sat\na zebra ran on the mat\n")
    same.write_text("the cat sat\na " + ("<unk> " if has_unk else "") + "ran on the mat\n")
    for path in (scored, same):
        assert main(["predict", str(run), "--input", str(path), "--out", str(path.with_suffix(".json"))]) == 0
    out = capsys.readouterr().out
    a, b = (json.loads(p.with_suffix(".json").read_text()) for p in (scored, same))
    assert a["unknown words"] == 1 and a["tokens"] == b["tokens"] == (11 if has_unk else 10)
    assert a["loss"] == b["loss"]
    told = ("1 unknown word read as <unk>" if has_unk else
            "1 unknown word not in the model's vocabulary (the first: 'zebra' at line 2, word 2) left out")  # fmt: skip
    assert told in out


def test_a_text_file_too_short_for_its_batch_is_one_line_naming_the_file(tmp_path, capsys):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("hello world, this is a tiny file.\n" * 3)  # 102 characters: 86 train the model
    cases = [
        ([str(tiny), "--batch-size", "64"],
         (f"{tiny}: its training split (the first 85%) holds 86 char tokens; --batch-size 64 needs 128 "
          "(64 streams of 2 tokens or more): lower --batch-size to 43 or give a longer text")),
        ([str(tiny), "--batch-size", "50", "--bptt", "500"],
         f"{tiny}: its training split (the first 85%) holds 86 char tokens; --batch-size 50 needs 100 "),
    ]  # fmt: skip
    twenty = tmp_path / "twenty.txt"
    twenty.write_text("abcdefghij\nabcdefgh\n")  # 20 characters: the test split gets 1 (found after training, before)
    cases.append(([str(twenty), "--batch-size", "2"],
                  (f"{twenty}: its test split (the 5% before the last 10%) holds 1 char token; scoring needs 2 "
                   "(a token and the one after it): give a longer text")))  # fmt: skip
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "train.txt").write_text("abcab")
    (folder / "valid.txt").write_text("abcabcabc")
    (folder / "test.txt").write_text("abcabcabc")
    cases.append(([str(folder), "--batch-size", "4"],
                  (f"{folder / 'train.txt'}: holds 5 char tokens; --batch-size 4 needs 8 (4 streams of 2 tokens "
                   "or more): lower --batch-size to 2 or give a longer text")))  # fmt: skip
    for args, message in cases:
        out = tmp_path / "run"
        assert main(["train", "--task", "text", "--data", *args, "--hidden-size", "6", "--steps", "2",
                     "--no-report", "--out", str(out)]) == 2, message  # fmt: skip
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert not (out / "checkpoint.safetensors").exists()


def test_text_that_is_not_utf8_names_its_file(char_run, tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("the dog\nd\u00e9j\u00e0 vu\n".encode("latin-1"))
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        (folder / name).write_text("the quick brown fox\n" * 5)
    (folder / "valid.txt").write_bytes(bad.read_bytes())
    commands = [["train", "--task", "text", "--data", str(bad), *TINY, "--out", str(tmp_path / "a")],
                ["train", "--task", "text", "--data", str(folder), *TINY, "--out", str(tmp_path / "b")],
                ["predict", str(char_run), "--input", str(bad), "--out", str(tmp_path / "c.csv")]]  # fmt: skip
    for command, file in zip(commands, (bad, folder / "valid.txt", bad)):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"{file}: not UTF-8 text (byte 9, line 2)" in err and len(err.strip().splitlines()) == 1, err


# -- report: runs of another task or length -----------------------------------------------


def test_a_report_of_runs_at_different_lengths_says_how_they_differ(tmp_path, capsys):
    short, long = tmp_path / "short", tmp_path / "long"
    for run, length in ((short, "5"), (long, "7")):
        assert main(["train", "--task", "adding", "--length", length, *TINY, "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["report", str(short), str(long), "--out", str(tmp_path / "both")]) == 2
    err = capsys.readouterr().err
    assert (f"{short} is adding, T = 5 and {long} is adding, T = 7: a report compares runs of one task at one "
            "length") in err and len(err.strip().splitlines()) == 1, err  # fmt: skip
    assert not (tmp_path / "both").exists()

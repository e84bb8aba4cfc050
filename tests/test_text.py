"""The text task: vocabulary, splits, streams, metrics, a short run, generation, errors."""

import math

import pytest
import torch

from gatedrnn.cli import main
from gatedrnn.models import SequenceModel
from gatedrnn.tasks.data import DataError
from gatedrnn.tasks.text import EOS, Text, load_splits, streams, tokenize


def test_tokenize_and_splits_of_a_file(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("abcab" * 20)
    vocab, ids = load_splits(f, "char")
    assert vocab.tokens == ["a", "b", "c"]
    # nanoGPT's validation split (the last 10%), a distinct test split before it, training the first 85%
    assert (len(ids["train"]), len(ids["test"]), len(ids["valid"])) == (85, 5, 10)
    assert torch.equal(torch.cat([ids["train"], ids["test"], ids["valid"]]), vocab.encode(list("abcab" * 20)))
    assert vocab.decode(ids["train"][:5].tolist()) == "abcab"
    assert tokenize("the cat\n\nsat down \n", "word") == ["the", "cat", EOS, "sat", "down", EOS]


def test_ptb_folder_is_used_as_given(shared_data):
    vocab, ids = load_splits(shared_data("ptb"), "word")
    assert (len(ids["train"]), len(ids["valid"]), len(ids["test"])) == (929_589, 73_760, 82_430)
    assert len(vocab.tokens) == 10_000


def test_streams_and_batches_continue_each_other(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("".join(chr(97 + i % 26) for i in range(1000)))
    task = Text(str(f), batch_size=4, bptt=10)
    x0, y0 = task.train_batch(0, 4, 0)
    x1, _ = task.train_batch(1, 4, 0)
    assert x0.shape == (4, 10) and torch.equal(x0[:, 1:], y0[:, :-1])
    assert torch.equal(x1[:, 0], y0[:, -1])  # the next batch starts where this one ended
    assert task.starts_sequence(0) and not task.starts_sequence(1)
    assert task.starts_sequence(task.batches_per_epoch)
    assert streams(torch.arange(10), 3).shape == (3, 3)


def test_metrics_match_hand_computation(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("ab" * 100)
    task = Text(str(f), batch_size=2, bptt=4)
    logits = torch.zeros(1, 3, 2)  # uniform over 2 tokens: ln 2 nats, 1 bit, perplexity 2
    m = task.metrics(logits, torch.tensor([[0, 1, 0]]))
    assert m["loss"] == pytest.approx(math.log(2)) and m["bpc"] == pytest.approx(1.0)
    assert m["perplexity"] == pytest.approx(2.0)
    assert task.baseline == pytest.approx(math.log(2), rel=1e-3)  # unigram entropy of "abab..."


def test_short_run_beats_the_unigram_baseline_and_generates(tmp_path, shared_data, capsys):
    text = shared_data("tinyshakespeare.txt").read_text()[:60_000]
    data = tmp_path / "shakespeare.txt"
    data.write_text(text)
    run = tmp_path / "run"
    code = main(["train", "--task", "text", "--data", str(data), "--cell", "gru", "--hidden-size", "64",
                 "--batch-size", "16", "--bptt", "32", "--steps", "150", "--lr", "1e-2", "--eval-every", "50",
                 "--out", str(run), "--no-report"])  # fmt: skip
    assert code == 0
    result = __import__("json").loads((run / "result.json").read_text())
    assert result["test"]["loss"] < Text(str(data), 16, bptt=32).baseline - 0.4
    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", "ROMEO:", "--length", "120", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ROMEO:") and len(out) == len("ROMEO:") + 120 + 1
    assert main(["generate", str(run), "--prompt", "ROMEO:", "--length", "120", "--seed", "1"]) == 0
    assert capsys.readouterr().out == out  # seeded
    assert main(["generate", str(run), "--prompt", "ROMEO ∑"]) == 2
    assert "'∑' (position 6) is not in the model's vocabulary" in capsys.readouterr().err


def test_bad_text_files(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\nna\xefve".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt: not UTF-8 text \(byte 3, line 1\)"):
        load_splits(tmp_path / "latin1.txt", "char")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(DataError, match="empty.txt: is empty"):
        load_splits(tmp_path / "empty.txt", "char")
    with pytest.raises(DataError, match="missing.txt: no such file"):
        load_splits(tmp_path / "missing.txt", "char")
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "train.txt").write_text("a b\n")
    with pytest.raises(DataError, match="needs train.txt, valid.txt and test.txt"):
        load_splits(tmp_path / "corpus", "word")


def test_cli_names_the_bad_file_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe")
    run = tmp_path / "run"
    assert main(["train", "--task", "text", "--data", str(tmp_path / "bad.txt"), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "bad.txt: not UTF-8 text" in err and err.count("\n") == 1
    assert not run.exists() or not any(run.iterdir())


def test_tied_weights_share_one_table_and_its_gradient():
    torch.manual_seed(0)
    tied = SequenceModel("lstm", 8, 8, 11, vocab_size=11, tie_weights=True)
    untied = SequenceModel("lstm", 8, 8, 11, vocab_size=11)
    untied.load_state_dict({k: v for k, v in tied.state_dict().items() if k != "head_bias"}, strict=False)
    with torch.no_grad():
        untied.head.weight.copy_(tied.embed.weight)
        untied.head.bias.copy_(tied.head_bias)
    assert "head.weight" not in tied.state_dict() and len(list(tied.parameters())) == len(list(untied.parameters())) - 1
    x = torch.randint(0, 11, (3, 5))
    torch.testing.assert_close(tied(x), untied(x))
    tied(x).square().sum().backward()
    untied(x).square().sum().backward()
    # the shared table collects the gradient of both of its uses
    torch.testing.assert_close(tied.embed.weight.grad, untied.embed.weight.grad + untied.head.weight.grad)
    with pytest.raises(ValueError, match=r"--tie-weights\) needs the embedding size to equal the hidden size"):
        SequenceModel("gru", 4, 8, 11, vocab_size=11, tie_weights=True)
    with pytest.raises(ValueError, match="needs token inputs"):
        SequenceModel("gru", 8, 8, 11, tie_weights=True)


def test_adaptive_softmax_is_a_normalised_distribution_scored_per_target():
    torch.manual_seed(0)
    model = SequenceModel("gru", 16, 16, 12, vocab_size=12, adaptive_softmax=(3, 7))
    x, y = torch.randint(0, 12, (2, 5)), torch.randint(0, 12, (2, 5))
    log_probs = model(x)  # (B, T, V)
    torch.testing.assert_close(log_probs.logsumexp(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    h, _ = model.hidden(x)
    nll = model.token_nll(h, y)  # the fast path: only each target's cluster
    torch.testing.assert_close(nll, -log_probs.gather(-1, y[..., None])[..., 0])
    nll.sum().backward()
    assert all(p.grad is not None for p in model.head.parameters())
    for bad, message in [(dict(adaptive_softmax=(7, 3)), "must increase strictly"),
                         (dict(adaptive_softmax=(3, 12)), "must increase strictly"),
                         (dict(adaptive_softmax=(2, 4, 7)), "leave the last cluster hidden_size // 4\\^3 = 0"),
                         (dict(adaptive_softmax=(3,), tie_weights=True), "cannot be combined")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            SequenceModel("gru", 16, 16, 12, vocab_size=12, **bad)


def test_frequency_ordered_vocabulary(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("b a b c b a\n" * 5)
    vocab, ids = load_splits(f, "word", by_frequency=True)
    assert vocab.tokens == ["b", "a", EOS, "c"]  # b 15, a 10, <eos> and c 5 (ties alphabetical)
    assert load_splits(f, "word")[0].tokens == [EOS, "a", "b", "c"]
    assert vocab.decode(ids["train"][:6].tolist()) == "b a b c b a"


@pytest.mark.parametrize("head", [["--tie-weights"], ["--adaptive-softmax", "2,5"]], ids=["tied", "adaptive"])
def test_language_model_heads_train_resume_and_generate(tmp_path, capsys, head):
    data = tmp_path / "words.txt"
    data.write_text("the cat sat on the mat\nthe dog sat on the log\n" * 40)
    run = tmp_path / "run"
    args = ["train", "--task", "text", "--data", str(data), "--level", "word", *head,
            "--hidden-size", "16", "--batch-size", "4", "--bptt", "6", "--lr", "2e-2", "--eval-every", "10",
            "--out", str(run), "--no-report"]  # fmt: skip
    assert main(args + ["--steps", "10"]) == 0
    assert main(args + ["--steps", "30", "--resume"]) == 0
    result = __import__("json").loads((run / "result.json").read_text())
    assert result["step"] == 30 and result["test"]["loss"] < Text(str(data), 4, level="word", bptt=6).baseline
    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", "the cat", "--length", "5", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    sampled = out[len("the cat") : -1]  # the final newline closes the output; "<eos>" is written as a newline
    assert out.startswith("the cat") and len(sampled.split()) + sampled.count("\n") == 5


def test_head_options_are_checked(tmp_path, capsys):
    data = tmp_path / "words.txt"
    data.write_text("the cat sat on the mat\n" * 10)
    code = main(["train", "--task", "text", "--data", str(data), "--tie-weights", "--embedding-size", "8",
                 "--out", str(tmp_path / "a")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--tie-weights) needs the embedding size to equal the hidden size, got 8 and 64" in err
    code = main(["train", "--task", "text", "--data", str(data), "--level", "word", "--adaptive-softmax", "3,50", "--batch-size", "4",
                 "--out", str(tmp_path / "b")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "cutoffs must increase strictly between 1 and the vocabulary size 5, got [3, 50]" in err
    with pytest.raises(SystemExit):
        main(["train", "--task", "text", "--adaptive-softmax", "5,x", "--out", str(tmp_path / "c")])
    assert "--adaptive-softmax: expected increasing integers separated by commas, got '5,x'" in capsys.readouterr().err

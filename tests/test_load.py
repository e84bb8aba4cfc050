"""gatedrnn.load: a trained run's model in one call, equal to the trained one, rebuilt without
reading the training data; old runs (no model.json) still load; a wrong folder is a clear error."""

import pytest
import torch

import gatedrnn
from gatedrnn.cli import main

TINY = ["--hidden-size", "4", "--steps", "4", "--eval-every", "2", "--batch-size", "4", "--no-report"]


def _run(tmp_path, name, *args):
    run = tmp_path / name
    assert main(["train", *args, *TINY, "--out", str(run)]) == 0
    return run


def test_loaded_model_is_the_trained_one_and_reads_no_data(tmp_path, monkeypatch):
    from gatedrnn import checkpoint
    from gatedrnn.train import build, load_config

    text = tmp_path / "corpus.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 30)
    runs = [_run(tmp_path, "adding", "--task", "adding", "--cell", "gru", "--length", "6"),
            _run(tmp_path, "text", "--task", "text", "--cell", "lstm", "--data", str(text), "--peephole")]  # fmt: skip
    references = []
    for run in runs:
        _, model = build(load_config(run), run)
        checkpoint.load_model(run, model)
        references.append(model.eval())
    import gatedrnn.runs
    import gatedrnn.tasks.base
    import gatedrnn.tasks.text

    def no_data(*args, **kwargs):
        raise AssertionError("gatedrnn.load read the training data")

    monkeypatch.setattr(gatedrnn.runs, "build", no_data)  # the task with its data, and a model
    monkeypatch.setattr(gatedrnn.tasks.base.Task, "from_config", no_data)
    monkeypatch.setattr(gatedrnn.tasks.text.Text, "from_config", no_data)
    monkeypatch.setattr(gatedrnn.tasks.text, "load_splits", no_data)
    adding, textrun = (gatedrnn.load(run) for run in runs)
    assert not adding.model.training and adding.task == "adding" and adding.result["status"] == "done"
    x = torch.rand(3, 6, 2)
    torch.testing.assert_close(adding.model(x), references[0](x))
    ids = textrun.vocab.encode(list("the fox"), "prompt")[None]  # (1, T) token ids
    torch.testing.assert_close(textrun.model(ids), references[1](ids))
    assert textrun.config.peephole


def test_a_run_without_model_json_still_loads(tmp_path):
    from test_manifest import as_an_earlier_version

    run = _run(tmp_path, "old", "--task", "adding", "--cell", "rnn", "--length", "6")
    as_an_earlier_version(run)  # no manifest, and
    (run / "model.json").unlink()  # as runs trained before model.json existed
    assert gatedrnn.load(run).model(torch.rand(1, 6, 2)).shape == (1, 1)


def test_an_edited_run_loads_only_when_trusted(tmp_path, capsys):
    import json

    from gatedrnn.manifest import ManifestError

    run = _run(tmp_path, "edited", "--task", "adding", "--cell", "gru", "--length", "6")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "reset_after": False}))  # another GRU, the same weights
    with pytest.raises(ManifestError, match=f"{run / 'config.json'} is not the file the run's checkpoint was written "
                                            "with"):  # fmt: skip
        gatedrnn.load(run)
    capsys.readouterr()
    assert gatedrnn.load(run, trust_edited=True).config.reset_after is False
    assert f"{run / 'config.json'} is not the file the run's checkpoint was written with; used as it is" in (
        capsys.readouterr().err)  # fmt: skip


def test_not_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no run"):
        gatedrnn.load(tmp_path)

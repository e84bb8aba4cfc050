"""Training in mixed bfloat16 (``--precision bfloat16``, ``TrainConfig.precision``): the
forward and the loss run under autocast (seen from inside the model), the weights, optimizer
state and checkpoint stay float32, the loss stays finite, evaluation and prediction compute as
the run trained, a resume keeps the precision; float32, the default, is the same run bit for bit."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

import gatedrnn
from gatedrnn.cli import main
from gatedrnn.config import TrainConfig
from gatedrnn.models import SequenceModel
from gatedrnn.tasks.adding import Adding
from gatedrnn.train import train

TINY = ["--task", "adding", "--length", "12", "--hidden-size", "16", "--batch-size", "8", "--steps", "6",
        "--eval-every", "3", "--no-report"]  # fmt: skip


@pytest.fixture
def seen(monkeypatch):
    """What every ``nn.Linear`` saw while it ran: (autocast on the CPU, grad mode, its output's
    dtype); and the dtype of the model outputs the adding task's loss and metrics received."""
    records = {"linear": [], "loss": [], "metrics": []}

    def hook(module, args, output):
        if isinstance(module, torch.nn.Linear):
            records["linear"].append((torch.is_autocast_enabled("cpu"), torch.is_grad_enabled(), output.dtype))

    def recording(name):
        real = getattr(Adding, name)

        def recorded(self, output, target):
            records[name].append(output.dtype)
            return real(self, output, target)

        return recorded

    for name in ("loss", "metrics"):
        monkeypatch.setattr(Adding, name, recording(name))
    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    yield records
    handle.remove()


def checkpoint_tensors(run):
    return load_file(str(run / "checkpoint.safetensors"))


# -- the setting ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["half", "bf16", "float16", ""])
def test_an_unknown_precision_is_refused_naming_the_field_and_the_values(value):
    with pytest.raises(ValueError) as error:
        TrainConfig(precision=value).validate()
    assert str(error.value) == f"--precision must be float32 or bfloat16, got {value!r}"


def test_a_precision_of_the_wrong_type_in_a_file_is_refused():
    with pytest.raises(ValueError, match="precision must be a string, got 16"):
        TrainConfig.from_dict({"precision": 16})


def test_the_command_refuses_an_unknown_precision(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", *TINY, "--precision", "half", "--out", str(tmp_path / "run")])
    assert exited.value.code == 2
    assert "--precision: invalid choice: 'half' (choose from 'float32', 'bfloat16')" in capsys.readouterr().err
    options = tmp_path / "options.json"  # the same value from a file: TrainConfig.validate's one line
    options.write_text(json.dumps({"precision": "half"}))
    assert main(["train", *TINY, "--config", str(options), "--out", str(tmp_path / "run")]) == 2
    assert "--precision must be float32 or bfloat16, got 'half'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_device_without_bfloat16_autocast_stops_the_run_before_it_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda kind: False)
    config = TrainConfig(length=12, hidden_size=16, steps=2, precision="bfloat16")
    with pytest.raises(ValueError, match=r"^--precision bfloat16: torch cannot autocast on --device cpu; train in "
                                         r"--precision float32 there$"):  # fmt: skip
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    TrainConfig(precision="float32").autocast_device()  # float32 asks nothing of the device


def test_a_gpu_without_bfloat16_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Old GPU")
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda kind: True)
    with pytest.raises(ValueError, match=r"the GPU of --device cuda:1 \(Old GPU\) has no bfloat16"):
        TrainConfig(precision="bfloat16", device="cuda:1").autocast_device()


# -- the block the model computes in ----------------------------------------------------------


def test_mixed_precision_autocasts_inside_and_returns_float32():
    torch.manual_seed(0)
    model = SequenceModel("lstm", 3, 16, 2)
    x = torch.randn(4, 9, 3)
    with TrainConfig(precision="bfloat16").mixed_precision(model):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        output, (h, c) = model(x, return_state=True)
        inner = model.head(torch.randn(2, 16))  # a submodule called alone: its own output, not the model's
    assert not torch.is_autocast_enabled("cpu")
    assert not model._forward_hooks  # the hook is gone with the block
    assert inner.dtype == torch.bfloat16  # the products did run in bfloat16
    assert output.dtype == h.dtype == c.dtype == torch.float32  # the loss, the metrics and a carry: float32
    reference = model(x)  # float32; the bfloat16 output agrees to bfloat16's precision (8 bits)
    assert not torch.equal(output, reference)
    torch.testing.assert_close(output, reference, atol=3e-2, rtol=3e-2)


def test_mixed_precision_ends_cleanly_on_an_error():
    model = SequenceModel("gru", 2, 8, 1)
    with pytest.raises(RuntimeError, match="inside"), TrainConfig(precision="bfloat16").mixed_precision(model):
        raise RuntimeError("inside")
    assert not torch.is_autocast_enabled("cpu") and not model._forward_hooks


def test_float32_changes_nothing():
    model = SequenceModel("gru", 2, 8, 1)
    with TrainConfig().mixed_precision(model):
        assert not torch.is_autocast_enabled("cpu") and not model._forward_hooks
        assert model(torch.rand(2, 5, 2)).dtype == torch.float32


# -- training ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_bfloat16_run_trains_under_autocast_and_keeps_float32_weights(tmp_path, seen, cell):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--cell", cell, "--precision", "bfloat16", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["precision"] == "bfloat16"
    # Every forward, training (grad on) and evaluation (grad off) alike, ran under autocast:
    # the readout's product in bfloat16, the model's output handed to the loss in float32.
    assert seen["linear"] and all(on and dtype == torch.bfloat16 for on, _, dtype in seen["linear"])
    assert {grad for _, grad, _ in seen["linear"]} == {True, False}
    assert seen["loss"] and seen["metrics"] and set(seen["loss"] + seen["metrics"]) == {torch.float32}
    tensors = checkpoint_tensors(run)
    weights = {k: v for k, v in tensors.items() if k.startswith("model.")}
    assert weights and all(v.dtype == torch.float32 for v in weights.values())
    floating = [v for v in tensors.values() if v.is_floating_point()]  # optimizer moments too
    assert all(v.dtype == torch.float32 for v in floating)
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["split"] == "train"]  # fmt: skip
    test = json.loads((run / "result.json").read_text())["test"]["mse"]
    assert losses and all(math.isfinite(v) for v in losses) and math.isfinite(test)
    loaded = gatedrnn.load(run)  # float32 weights, loaded into a float32 model
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())


def test_the_default_float32_run_never_autocasts_and_is_the_same_run(tmp_path, seen):
    assert main(["train", *TINY, "--cell", "gru", "--out", str(tmp_path / "unset")]) == 0
    assert seen["linear"] and not any(on for on, _, _ in seen["linear"])
    assert {dtype for _, _, dtype in seen["linear"]} == {torch.float32}
    assert "precision" not in json.loads((tmp_path / "unset" / "config.json").read_text())  # float32: left out
    assert main(["train", *TINY, "--cell", "gru", "--precision", "float32", "--out", str(tmp_path / "float32")]) == 0
    assert main(["train", *TINY, "--cell", "gru", "--precision", "bfloat16", "--out", str(tmp_path / "bf16")]) == 0
    unset, float32, bf16 = (checkpoint_tensors(tmp_path / name) for name in ("unset", "float32", "bf16"))
    weights = [k for k in unset if k.startswith("model.")]
    assert all(torch.equal(unset[k], float32[k]) for k in weights)  # bit for bit
    assert not all(torch.equal(unset[k], bf16[k]) for k in weights)  # the setting does change the arithmetic
    for name in ("unset", "float32"):
        assert json.loads((tmp_path / name / "result.json").read_text())["test"] == \
               json.loads((tmp_path / "unset" / "result.json").read_text())["test"]  # fmt: skip


def test_a_resumed_run_keeps_its_precision(tmp_path, seen, capsys):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["train", *TINY, "--cell", "lstm", "--precision", "bfloat16", "--out", str(straight)]) == 0
    short = [a if a != "6" else "3" for a in TINY]  # --steps 3, then resumed to 6
    assert main(["train", *short, "--cell", "lstm", "--precision", "bfloat16", "--out", str(resumed)]) == 0
    seen["linear"].clear()
    assert main(["train", "--out", str(resumed), "--resume", "--steps", "6", "--no-report"]) == 0
    assert seen["linear"] and all(on and dtype == torch.bfloat16 for on, _, dtype in seen["linear"])
    assert json.loads((resumed / "config.json").read_text())["precision"] == "bfloat16"
    a, b = checkpoint_tensors(straight), checkpoint_tensors(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))  # the same run as never stopped
    capsys.readouterr()
    assert main(["train", "--out", str(resumed), "--resume", "--steps", "9", "--precision", "float32",
                 "--no-report"]) == 2  # fmt: skip
    assert "holds a run with precision='bfloat16', not 'float32'" in capsys.readouterr().err


def test_a_stateful_text_run_in_bfloat16_carries_float32_state_and_predicts_as_it_trained(tmp_path, seen):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n" * 20)
    run = tmp_path / "text"
    assert main(["train", "--task", "text", "--data", str(corpus), "--cell", "gru", "--bptt", "16",
                 "--hidden-size", "16", "--batch-size", "4", "--steps", "4", "--eval-every", "2",
                 "--precision", "bfloat16", "--no-report", "--out", str(run)]) == 0  # fmt: skip
    tensors = checkpoint_tensors(run)
    carried = [k for k in tensors if k.startswith("carry")]
    assert carried and all(tensors[k].dtype == torch.float32 for k in carried)  # the state between batches
    assert all(v.dtype == torch.float32 for v in tensors.values() if v.is_floating_point())
    assert math.isfinite(json.loads((run / "result.json").read_text())["test"]["loss"])
    seen["linear"].clear()
    scored = tmp_path / "new.txt"
    scored.write_text("a lazy fox.\n")
    prediction = gatedrnn.predict(run, scored)
    assert seen["linear"] and all(on and dtype == torch.bfloat16 for on, _, dtype in seen["linear"])
    assert math.isfinite(prediction.summary["loss"])


def test_the_evaluate_command_computes_a_bfloat16_run_as_it_was_trained(tmp_path, seen, capsys):
    """``gatedrnn evaluate`` of a bfloat16 run runs under autocast and gives the test metrics
    the run wrote when it ended (in float32 they differ: bfloat16 products round)."""
    run = tmp_path / "run"
    assert main(["train", *TINY, "--precision", "bfloat16", "--out", str(run)]) == 0
    written = json.loads((run / "result.json").read_text())["test"]
    seen["linear"].clear()
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "test", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert seen["linear"] and all(autocast for autocast, _, _ in seen["linear"])
    assert got["mse"] == pytest.approx(written["mse"], rel=1e-6)


def test_a_float32_run_writes_its_config_as_runs_before_the_field_did(tmp_path):
    """config.json leaves ``precision`` out at float32, the value every run had before the field
    existed: such a run, resumed, keeps the config.json its checkpoint's manifest recorded (a
    written ``"precision": "float32"`` would read as an edit if the resume were killed before
    its first checkpoint). A bfloat16 run writes it."""
    from gatedrnn import manifest, runs

    plain, mixed = tmp_path / "plain", tmp_path / "mixed"
    assert main(["train", *TINY, "--out", str(plain)]) == 0
    assert main(["train", *TINY, "--precision", "bfloat16", "--out", str(mixed)]) == 0
    assert "precision" not in json.loads((plain / "config.json").read_text())
    assert json.loads((mixed / "config.json").read_text())["precision"] == "bfloat16"
    assert runs.load_config(plain).precision == "float32" and runs.load_config(mixed).precision == "bfloat16"
    before = manifest.digest(plain / "config.json", runs.RESUMABLE)
    assert main(["train", "--out", str(plain), "--resume", "--steps", "9", "--no-report"]) == 0
    assert manifest.digest(plain / "config.json", runs.RESUMABLE) == before

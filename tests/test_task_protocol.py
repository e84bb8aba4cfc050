"""A task is one module: a toy task written here, in a dozen lines, is trained, evaluated,
predicted from and reported through the command, with no gatedrnn module touched."""

import json
import textwrap

import pytest

from gatedrnn.cli import main

TOY = '''
import torch
import torch.nn.functional as F

from gatedrnn.tasks.base import Task, batch_generator
from gatedrnn.tasks.prediction import Prediction


class Parity(Task):
    """Is the number of ones in a sequence of bits odd?"""

    name, input_size, output_size, readout, metric, lower_is_better, baseline = "parity", 1, 2, "last", "accuracy", False, 0.5

    def __init__(self, length):
        self.length = length

    @classmethod
    def from_config(cls, config):
        return cls(config.length)

    def batch(self, n, generator):
        bits = torch.randint(0, 2, (n, self.length, 1), generator=generator).float()
        return bits, bits.sum((1, 2)).long() % 2

    def train_batch(self, step, batch_size, seed):
        return self.batch(batch_size, batch_generator(seed, step))

    def split(self, name, seed):
        return self.batch(64, torch.Generator().manual_seed({"valid": 1, "test": 2}[name]))

    def loss(self, output, target):
        return F.cross_entropy(output, target)

    def metrics(self, output, target):
        return {"accuracy": (output.argmax(-1) == target).float().mean().item()}

    def predict(self, model, path, device="cpu", per_line=False):
        bits = torch.tensor([[[float(c)] for c in line.strip()] for line in path.read_text().splitlines()])
        odd = model(bits).argmax(-1).tolist()
        return Prediction(self.name, [{"line": i + 1, "odd": v} for i, v in enumerate(odd)], {}, f"{len(odd)} sequences")
'''


@pytest.fixture
def toy(tmp_path):
    path = tmp_path / "toy_tasks.py"
    path.write_text(textwrap.dedent(TOY))
    return f"{path}:Parity"


def test_a_task_of_ones_own_runs_through_the_command(toy, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--task", toy, "--cell", "gru", "--length", "6", "--hidden-size", "8", "--steps", "20",
            "--eval-every", "10", "--batch-size", "16", "--out", str(run)]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "gru on " in out and "test accuracy" in out and (run / "report.html").exists()
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == toy  # the file by its absolute path
    assert json.loads((run / "model.json").read_text())["output_size"] == 2

    assert main(["evaluate", str(run), "--task", toy, "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["step"] == 20 and 0 <= evaluated["accuracy"] <= 1

    bits = tmp_path / "bits.txt"
    bits.write_text("101100\n111000\n")
    out_file = tmp_path / "odd.json"
    assert main(["predict", str(run), "--task", toy, "--input", str(bits), "--out", str(out_file)]) == 0
    written = json.loads(out_file.read_text())
    assert written["task"] == toy and [row["line"] for row in written["rows"]] == [1, 2]
    assert all(row["odd"] in (0, 1) for row in written["rows"])

    report = tmp_path / "report"
    assert main(["report", str(run), "--task", toy, "--out", str(report)]) == 0
    capsys.readouterr()
    for name in ("report.html", "learning_curves.png", "gradient_flow.png", "gates.png", "time_constants.png"):
        assert (report / name).stat().st_size > 0, name

    assert main(["train", "--out", str(run), "--resume", "--task", toy, "--steps", "30", "--no-report"]) == 0
    assert "step 30" in capsys.readouterr().out


def test_a_run_folder_never_picks_the_code_to_import(toy, tmp_path, capsys):
    # The run names its task by import path; a command reading the run imports it only when told to
    run = tmp_path / "run"
    assert main(["train", "--task", toy, "--length", "4", "--hidden-size", "4", "--steps", "2", "--eval-every", "2",
                 "--batch-size", "4", "--no-report", "--out", str(run)]) == 0  # fmt: skip
    capsys.readouterr()
    for args in (["evaluate", str(run)], ["report", str(run)], ["generate", str(run)],
                 ["predict", str(run), "--input", str(run / "config.json"), "--out", str(tmp_path / "p.csv")],
                 ["train", "--out", str(run), "--resume", "--steps", "4"]):  # fmt: skip
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert f"--task {toy}" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    import gatedrnn

    with pytest.raises(ValueError, match="not one of gatedrnn's"):
        gatedrnn.load(run)
    assert gatedrnn.load(run, task=toy).task == toy


def test_what_a_task_does_not_define_is_a_clear_error(toy, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--task", toy, "--length", "4", "--hidden-size", "4", "--steps", "2", "--eval-every", "2",
                 "--batch-size", "4", "--no-report", "--out", str(run)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["generate", str(run), "--task", toy]) == 2
    assert "generate samples from runs of tasks that generate" in capsys.readouterr().err


@pytest.mark.parametrize("spec,message", [
    ("nowhere.py:Parity", "no such file"),
    ("json:JSONDecoder", "has no Task subclass named JSONDecoder"),
    ("no_such_module_here:Parity", "cannot import no_such_module_here"),
])  # fmt: skip
def test_a_task_path_that_names_no_task_is_a_one_line_error(spec, message, tmp_path, capsys):
    assert main(["train", "--task", spec, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1

"""A run folder is checked as a whole: the checkpoint's checksums cover its header (each
tensor's dtype and shape) and its metadata; the checkpoint holds a manifest of the files
beside it (config.json, model.json, vocab.json, normalization.json), which every command
that reads the run checks first; every field of those files is checked; a data path a run
folder names is read only where it may point. Runs of earlier versions still load, with a
note."""

import hashlib
import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import gatedrnn
from gatedrnn import checkpoint, runs
from gatedrnn.cli import main
from gatedrnn.config import TrainConfig
from gatedrnn.manifest import ManifestError

TINY = ["--hidden-size", "4", "--steps", "4", "--eval-every", "2", "--batch-size", "4", "--no-report"]
CORPUS = "the quick brown fox jumps over the lazy dog\n" * 30


def as_an_earlier_version(run):
    """Rewrites RUN's checkpoint as gatedrnn wrote it before manifests: format 1, checksums of
    the tensors' bytes alone (and of the metadata), no manifest."""
    path = run / "checkpoint.safetensors"
    with safe_open(path, framework="pt") as f:
        metadata = {k: v for k, v in f.metadata().items() if k not in ("checksums", "manifest")}
    tensors = load_file(path)
    metadata["format"] = "gatedrnn-checkpoint-1"
    sums = {name: hashlib.sha256(t.contiguous().reshape(-1).view(torch.uint8).numpy()).hexdigest()
            for name, t in tensors.items()}  # fmt: skip
    sums["metadata"] = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()
    save_file(tensors, path, metadata={**metadata, "checksums": json.dumps(sums)})


def _error(capsys, argv) -> str:
    """The one line of error a command that exits with 2 prints (after the notes of --trust-edited)."""
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("note: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _edit_json(path, change):
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value, indent=2))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The data directory of these tests ($GATEDRNN_DATA): a text, a monthly series and a labelled CSV."""
    folder = tmp_path_factory.mktemp("data")
    (folder / "corpus.txt").write_text(CORPUS)
    rows = ["month,sales,price"] + [f"{2000 + i // 12}-{i % 12 + 1:02d},{100 + 2 * i + (i % 12) * 3},{5 + i % 7}"
                                    for i in range(60)]  # fmt: skip
    (folder / "sales.csv").write_text("\n".join(rows) + "\n")
    labelled = ["width,height,species"] + [f"{(i * 7) % 10},{(i * 3) % 10},{'setosa' if (i * 7) % 10 > (i * 3) % 10 else 'versicolor'}"
                                           for i in range(40)]  # fmt: skip
    (folder / "iris.csv").write_text("\n".join(labelled) + "\n")
    return folder


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """Runs trained once (text, timeseries, classify, adding at T = 6 and T = 8); each test copies one."""
    from gatedrnn.tasks.timeseries import TimeSeries

    root = tmp_path_factory.mktemp("trained")
    commands = {
        "text": ["--task", "text", "--data", str(data_dir / "corpus.txt"), "--cell", "gru", "--bptt", "8"],
        "timeseries": ["--task", "timeseries", "--data", str(data_dir / "sales.csv"), "--target", "sales",
                       "--features", "price", "--window", "6", "--test-size", "12"],
        "classify": ["--task", "classify", "--data", str(data_dir / "iris.csv"), "--mode", "pixel"],
        "adding6": ["--task", "adding", "--length", "6"],
        "adding8": ["--task", "adding", "--length", "8"],
    }  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TimeSeries, "_sarima", lambda self, origins: None)  # seconds of fitting, not the point here
        for name, args in commands.items():
            assert main(["train", *args, *TINY, "--out", str(root / name)]) == 0
    return root


@pytest.fixture
def copy(trained, data_dir, tmp_path, monkeypatch):
    """``copy(name)``: a fresh copy of a trained run, with $GATEDRNN_DATA at the tests' data
    (and no SARIMA baseline, seconds of fitting)."""
    from gatedrnn.tasks.timeseries import TimeSeries

    monkeypatch.setattr(TimeSeries, "_sarima", lambda self, origins: None)
    monkeypatch.setenv("GATEDRNN_DATA", str(data_dir))

    def make(name, to=None):
        run = tmp_path / (to or name)
        shutil.copytree(trained / name, run)
        return run

    return make


# -- the checkpoint's header and metadata ------------------------------------------------------


def _header_edit(path, old: bytes, new: bytes):
    raw = path.read_bytes()
    end = 8 + int.from_bytes(raw[:8], "little")
    assert raw[:end].count(old) >= 1 and len(old) == len(new)
    path.write_bytes(raw[:end].replace(old, new, 1) + raw[end:])


def test_an_edited_dtype_in_the_header_is_refused(copy, capsys):
    run = copy("adding6")
    path = run / "checkpoint.safetensors"
    _header_edit(path, b'"dtype":"F32"', b'"dtype":"I32"')  # the same bytes read as integers
    _, model = runs.build(runs.load_config(run))
    with pytest.raises(checkpoint.CheckpointError, match=r"is corrupted \(tensor '.*' does not match its checksum\)"):
        checkpoint.load_model(run, model)
    assert f"checkpoint {path} is corrupted (tensor '" in _error(capsys, ["evaluate", str(run)])


def test_a_flipped_bit_in_the_checksums_key_is_refused(copy, capsys):
    run = copy("adding6")
    path = run / "checkpoint.safetensors"
    _header_edit(path, b'"checksums"', b'"chec{sums"')  # 'k' ^ 0x10: as if written before checksums
    assert _error(capsys, ["evaluate", str(run)]).endswith(f"checkpoint {path} is corrupted (its checksums are "
                                                           "missing); restore it from a copy, or train the run again")


def test_an_edited_metadata_value_is_refused_as_metadata(copy, capsys):
    run = copy("adding6")
    path = run / "checkpoint.safetensors"
    with safe_open(path, framework="pt") as f:
        metadata = dict(f.metadata())
    trainer = json.loads(metadata["trainer"])
    metadata["trainer"] = json.dumps({**trainer, "step": trainer["step"] + 1})  # a value, not a tensor
    save_file(load_file(path), path, metadata=metadata)
    _, model = runs.build(TrainConfig.from_dict(json.loads((run / "config.json").read_text())))
    with pytest.raises(checkpoint.CheckpointError, match=r"is corrupted \(its metadata does not match its checksum\)"):
        checkpoint.load_model(run, model)
    assert "is corrupted (its metadata does not match its checksum)" in _error(capsys, ["evaluate", str(run)])


def test_a_run_of_an_earlier_version_loads_with_one_note(copy, capsys):
    run = copy("text")
    as_an_earlier_version(run)
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    assert main(["evaluate", str(run), "--json"]) == 0
    out, err = capsys.readouterr()
    note = (f"note: {run / 'checkpoint.safetensors'} was written by an earlier gatedrnn: its tensors' bytes alone "
            "are checked, and it carries no manifest of the run's files, which are used as they are")
    assert err.count(note) == 1, err  # once in a process
    assert json.loads(out.splitlines()[-1])["step"] == 4  # the JSON is left clean: the note is on stderr
    # the next checkpoint has both: a resumed run writes format 2 with its manifest
    assert main(["train", "--out", str(run), "--resume", "--steps", "6", "--no-report"]) == 0
    with safe_open(run / "checkpoint.safetensors", framework="pt") as f:
        metadata = f.metadata()
    assert metadata["format"] == "gatedrnn-checkpoint-2" and "vocab.json" in json.loads(metadata["manifest"])


# -- the manifest ------------------------------------------------------------------------------


def _swap_tokens(vocab):
    tokens = vocab["tokens"]
    tokens[1], tokens[2] = tokens[2], tokens[1]


EDITS = {  # run, file, edit: what the fault campaign edited
    "vocab swapped": ("text", "vocab.json", _swap_tokens),
    "reset_after": ("text", "config.json", lambda c: c.update(reset_after=False)),
    "window": ("timeseries", "config.json", lambda c: c["extra"].update(window=5)),
    "log": ("timeseries", "config.json", lambda c: c["extra"].update(log=True)),
    "normalization": ("timeseries", "normalization.json", lambda n: n["mean"].__setitem__(0, n["mean"][0] + 1)),
    "classes reversed": ("classify", "model.json", lambda m: m["classes"].reverse()),
}


@pytest.mark.parametrize("edit", EDITS)
def test_an_edited_run_file_is_refused_and_trusted_on_request(edit, copy, data_dir, tmp_path, capsys):
    name, filename, change = EDITS[edit]
    run = copy(name)
    _edit_json(run / filename, change)
    refused = (f"{run / filename} is not the file the run's checkpoint was written with (it was edited since, or "
               "the checkpoint comes from another run); put the original back, or pass --trust-edited")
    assert refused in _error(capsys, ["evaluate", str(run)])
    with pytest.raises(ManifestError, match="is not the file the run's checkpoint was written"):
        gatedrnn.load(run)
    if name != "classify":
        given = str(data_dir / ("corpus.txt" if name == "text" else "sales.csv"))
        assert refused in _error(capsys, ["predict", str(run), "--input", given, "--out", str(tmp_path / "p.json")])
    # on purpose: the run is used as it is, with a note naming the file
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", "--trust-edited"]) == 0
    err = capsys.readouterr().err
    assert f"{run / filename} is not the file the run's checkpoint was written with; used as it is" in err, err


def test_every_command_that_reads_a_run_checks_its_manifest(copy, tmp_path, capsys):
    run = copy("text")
    _edit_json(run / "vocab.json", _swap_tokens)
    refused = f"{run / 'vocab.json'} is not the file the run's checkpoint was written with"
    commands = [["evaluate", str(run)], ["predict", str(run), "--input", str(run / "config.json"), "--out",
                str(tmp_path / "s.csv")], ["generate", str(run), "--length", "5"], ["report", str(run)],
                ["export", str(run), "--format", "exported-program", "--out", str(tmp_path / "m.pt2")],
                ["explore", str(run), "--text", "the fox"], ["train", "--out", str(run), "--resume", "--steps", "6"]]  # fmt: skip
    for argv in commands:
        assert refused in _error(capsys, argv), argv
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "m.pt2").exists()
    assert not (run / "report.html").exists() and json.loads((run / "config.json").read_text())["steps"] == 4
    assert main(["generate", str(run), "--length", "5", "--trust-edited"]) == 0
    assert main(["explore", str(run), "--text", "the fox", "--trust-edited", "--out", str(tmp_path / "e.html")]) == 0
    assert gatedrnn.load(run, trust_edited=True).vocab.tokens == json.loads((run / "vocab.json").read_text())["tokens"]


def test_a_checkpoint_copied_into_a_run_of_another_length_is_refused(copy, capsys):
    short, long = copy("adding6"), copy("adding8")
    shutil.copy(short / "checkpoint.safetensors", long / "checkpoint.safetensors")  # the same task and cell
    refused = f"{long / 'config.json'} is not the file the run's checkpoint was written with"
    assert refused in _error(capsys, ["evaluate", str(long)])
    assert refused in _error(capsys, ["train", "--out", str(long), "--resume", "--steps", "6"])
    with pytest.raises(ManifestError, match="config.json is not the file"):
        gatedrnn.load(long)


def test_a_missing_run_file_is_refused_and_an_extension_of_steps_is_no_edit(copy, capsys):
    run = copy("text")
    (run / "vocab.json").unlink()
    assert _error(capsys, ["evaluate", str(run)]).endswith(
        f"{run / 'vocab.json'} is missing, but the run's checkpoint was written with it; put it back, or pass "
        "--trust-edited (trust_edited=True in Python) to use the run without it")  # fmt: skip
    again = copy("adding6", "extended")
    _edit_json(again / "config.json", lambda c: c.update(steps=6, max_minutes=5.0, threads=1))  # what --resume may change
    (again / "config.json").write_text(json.dumps(json.loads((again / "config.json").read_text())))  # re-indented
    capsys.readouterr()
    assert main(["evaluate", str(again)]) == 0, capsys.readouterr().err


# -- every field read is checked --------------------------------------------------------------

FIELDS = [  # run, file, new content (a function of the old value), what the one line says
    ("adding6", "config.json", lambda c: {**c, "hidden_size": "16"}, "hidden_size must be an integer, got '16'"),
    ("adding6", "config.json", lambda c: {**c, "lr": True}, "lr must be a number, got True"),
    ("adding6", "config.json", lambda c: [], "expected an object of settings, got list"),
    ("adding6", "config.json", lambda c: {**c, "layers": 0}, "--layers must be a positive integer, got 0"),
    ("adding6", "config.json", lambda c: {**c, "cell": "convlstm"}, "cell 'convlstm' is not one of the adding task's"),
    ("timeseries", "config.json", lambda c: {**c, "extra": {**c["extra"], "window": "6"}},
     "config.json: extra.window must be an integer, got '6'"),
    ("timeseries", "config.json", lambda c: {**c, "extra": {**c["extra"], "horizon": 0}},
     "extra.horizon must be a positive integer, got 0"),
    ("adding6", "model.json", lambda m: [], "model.json: expected a JSON object of the task's sizes, got list"),
    ("adding6", "model.json", lambda m: {**m, "input_size": "2"}, "model.json: 'input_size' must be a positive integer, got '2'"),
    ("adding6", "model.json", lambda m: {**m, "readout": "first"}, "model.json: 'readout' must be 'all' or 'last'"),
    ("adding6", "model.json", lambda m: {**m, "make_model": 1}, "model.json: 'make_model' is not one of the task's sizes"),
    ("timeseries", "model.json", lambda m: {k: v for k, v in m.items() if k != "input_size"},
     "model.json: does not hold every size of the task's model"),
    ("classify", "model.json", lambda m: {**m, "classes": [1, 2]}, "model.json: 'classes' must be a list of class names"),
    ("text", "vocab.json", None, "vocab.json: not JSON ('utf-8' codec can't decode byte 0xff"),
]  # fmt: skip


@pytest.mark.parametrize("name,filename,change,message", FIELDS, ids=[f"{f[1]}:{f[3][:30]}" for f in FIELDS])
def test_a_wrongly_typed_field_is_one_line_naming_file_and_field(name, filename, change, message, copy, tmp_path,
                                                                capsys):  # fmt: skip
    run = copy(name)
    path = run / filename
    if change is None:
        path.write_bytes(b"\xff\xfe" + path.read_bytes())  # not UTF-8
    else:
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    for argv in (["predict", str(run), "--input", str(path), "--out", str(tmp_path / "p.csv"), "--trust-edited"],
                 ["export", str(run), "--format", "exported-program", "--out", str(tmp_path / "m.pt2"),
                  "--trust-edited"]):  # fmt: skip
        err = _error(capsys, argv)
        assert message in err and str(run) in err, err
    with pytest.raises(ValueError) as raised:
        gatedrnn.load(run, trust_edited=True)
    assert filename in str(raised.value) and message.split(": ")[-1] in str(raised.value), raised.value


# -- a run folder does not choose which files are read ------------------------------------------


def test_a_data_path_outside_the_data_directory_and_the_run_is_refused_unquoted(copy, tmp_path, capsys):
    victim = tmp_path / "elsewhere" / "secret.txt"
    victim.parent.mkdir()
    victim.write_text("QZX-not-for-quoting\n" * 50)
    run = copy("text")
    _edit_json(run / "config.json", lambda c: c.update(data="../" * 12 + str(victim).lstrip("/")))
    for argv in (["evaluate", str(run), "--trust-edited"], ["report", str(run), "--trust-edited"],
                 ["train", "--out", str(run), "--resume", "--steps", "6", "--trust-edited"]):  # fmt: skip
        err = _error(capsys, argv)
        assert "which lies outside the data directory" in err and "a run folder does not choose which files are read" in err
        assert not set("QZX") & set(err.replace(str(run), "")), err  # not a character of the file
    assert not (run / "report.html").exists()


def test_a_run_trained_on_data_elsewhere_reads_it_when_given(copy, data_dir, tmp_path, monkeypatch, capsys):
    run = copy("text")
    monkeypatch.setenv("GATEDRNN_DATA", str(tmp_path / "empty"))  # the data now lies outside the data directory
    assert "give the data on the command line (--data " in _error(capsys, ["evaluate", str(run)])
    assert main(["evaluate", str(run), "--data", str(data_dir / "corpus.txt")]) == 0
    assert main(["report", str(run), "--data", str(data_dir / "corpus.txt")]) == 0
    assert main(["train", "--out", str(run), "--resume", "--steps", "6", "--data", str(data_dir / "corpus.txt")]) == 0
    assert gatedrnn.load(run).config.steps == 6  # load reads no data: nothing to refuse
    inside = run / "corpus.txt"  # data kept in the run folder is read without --data
    shutil.copy(data_dir / "corpus.txt", inside)
    _edit_json(run / "config.json", lambda c: c.update(data=str(inside)))
    capsys.readouterr()
    assert main(["evaluate", str(run), "--trust-edited"]) == 0, capsys.readouterr().err


def test_trust_edited_without_resume_is_a_usage_error(tmp_path, capsys):
    # a new run has no edited files to accept: the flag there would be ignored without a word
    assert main(["train", "--task", "adding", "--length", "4", "--steps", "2", "--trust-edited",
                 "--out", str(tmp_path / "run")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "--trust-edited accepts the edited files of a run being resumed: give it with --resume" in err
    assert not (tmp_path / "run").exists()

"""Checkpoints: one safetensors file (model weights, optimizer tensors, RNG states) whose
metadata holds the step and the optimizer's other state as JSON; never a pickle. Every file
is written to a temporary name and renamed over the old one, so a run killed at any moment
leaves the last complete checkpoint in place. The metadata also keeps a SHA-256 of every
tensor's bytes and of the other metadata: a flipped byte is refused, not loaded. A checkpoint
written before checksums existed (no ``checksums`` entry) loads unchecked."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

CHECKPOINT = "checkpoint.safetensors"


class CheckpointError(Exception):
    """A checkpoint that is missing, truncated or does not fit the model."""


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write) -> None:
    """Calls ``write(temporary_path)``, then renames the temporary file onto ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())  # mkstemp makes it private; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(error, OSError):  # named by the file it was meant for, not the temporary one
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise


def write_json(path: Path, value) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(value, f, indent=2)
            f.write("\n")

    atomic_write(path, write)


def _digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()).hexdigest()


def _checksums(tensors: dict, metadata: dict) -> dict:
    """SHA-256 of each tensor's bytes, and of the rest of the metadata under ``"metadata"``."""
    sums = {name: _digest(value) for name, value in tensors.items()}
    rest = json.dumps({k: v for k, v in metadata.items() if k != "checksums"}, sort_keys=True)
    return {**sums, "metadata": hashlib.sha256(rest.encode()).hexdigest()}


def save(run_dir: Path, model, optimizer, scheduler, trainer_state: dict, carry=None, best=None,
         identity=None, rng_states=None) -> None:  # fmt: skip
    """``carry`` is the recurrent state a stateful task carries between batches (or None);
    ``best`` the weights of the best evaluation so far (a state_dict, or None), kept as
    ``best.*`` tensors so that early stopping survives a kill; ``identity`` what the run is
    (task, cell, data fingerprint), checked by ``load_model(..., expect=)``; ``rng_states``
    the CPU random-number state of each process of a torchrun job, rank 0's first (default:
    this process's alone), kept as ``rng.torch`` and ``rng.torch.RANK``."""
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    for k, value in (best or {}).items():
        tensors[f"best.{k}"] = value.detach().contiguous()
    if carry is not None:
        for k, value in enumerate(carry if isinstance(carry, tuple) else (carry,)):
            tensors[f"carry.{k}"] = value.detach().contiguous()
    optim_state = optimizer.state_dict()
    for index, state in optim_state["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value.detach().contiguous().reshape(value.shape)
    for rank, rng in enumerate(rng_states or [torch.get_rng_state()]):
        tensors["rng.torch" if rank == 0 else f"rng.torch.{rank}"] = rng
    scalars = {str(i): {k: v for k, v in s.items() if not torch.is_tensor(v)} for i, s in optim_state["state"].items()}
    metadata = {
        "format": "gatedrnn-checkpoint-1",
        "trainer": json.dumps(trainer_state),
        "optimizer_groups": json.dumps(optim_state["param_groups"]),
        "optimizer_scalars": json.dumps(scalars),
        "scheduler": json.dumps(scheduler.state_dict() if scheduler is not None else None),
    }
    if identity is not None:
        metadata["run"] = json.dumps(identity)
    metadata["checksums"] = json.dumps(_checksums(tensors, metadata))
    atomic_write(Path(run_dir) / CHECKPOINT, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def _read(run_dir: Path):
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        raise CheckpointError(f"no checkpoint in {run_dir} (expected {path.name}); train first with gatedrnn train")
    try:
        tensors = load_file(path)
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint {path} is unreadable ({error}); it may be truncated") from None
    if metadata.get("format") != "gatedrnn-checkpoint-1":
        raise CheckpointError(f"checkpoint {path} is not a gatedrnn checkpoint (no format tag in its metadata)")
    if "checksums" in metadata:  # absent from checkpoints written before checksums: loaded unchecked
        try:
            saved = json.loads(metadata["checksums"])
        except json.JSONDecodeError:
            saved = {}
        actual = _checksums(tensors, metadata)
        for name in sorted(set(saved) | set(actual)):
            if saved.get(name) != actual.get(name):
                what = "its metadata" if name == "metadata" else f"tensor {name!r}"
                raise CheckpointError(f"checkpoint {path} is corrupted ({what} does not match its checksum); "
                                      "restore it from a copy, or train the run again")  # fmt: skip
    return tensors, metadata


def saved_step(run_dir: Path) -> int | None:
    """The step of the checkpoint in ``run_dir``, or None where there is no readable one."""
    try:
        from safetensors import safe_open

        with safe_open(Path(run_dir) / CHECKPOINT, framework="pt") as f:
            return int(json.loads((f.metadata() or {})["trainer"])["step"])
    except (SafetensorError, OSError, ValueError, KeyError, TypeError):
        return None


def check_identity(run_dir: Path, metadata: dict, expect: dict) -> None:
    """Refuses a checkpoint whose run (task, cell, data) is not the one ``expect`` describes:
    ``expect`` holds ``task`` and ``cell`` from the run's config and, where the caller reads
    the data, ``data`` (its fingerprint) and ``data_path``. A checkpoint written before
    identities were recorded is not checked."""
    if "run" not in metadata:
        return
    saved = json.loads(metadata["run"])
    path = Path(run_dir) / CHECKPOINT
    if (saved.get("task"), saved.get("cell")) != (expect["task"], expect["cell"]):
        raise CheckpointError(f"checkpoint {path} was trained on task {saved.get('task')} with cell "
                              f"{saved.get('cell')}, but {Path(run_dir) / 'config.json'} describes task "
                              f"{expect['task']} with cell {expect['cell']}; it belongs to another run")  # fmt: skip
    then, now = saved.get("data"), expect.get("data")
    if "data" in expect and then is not None and then != now:
        now_text = "now absent" if now is None else f"now {now['bytes']} bytes, sha256 {now['sha256'][:12]}"
        raise CheckpointError(f"{expect['data_path']} has changed since the run was trained ({then['bytes']} bytes, "
                              f"sha256 {then['sha256'][:12]}; {now_text}); give the data it was trained on, "
                              "or train a new run")  # fmt: skip


def load_model(run_dir: Path, model, expect: dict | None = None) -> dict:
    """Loads the weights into ``model``; returns the trainer state saved with them. With
    ``expect``, first refuses a checkpoint of another run (see ``check_identity``)."""
    tensors, metadata = _read(run_dir)
    return _load_weights(run_dir, model, tensors, metadata, expect)


def _load_weights(run_dir: Path, model, tensors: dict, metadata: dict, expect: dict | None) -> dict:
    if expect is not None:
        check_identity(run_dir, metadata, expect)
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    expected = set(model.state_dict())
    if set(weights) != expected:
        missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise CheckpointError(
            f"checkpoint in {run_dir} does not fit the model: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint in {run_dir} does not fit the model: {str(error).splitlines()[0]}") from None
    return json.loads(metadata["trainer"])


def load_training_state(run_dir: Path, model, optimizer, scheduler, expect: dict | None = None, rank: int = 0):
    """Loads weights, optimizer, scheduler and RNG; returns the trainer state, the carried
    recurrent state (None, a tensor, or a tuple of them) and the best weights (None when the
    checkpoint holds none). ``rank`` picks the random-number state of that process of a
    torchrun job; a rank the checkpoint has none for (written by fewer processes) keeps the
    state it has."""
    tensors, metadata = _read(run_dir)
    trainer_state = _load_weights(run_dir, model, tensors, metadata, expect)
    groups = json.loads(metadata["optimizer_groups"])
    scalars = json.loads(metadata["optimizer_scalars"])
    state = {}
    for index, values in scalars.items():
        state[int(index)] = dict(values)
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    sched = json.loads(metadata["scheduler"])
    if scheduler is not None and sched is not None:
        scheduler.load_state_dict(sched)
    rng = "rng.torch" if rank == 0 else f"rng.torch.{rank}"
    if rank == 0 or rng in tensors:
        torch.set_rng_state(tensors[rng])
    carry = tuple(tensors[f"carry.{k}"] for k in range(sum(key.startswith("carry.") for key in tensors)))
    carry = None if not carry else (carry[0] if len(carry) == 1 else carry)
    best = {k[len("best.") :]: v for k, v in tensors.items() if k.startswith("best.")}
    return trainer_state, carry, best or None

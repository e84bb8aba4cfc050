"""Checkpoints: one safetensors file (model weights, optimizer tensors, RNG states) whose
metadata holds the step and the optimizer's other state as JSON; never a pickle. Every file
is written to a temporary name and renamed over the old one, so a run killed at any moment
leaves the last complete checkpoint in place; a file that is a symbolic link is never
written through, and the temporaries a killed save left are removed by the next save.

The metadata keeps a SHA-256 of every tensor (its dtype and shape, as the header gives them,
and its bytes) and of the other metadata, which holds the run's manifest (the digests of the
files beside the checkpoint, ``gatedrnn/manifest.py``): a flipped byte anywhere, an edited
dtype or metadata value, is refused, not loaded. A checkpoint written by an earlier version
(format 1: checksums of the tensors' bytes alone, or none at all; no manifest) still loads,
with a note saying what it lacks."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from gatedrnn import manifest

CHECKPOINT = "checkpoint.safetensors"
FORMAT = "gatedrnn-checkpoint-2"  # checksums over each tensor's dtype, shape and bytes; a manifest
EARLIER = "gatedrnn-checkpoint-1"  # checksums over the tensors' bytes alone (or none), no manifest


class CheckpointError(Exception):
    """A checkpoint that is missing, truncated or does not fit the model."""


class SymlinkError(ValueError):
    """A file of a run folder that is a symbolic link, which gatedrnn does not write through."""


def refuse_link(path: Path) -> None:
    """Raises :class:`SymlinkError` where ``path`` is a symbolic link (dangling or not)."""
    if Path(path).is_symlink():
        raise SymlinkError(f"{path} is a symbolic link; gatedrnn writes no file through a link (it may point "
                           "outside the folder): remove the link, then run again")  # fmt: skip


_NOTED = set()


def note_once(text: str) -> None:
    """Prints ``text`` on stderr, once in a process."""
    if text not in _NOTED:
        _NOTED.add(text)
        print(f"note: {text}", file=sys.stderr, flush=True)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write) -> None:
    """Calls ``write(temporary_path)``, then renames the temporary file onto ``path``; refuses
    a ``path`` that is a symbolic link. A failed write is an ``OSError`` naming ``path`` (a
    full disk: ``ENOSPC``), safetensors' own error included."""
    path = Path(path)
    refuse_link(path)
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
        if isinstance(error, SafetensorError):  # "I/O error: No space left on device (os error 28)"
            raise _os_error(error, path) from None
        raise


def _os_error(error: SafetensorError, path: Path) -> OSError:
    """safetensors' error as the ``OSError`` it wraps, named by ``path``."""
    code = re.search(r"os error (\d+)", str(error))
    if code is None:
        return OSError(None, str(error), str(path))
    return OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path))


def remove_stale_temporaries(folder: Path, names) -> list[Path]:
    """Removes the temporaries :func:`atomic_write` made for the files ``names`` in ``folder``
    and a killed process left (``.checkpoint.safetensors.k3j_a9x2.tmp``); returns them. Only
    for a folder no other process writes in (a run folder, under its lock)."""
    pattern = re.compile("|".join(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}\.tmp" for name in names))
    stale = [p for p in Path(folder).iterdir() if pattern.fullmatch(p.name) and not p.is_dir()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_json(path: Path, value) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(value, f, indent=2)
            f.write("\n")

    atomic_write(path, write)


def _digest(tensor: torch.Tensor, header: bool = True) -> str:
    """SHA-256 of a tensor's bytes and, with ``header``, of its dtype and shape first (format 2)."""
    sha = hashlib.sha256(f"{tensor.dtype} {tuple(tensor.shape)};".encode() if header else b"")
    sha.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return sha.hexdigest()


def _metadata_digest(metadata: dict) -> str:
    rest = json.dumps({k: v for k, v in metadata.items() if k != "checksums"}, sort_keys=True)
    return hashlib.sha256(rest.encode()).hexdigest()


def _checksums(tensors: dict, metadata: dict) -> dict:
    """SHA-256 of each tensor (dtype, shape, bytes), and of the rest of the metadata under ``"metadata"``."""
    return {**{name: _digest(value) for name, value in tensors.items()}, "metadata": _metadata_digest(metadata)}


def save(run_dir: Path, model, optimizer, scheduler, trainer_state: dict, carry=None, best=None,
         identity=None, rng_states=None) -> None:  # fmt: skip
    """``carry`` is the recurrent state a stateful task carries between batches (or None);
    ``best`` the weights of the best evaluation so far (a state_dict, or None), kept as
    ``best.*`` tensors so that early stopping survives a kill; ``identity`` what the run is
    (task, cell, data fingerprint), checked by ``load_model(..., expect=)``, and under
    ``files`` the run's files (name: keys left out of the digest) whose digests the
    checkpoint records as its manifest; ``rng_states`` the CPU random-number state of each
    process of a torchrun job, rank 0's first (default: this process's alone), kept as
    ``rng.torch`` and ``rng.torch.RANK``. Temporaries a killed save left are removed first."""
    identity = dict(identity) if identity is not None else None
    files = identity.pop("files", {}) if identity is not None else {}
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
        "format": FORMAT,
        "trainer": json.dumps(trainer_state),
        "optimizer_groups": json.dumps(optim_state["param_groups"]),
        "optimizer_scalars": json.dumps(scalars),
        "scheduler": json.dumps(scheduler.state_dict() if scheduler is not None else None),
    }
    if identity is not None:
        metadata["run"] = json.dumps(identity)
    metadata["manifest"] = json.dumps(manifest.record(run_dir, files))
    metadata["checksums"] = json.dumps(_checksums(tensors, metadata))
    remove_stale_temporaries(run_dir, [CHECKPOINT, *files])
    atomic_write(Path(run_dir) / CHECKPOINT, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def _corrupted(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} is corrupted ({what}); restore it from a copy, or train the run again")


def _checked_metadata(path: Path) -> dict:
    """The checkpoint's metadata, read from its header alone, its format known and, where it
    has checksums, its own checksum matched; the tensors are checked by :func:`_read`."""
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint {path} is unreadable ({error}); it may be truncated") from None
    if metadata.get("format") not in (FORMAT, EARLIER):
        raise CheckpointError(f"checkpoint {path} is not a gatedrnn checkpoint (no format tag in its metadata)")
    if metadata["format"] == EARLIER:
        checked = "its tensors' bytes alone are checked" if "checksums" in metadata else "it is not checked"
        note_once(f"{path} was written by an earlier gatedrnn: {checked}, and it carries no manifest of the run's "
                   "files, which are used as they are (the run's next checkpoint has both)")  # fmt: skip
        if "checksums" not in metadata:
            return metadata
    elif "checksums" not in metadata:  # a format that has them, missing them: a flipped byte in the key
        raise _corrupted(path, "its checksums are missing")
    try:
        sums = json.loads(metadata["checksums"])
    except json.JSONDecodeError:
        sums = None
    if not isinstance(sums, dict):
        raise _corrupted(path, "its checksums are not readable")
    if sums.get("metadata") != _metadata_digest(metadata):
        raise _corrupted(path, "its metadata does not match its checksum")
    return metadata


def _read(run_dir: Path):
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        raise CheckpointError(f"no checkpoint in {run_dir} (expected {path.name}); train first with gatedrnn train")
    metadata = _checked_metadata(path)
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint {path} is unreadable ({error}); it may be truncated") from None
    if "checksums" in metadata:
        sums = json.loads(metadata["checksums"])
        header = metadata["format"] == FORMAT  # format 1 summed the bytes alone
        for name in sorted(set(sums) | set(tensors)):
            if name != "metadata" and (name not in tensors or sums.get(name) != _digest(tensors[name], header)):
                raise _corrupted(path, f"tensor {name!r} does not match its checksum")
    return tensors, metadata


def recorded_manifest(run_dir: Path) -> dict | None:
    """The manifest the checkpoint in ``run_dir`` was written with (see
    ``gatedrnn/manifest.py``), its metadata checked; None where the folder holds no
    checkpoint or one written before manifests (with a note).

    Args:
        run_dir (str or Path): the run folder.
    """
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return None
    metadata = _checked_metadata(path)
    if metadata["format"] == EARLIER:
        return None
    try:
        recorded = json.loads(metadata.get("manifest", "{}"))
    except json.JSONDecodeError:
        recorded = None
    if not (isinstance(recorded, dict) and all(isinstance(e, dict) for e in recorded.values())):
        raise _corrupted(path, "its manifest is not readable")
    return recorded


def saved_step(run_dir: Path) -> int | None:
    """The step of the checkpoint in ``run_dir``, or None where there is no readable one."""
    try:
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
    state it has. Rank 0, which holds the run folder's lock, also removes the temporaries a
    killed save left."""
    if rank == 0:
        remove_stale_temporaries(run_dir, [CHECKPOINT, *((expect or {}).get("files") or {})])
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

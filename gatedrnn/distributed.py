"""Training on several processes and machines: ``torchrun ... -m gatedrnn train`` and
PyTorch's DistributedDataParallel (gloo on the CPU, nccl on GPUs).

torchrun starts ``--nproc_per_node`` processes on each of ``--nnodes`` machines and gives
each its ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`session` reads them and opens
the process group. Outside torchrun it yields :class:`World`, one process, whose methods
change nothing, so that a plain run trains exactly as it always did. The trainer
(``gatedrnn/train.py``) calls the few hooks below; each keeps 2 processes on a global batch
of B equal to one process on B:

- data: every rank draws the same global batch (a task's batches are fixed by seed and
  step) and keeps its own B / W rows (:meth:`World.shard`); ``--batch-size`` is the global
  batch and must divide by the number of processes W;
- loss: DDP averages the gradients of the ranks; each rank's loss is the mean over its
  rows, so the average is the whole batch's mean when every shard's loss averages the same
  number of terms. Where it does not (a loss over the valid frames of padded sequences),
  :meth:`Group.mean_loss` weights each rank's loss by its share of the terms
  (``Task.loss_weight``); the loss it returns for logging is the whole batch's;
- evaluation: rank 0 evaluates alone, on the whole split, and sends the metrics to the
  others (:meth:`Group.from_main`), so every rank takes the same decisions (best weights,
  early stopping, solved);
- files: rank 0 alone writes config, metrics, checkpoints, result, report and TensorBoard
  events. A checkpoint holds the whole batch's carried state (gathered from the ranks) and
  every rank's random-number state: a resumed run continues as an uninterrupted one, and
  every rank reads the same checkpoint (``--out`` must be on a file system every node sees);
- random numbers: rank 0 draws dropout masks from the one-process stream, rank r from its
  own seed (:func:`rank_seed`); the same seed and number of processes give the same run;
- signals: a SIGINT or SIGTERM to one rank, or to torchrun (which passes it on to every
  rank), is shared at the end of each step (:meth:`Group.largest`, one small all-reduce), so
  every rank stops after the same step, which rank 0 saves;
- failures: a rank that dies closes its connections, and the others' next collective fails
  at once; a rank that hangs is given up on after ``timeout_minutes``. Either way each rank
  ends with :class:`PeerLost`, one line, and torchrun ends the job and names the rank that
  failed first.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import socket

import torch
import torch.distributed as dist
from torch import nn

from gatedrnn.torchrun import TIMEOUT_MINUTES, under_torchrun  # noqa: F401  (TIMEOUT_MINUTES: the default of session)


class PeerLost(Exception):
    """The other processes of the job stopped answering (one died or hung)."""


# How long a rank that lost its peers waits before it exits: the rank that failed first closes
# its connections while it exits, and torchrun names as the cause whichever exit it sees first.
# Without the wait the rank that only lost its peers (it leaves at once: __main__.py) was seen
# first in 3 of about 20 runs of tests/test_distributed.py's failing-rank job here.
PEER_LOST_GRACE_S = 2.0


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s random stream: ``seed`` itself for rank 0 (as one process)."""
    return seed + rank * 1_000_003


def main_process() -> bool:
    """Whether this process is the one that writes and prints: rank 0, or a process outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


class World:
    """One process: every hook is the identity."""

    rank, size = 0, 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, value):
        """This rank's rows of a batch (a tensor, or nested tuples of them)."""
        return value

    def shard_state(self, state):
        """This rank's rows of a carried recurrent state ((layers, B, H) tensors)."""
        return state

    def gather_state(self, state):
        """The whole batch's carried state from every rank's rows."""
        return state

    def rng_states(self) -> list:
        """The CPU random-number state of every rank, rank 0's first."""
        return [torch.get_rng_state()]

    def wrap(self, model: nn.Module, loss, find_unused: bool = False):
        """``compute(*args) = loss(model, *args)``, through DDP when there are several ranks."""
        return lambda *args: loss(model, *args)

    def mean_loss(self, loss: torch.Tensor, weight) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss to back-propagate, the whole batch's loss to log)."""
        return loss, loss

    def from_main(self, compute):
        """``compute()`` run on rank 0 alone; its (picklable) result on every rank."""
        return compute()

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any rank (every rank gets the same answer)."""
        return flag

    def largest(self, value: int) -> int:
        """The largest of every rank's ``value`` (every rank gets the same answer)."""
        return value

    def check_resume(self, step: int | None, run_dir) -> None:
        """Refuses a resume in which the ranks read different checkpoints (``step``: this rank's, or None)."""


class Group(World):
    """This process's place in a torchrun job with an open process group."""

    def __init__(self, device: torch.device):
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.device = device  # where the small tensors of the collectives go (nccl: this rank's GPU)

    def shard(self, value):
        if isinstance(value, tuple):
            return tuple(self.shard(v) for v in value)
        rows = len(value) // self.size
        return value[self.rank * rows : (self.rank + 1) * rows]

    def shard_state(self, state):
        if state is None or isinstance(state, tuple):
            return None if state is None else tuple(self.shard_state(s) for s in state)
        rows = state.shape[1] // self.size
        return state[:, self.rank * rows : (self.rank + 1) * rows].contiguous()  # (layers, B / W, H)

    def gather_state(self, state):
        if state is None or isinstance(state, tuple):
            return None if state is None else tuple(self.gather_state(s) for s in state)
        parts = [torch.empty_like(state) for _ in range(self.size)]
        dist.all_gather(parts, state.contiguous())
        return torch.cat(parts, dim=1)  # (layers, B, H)

    def rng_states(self) -> list:
        states = [None] * self.size
        dist.all_gather_object(states, torch.get_rng_state())
        return states

    def wrap(self, model, loss, find_unused=False):
        """The whole loss runs inside DDP's forward (a task may call the model's parts, not its
        ``forward``), so DDP prepares its gradient hooks for every parameter the loss uses."""
        cuda = self.device.type == "cuda"
        return nn.parallel.DistributedDataParallel(_Loss(model, loss), device_ids=[self.device] if cuda else None,
                                                   find_unused_parameters=find_unused)  # fmt: skip

    def mean_loss(self, loss, weight):
        weight = float(weight)
        totals = torch.stack([loss.detach() * weight, loss.new_tensor(weight)])
        dist.all_reduce(totals)  # (Σ_r loss_r w_r, Σ_r w_r)
        # DDP averages gradients over the W ranks: scaling rank r's loss by W w_r / Σ w makes that
        # average the gradient of Σ_r loss_r w_r / Σ w, the whole batch's mean (the scale is 1 when
        # the shards weigh the same).
        scale = self.size * weight / totals[1]
        return loss * scale, totals[0] / totals[1]

    def from_main(self, compute):
        box = [compute() if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def any(self, flag):
        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def largest(self, value):
        value = torch.tensor([int(value)], dtype=torch.int64, device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return int(value.item())

    def check_resume(self, step, run_dir):
        seen = [None] * self.size
        dist.all_gather_object(seen, (step, socket.gethostname()))
        if len({s for s, _ in seen}) > 1:
            steps = ", ".join(f"rank {r} on {host}: {'none' if s is None else f'step {s}'}"
                              for r, (s, host) in enumerate(seen))  # fmt: skip
            raise ValueError(f"the ranks do not read the same checkpoint in {run_dir} ({steps}); --out must be a "
                             "folder every node sees, on a shared file system, to resume there")  # fmt: skip


class _Loss(nn.Module):
    """``loss(model, *args)`` as a module, for DDP to wrap."""

    def __init__(self, model, loss):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, *args):
        return self.loss(self.model, *args)


@contextlib.contextmanager
def session(config, timeout_minutes: float = TIMEOUT_MINUTES):
    """Yields the :class:`World` this process trains in: a :class:`Group` under torchrun
    (the process group opened here, with ``timeout_minutes`` on every collective, and closed
    on the way out), otherwise one process. On GPUs each rank takes the GPU of its
    ``LOCAL_RANK`` as the current device, which ``--device cuda`` then means."""
    if not under_torchrun():
        yield World()
        return
    size = int(os.environ["WORLD_SIZE"])
    if config.batch_size % size:
        raise ValueError(f"--batch-size {config.batch_size} is the global batch and must divide among the {size} "
                         f"processes (torchrun's WORLD_SIZE); give a multiple of {size}")  # fmt: skip
    device = torch.device(config.device)
    if device.type == "cuda":
        if device.index is not None and size > 1:
            raise ValueError(f"--device {config.device} names one GPU, but {size} processes train; give --device "
                             "cuda and each process takes the GPU of its LOCAL_RANK")  # fmt: skip
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError(f"--device {config.device}: torchrun training runs on cpu (gloo) or cuda (nccl)")
    opened = not dist.is_initialized()
    try:
        if opened:
            cuda = device.type == "cuda"
            dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=timeout_minutes),
                                    device_id=device if cuda else None)  # fmt: skip
        yield Group(device)
        if opened:
            dist.barrier()  # every rank done with the others before any closes its connections
    except dist.DistError as error:  # includes a rank that never joined: the store's wait times out
        raise PeerLost(_lost(error)) from None
    except RuntimeError as error:  # gloo reports a closed connection as a plain RuntimeError
        if not _is_transport_error(error):
            raise
        raise PeerLost(_lost(error)) from None
    finally:
        if opened and dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()


def _is_transport_error(error: RuntimeError) -> bool:
    text = str(error)
    return any(word in text for word in ("gloo", "Gloo", "NCCL", "Connection closed", "Timed out", "timed out"))


def _lost(error: Exception) -> str:
    """One line: which rank lost the others, what the transport said, where to look."""
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    text = re.sub(r"^\[[^\]]*\] *", "", text).split(". ")[0]  # gloo's "[file.cc:553] " and its advice cut
    rank, size = os.environ.get("RANK", "?"), os.environ.get("WORLD_SIZE", "?")
    return (f"rank {rank} of {size} lost the other processes ({text[:160]}): one of them failed, or hung "
            "longer than --dist-timeout; its own error and torchrun's summary name it")  # fmt: skip

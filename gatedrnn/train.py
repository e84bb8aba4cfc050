"""The training loop: one function, no callbacks. Adam/AdamW, gradient clipping, a
learning-rate schedule, evaluation every N steps, early stopping, checkpoints that resume to
the same result, a progress bar and a JSONL metrics log, in float32 or in mixed bfloat16
(``TrainConfig.precision``: the forward and the loss under autocast, evaluations too, the
weights, the optimizer and the checkpoints float32). Under torchrun it trains with
DistributedDataParallel through the hooks of ``gatedrnn/distributed.py``.

SIGINT and SIGTERM (Ctrl-C; a scheduler, ``docker stop``, a spot-instance reclaim) stop a run
cleanly: the step under way finishes, is saved as an evaluation's checkpoint would be (a
resumed run equals an uninterrupted one), the run lock is released, and :class:`Stopped` is
raised. Under torchrun every process learns of a signal any of them received at the end of
each step, so all stop after the same step. A second signal stops at once."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gatedrnn import checkpoint, distributed, lock, runs
from gatedrnn.config import TrainConfig
from gatedrnn.runs import CONFIG, METRICS, MODEL, RESULT, build, identity, load_config  # noqa: F401  (their old home)
from gatedrnn.tasks.base import to_device
from gatedrnn.progress import progress_bar
from gatedrnn.threads import flush_denormals, torch_threads


@dataclass
class RunResult:
    config: TrainConfig
    step: int
    test: dict
    solved_at: int | None
    seconds: float
    history: list
    status: str  # "done", "early-stopped", "solved", "time-limit", "nan" ("stopped": by a signal, see Stopped)
    message: str = ""
    baselines: dict = field(default_factory=dict)  # the task's named baselines on the test split


class Stopped(KeyboardInterrupt):
    """Training stopped by SIGINT or SIGTERM: a ``KeyboardInterrupt``, as Ctrl-C always raised.

    ``saved``: the first signal let the step under way finish and saved it as ``step`` (of
    ``steps``); the run resumes from there. Where a second signal came, or one came while no
    step was under way (the data being read, the test evaluated), the run stopped at once and
    ``saved`` is False: the folder keeps the checkpoint it had. ``exit_code``: the shell's
    convention for a process ended by the signal, 128 + its number (130, 143)."""

    def __init__(self, signum: int, saved: bool = False, step: int | None = None, steps: int | None = None,
                 second: bool = False):  # fmt: skip
        self.signum, self.saved, self.step, self.steps, self.second = signum, saved, step, steps, second
        self.name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {self.name} after step {step} of {steps}, which is saved" if saved else
                         f"stopped at once by {'a second ' if second else ''}{self.name}")  # fmt: skip


class _StopOnSignals:
    """SIGINT's and SIGTERM's handler while :func:`train` runs. While the training loop runs
    (``armed``), the first signal is noted in ``signum`` and the loop stops after its step; a
    second one, or one while no step is under way, raises :class:`Stopped` at once. Once the
    stop is saved (``stopped``), a further signal raises that same stop (the process is only
    leaving)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = 0  # the signal noted, 0 for none
        self.armed = False
        self.stopped: Stopped | None = None
        self._previous = {}

    def __call__(self, signum, frame):
        if self.stopped is not None:
            raise self.stopped
        if self.armed and not self.signum:
            self.signum = signum
            return
        raise Stopped(signum, second=bool(self.signum))

    def __enter__(self) -> _StopOnSignals:
        if threading.current_thread() is threading.main_thread():  # Python runs handlers in the main thread only
            for signum in self.SIGNALS:
                previous = signal.getsignal(signum)
                if previous in (signal.SIG_IGN, None):  # ignored (a background job's SIGINT), or not Python's
                    continue
                signal.signal(signum, self)
                self._previous[signum] = previous
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()


def make_optimizer(config: TrainConfig, model):
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    optimizer = cls(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def factor(step):
        if config.warmup and step < config.warmup:
            return (step + 1) / config.warmup
        if config.schedule == "cosine":
            progress = min(1.0, (step - config.warmup) / max(1, config.steps - config.warmup))
            return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def evaluate(task, model, split: str, seed: int, device: str = "cpu") -> dict:
    return task.evaluate(model, split, seed, device)


def _better(task, new, best):
    if best is None:
        return True
    return new < best if task.lower_is_better else new > best


def train(config: TrainConfig, run_dir, resume: bool = False, progress: bool = True, stop_at: int | None = None,
          on_eval=None, tensorboard: bool = False,
          timeout_minutes: float = distributed.TIMEOUT_MINUTES) -> RunResult:  # fmt: skip
    """Trains ``config`` in ``run_dir``. ``resume`` continues from its checkpoint; ``stop_at``
    stops after that step as if killed (for tests); ``on_eval(step, metrics, model)`` is
    called after each evaluation; ``tensorboard`` also writes TensorBoard events to
    ``run_dir/tensorboard``. Under torchrun every process calls it, rank 0 alone writes, and
    a collective waits ``timeout_minutes`` at most for the other processes.

    Called in the main thread, it handles SIGINT and SIGTERM while it runs (the handlers it
    found are put back after): it raises :class:`Stopped` once the step under way is saved
    and the run folder's lock released."""
    config.validate()
    config.autocast_device()  # a device that cannot compute in bfloat16: one line, before any data is read
    run_dir = Path(run_dir)
    stop = _StopOnSignals()
    with stop, torch_threads(config.threads), flush_denormals(), distributed.session(config, timeout_minutes) as world:
        # The data first: bad data leaves no run folder. The config's task is the caller's to trust.
        task, model = build(config, run_dir if resume else None, task=config.task)
        if progress and world.main:
            for line in task.notes:  # how the data was read (a timeseries CSV's time axis, ignored columns)
                print(line, flush=True)
        if world.main:
            run_dir.mkdir(parents=True, exist_ok=True)
        with lock.held(run_dir) if world.main else contextlib.nullcontext():  # one job at a time in a run folder
            result = _train(config, run_dir, task, model, resume, progress and world.main, stop_at, on_eval,
                            tensorboard and world.main, world, stop)  # fmt: skip
    if stop.stopped is not None:  # raised once every rank is past the save and the lock is released
        raise stop.stopped
    return result


def _batch_loss(task, model, inputs, targets, carry):
    """The training loss of one batch and, for a stateful task, the state the batch ends in."""
    if task.stateful:
        return task.stateful_loss(model, inputs, targets, carry)
    return task.loss(task.forward(model, inputs), targets), None


def _save(world, run_dir, task, model, optimizer, scheduler, state, carry, best_weights, run) -> None:
    """The checkpoint, written by rank 0 with every rank's carried rows and random state."""
    if task.curriculum is not None:  # where the training lengths stand, for a resumed run
        state["curriculum"] = task.curriculum.state_dict()
    carry, rng_states = world.gather_state(carry), world.rng_states()
    if world.main:
        checkpoint.save(run_dir, model, optimizer, scheduler, state, carry, best_weights, run, rng_states)


def _train(config, run_dir, task, model, resume, progress, stop_at, on_eval, tensorboard, world,
           stop=None) -> RunResult:  # fmt: skip
    optimizer, scheduler = make_optimizer(config, model)
    state = {"step": 0, "best": None, "bad_evals": 0, "solved_at": None, "seconds": 0.0}
    carry = None  # a stateful task's state, carried from one batch to the next
    best_weights = None  # with --patience: the weights of the best evaluation, the run's final model
    run = identity(config)  # recorded in every checkpoint; a resumed run must match it
    if resume and not (run_dir / checkpoint.CHECKPOINT).exists():
        resume = False  # killed before its first checkpoint: start it over, to the same result
    torch.manual_seed(distributed.rank_seed(config.seed + 1, world.rank))  # the stream dropout and other draws use
    if resume:  # the checkpoint's random state replaces the seeded one
        state, carry, best_weights = checkpoint.load_training_state(run_dir, model, optimizer, scheduler, run,
                                                                    world.rank)  # fmt: skip
        if task.curriculum is not None:
            task.curriculum.load_state_dict(state["curriculum"])
        carry = world.shard_state(carry)  # the checkpoint holds the whole batch's state
    world.check_resume(state["step"] if resume else None, run_dir)
    if resume and world.main:
        runs.truncate_log(run_dir / METRICS, state["step"])
        runs.write_files(run_dir, config)  # an extension (--steps, --max-minutes) stays
    elif world.main:
        runs.write_files(run_dir, config, task)
        runs.empty_log(run_dir / METRICS)  # never through a symbolic link
    history = runs.read_log(run_dir / METRICS) if world.main else []

    def evaluated(split):  # in the precision the run trains in: its metrics describe the model as trained
        with config.mixed_precision(model):
            return evaluate(task, model, split, config.seed, config.device)

    checkpointed = (run_dir / checkpoint.CHECKPOINT).exists()
    # The loss through DDP (an adaptive softmax leaves the clusters no target of the batch falls in unused).
    compute = world.wrap(model, lambda m, *batch: _batch_loss(task, m, *batch),
                         find_unused=bool(config.adaptive_softmax))  # fmt: skip
    board = None
    if tensorboard:
        from gatedrnn import tensorboard as tb

        board = tb.Board(run_dir, task, config.seed, config.device, purge_step=state["step"] + 1 if resume else 0)

    bar = None
    if progress:  # names the cell; its speed and ETA leave out the first steps (Pace)
        bar = progress_bar(config.steps, state["step"], f"{config.cell} on {config.task}")
    log_lines = progress and (bar is None or bar.disable)  # no terminal (a log file, CI, nohup): a line per evaluation
    first_step, first_seconds = state["step"], state["seconds"]  # where this process began: its own speed
    status, message = "done", ""
    started = time.perf_counter() - state["seconds"]
    log = runs.append_log(run_dir / METRICS) if world.main else open(os.devnull, "a")
    stop = stop or _StopOnSignals()  # (not installed: a caller's own)
    saved_at = state["step"] if checkpointed else None  # the step the checkpoint on disk holds
    try:
        step = state["step"]
        stop.armed = True  # a signal from here on lets the step under way finish
        while step < config.steps:
            inputs, targets = world.shard(task.train_batch(step, config.batch_size, config.seed))  # this rank's rows
            inputs, targets = to_device(inputs, config.device), to_device(targets, config.device)
            if task.stateful and task.starts_sequence(step):
                carry = None
            with config.mixed_precision(model):  # float32: nothing; bfloat16: the forward and the loss autocast
                loss, carry = compute(inputs, targets, carry)
            if task.stateful:
                carry = tuple(s.detach() for s in carry) if isinstance(carry, tuple) else carry.detach()
            loss, batch_loss = world.mean_loss(loss, task.loss_weight(targets))  # batch_loss: the whole batch's
            if not torch.isfinite(batch_loss):
                status = "nan"
                kept = (f"the last good checkpoint (step {state['step']}) is kept" if checkpointed else
                        "before any checkpoint was written, so none is kept")  # fmt: skip
                message = (f"loss became {batch_loss.item()} at step {step + 1}; stopped {kept}. "
                           "Try a lower --lr or --clip.")  # fmt: skip
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip or float("inf"))
            optimizer.step()
            scheduler.step()
            step += 1
            trained_at = task.curriculum.length if task.curriculum is not None else None  # this batch's length
            if task.curriculum is not None and task.curriculum.observe(batch_loss.item()) and log_lines:
                print(f"step {step}: curriculum stage at length {trained_at} done; training at length "
                      f"{task.curriculum.length} from here", flush=True)  # fmt: skip
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{batch_loss.item():.4f}", refresh=False)
            if step % 10 == 0 or step == config.steps:
                row = {"step": step, "split": "train", "loss": batch_loss.item(), "grad_norm": float(grad_norm),
                       "lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - started}  # fmt: skip
                if trained_at is not None:
                    row["length"] = trained_at
                log.write(json.dumps(row) + "\n")
                history.append(row)
                if board is not None:
                    board.train(row)
            if step % config.eval_every == 0 or step == config.steps:
                metrics = world.from_main(lambda: evaluated("valid"))
                row = {"step": step, "split": "valid", **metrics, "seconds": time.perf_counter() - started}
                log.write(json.dumps(row) + "\n")
                log.flush()
                history.append(row)
                if bar is not None:
                    bar.set_postfix(loss=f"{batch_loss.item():.4f}", **{config.task + "_" + task.metric: f"{metrics[task.metric]:.4f}"})
                if log_lines:
                    print(_evaluation_line(config, task, step, first_step, batch_loss.item(), metrics,
                                           time.perf_counter() - started, first_seconds, bar.pace.rate),
                          flush=True)  # fmt: skip
                if state["solved_at"] is None and task.solved(metrics):
                    state["solved_at"] = step
                if _better(task, metrics[task.metric], state["best"]):
                    state["best"], state["bad_evals"] = metrics[task.metric], 0
                    if config.patience:  # a run with patience ends on the best weights, not the last
                        best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    state["bad_evals"] += 1
                state["step"], state["seconds"] = step, time.perf_counter() - started
                _save(world, run_dir, task, model, optimizer, scheduler, state, carry, best_weights, run)
                checkpointed, saved_at = True, step
                if board is not None:
                    board.evaluation(step, metrics, model)
                if on_eval is not None and world.main:
                    on_eval(step, metrics, model)
                if config.stop_when_solved and state["solved_at"] is not None:
                    status = "solved"
                    break
                if config.patience and state["bad_evals"] >= config.patience:
                    status = "early-stopped"
                    break
            signum = world.largest(stop.signum)  # a signal to any rank: every rank stops after this same step
            if signum:
                status = "stopped"
                break
            if config.max_minutes and world.any(time.perf_counter() - started > 60 * config.max_minutes):
                status = "time-limit"
                break
            if stop_at is not None and step >= stop_at:
                return RunResult(config, step, {}, state["solved_at"], time.perf_counter() - started, history, "killed")
    finally:
        log.close()
        if bar is not None:
            bar.close()
        if board is not None:
            board.close()
    if status == "stopped":  # the state an evaluation's checkpoint holds, at this step: a resume goes on from it
        if saved_at != step:
            state["step"], state["seconds"] = step, time.perf_counter() - started
            _save(world, run_dir, task, model, optimizer, scheduler, state, carry, best_weights, run)
        return _stopped(stop, signum, config, step, history)
    if status != "nan" and best_weights is not None:  # early-stopped or not, the best on validation
        model.load_state_dict(best_weights)
    if status != "nan":
        state["step"], state["seconds"] = step, time.perf_counter() - started
        _save(world, run_dir, task, model, optimizer, scheduler, state, carry, best_weights, run)
    elif checkpointed and world.main:
        checkpoint.load_model(run_dir, model)  # the test metric of the last good weights
    stop.armed = False  # from here a signal stops at once: the last step is saved
    signum = world.largest(stop.signum) if status != "nan" else 0
    if signum:  # a signal in the last step: it is saved, and the test evaluation waits for the resume
        return _stopped(stop, signum, config, state["step"], history)
    test = world.from_main(lambda: evaluated("test"))
    baselines = task.baseline_results("test") if world.main else None  # on the same test rows, beside the model's
    if world.main:
        checkpoint.write_json(run_dir / RESULT, {"step": state["step"], "test": test, "status": status,
                                                        "solved_at": state["solved_at"], "seconds": state["seconds"],
                                                        "message": message,
                                                        **({"baselines": baselines} if baselines else {})})  # fmt: skip
    return RunResult(config, state["step"], test, state["solved_at"], state["seconds"], history, status, message,
                     baselines or {})  # fmt: skip


def _stopped(stop, signum, config, step, history) -> RunResult:
    """The run stopped by ``signum``, its ``step`` saved: :func:`train` raises it once every rank is done."""
    stop.stopped = Stopped(signum, saved=True, step=step, steps=config.steps)
    return RunResult(config, step, {}, None, 0.0, history, "stopped")


def _evaluation_line(config, task, step, first_step, loss, metrics, elapsed, resumed_at, rate=None) -> str:
    """One line per evaluation when output is not a terminal, as Keras' ``verbose=2``, naming the
    cell. ``rate``: steps per second after the warm-up (:class:`gatedrnn.progress.Pace`); where there is none yet,
    the average over this process's steps."""
    if rate is None:
        rate = (step - first_step) / max(elapsed - resumed_at, 1e-9)  # steps per second in this process
    eta = (config.steps - step) / rate if rate > 0 else float("nan")
    if config.max_minutes:
        eta = min(eta, max(0.0, 60 * config.max_minutes - elapsed))

    def clock(seconds):
        return "?" if seconds != seconds else f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"

    return (f"step {step}/{config.steps} ({config.cell})  train loss {loss:.4f}  "
            f"valid {task.metric} {metrics[task.metric]:.4f}  {rate * config.batch_size:.1f} sequences/s  "
            f"elapsed {clock(elapsed)}  ETA {clock(eta)}")  # fmt: skip


STOPPED = {  # what the end-of-run line says of each status
    "done": "all {steps} steps done",
    "early-stopped": "early stop, no better validation result for {patience} evaluations (--patience)",
    "solved": "solved (--stop-when-solved)",
    "time-limit": "time limit of {max_minutes} minutes (--max-minutes) reached",
    "nan": "the loss became NaN",
}


def stop_reason(result: "RunResult") -> str:
    """Why a run ended, in words."""
    config = result.config
    return STOPPED[result.status].format(steps=config.steps, patience=config.patience, max_minutes=config.max_minutes)

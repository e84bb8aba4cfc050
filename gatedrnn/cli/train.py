"""``gatedrnn train``: trains a cell on a task, with checkpoints, resume and a report."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import os
import shlex
import sys
import time
from pathlib import Path

from gatedrnn import tasks
from gatedrnn.cli import config_file
from gatedrnn.cli.errors import UsageError, positive_int, run_errors
from gatedrnn.tasks.presets import BUILT_IN, DATA_ENV, PRESETS, resolve
from gatedrnn.torchrun import TIMEOUT_MINUTES, under_torchrun

EXAMPLES = """examples:
  gatedrnn train --task adding --cell lstm --length 150 --steps 3000 --out runs/adding-lstm
  gatedrnn train --task text --data ../shared/data/tinyshakespeare.txt --cell lstm --hidden-size 512 \\
      --lr 2e-3 --steps 3000 --out runs/shakespeare
  gatedrnn train --task copy --cell gru --length 100 --lr 3e-3 --out runs/copy-gru
  gatedrnn train --preset shakespeare-quick --cell lstm --out runs/shakespeare-quick
  gatedrnn train --preset jsb --data-dir ~/data --cell gru --out runs/jsb   # ~/data/music/JSB_Chorales.mat
  gatedrnn train --config runs/shakespeare-quick/config.json --cell gru --out runs/sq-gru
  gatedrnn train --config my-settings.toml --threads 2 --out runs/mine
  gatedrnn train --out runs/adding-lstm --resume          # continue a killed or stopped run
  gatedrnn train --task adding --cell lstm --peephole --out runs/adding-peephole
  gatedrnn train --task adding --cell gru --no-reset-after --out runs/adding-cho-gru
  gatedrnn train --preset video-quick --cell convlstm --out runs/video
  gatedrnn train --preset shakespeare-quick --cell gru --precision bfloat16 --out runs/sq-bf16   # mixed precision
  gatedrnn train --task adding --cell lstm --tensorboard --out runs/adding-tb   # tensorboard --logdir runs/adding-tb/tensorboard
  torchrun --nproc_per_node 2 -m gatedrnn train --task adding --cell lstm --batch-size 64 --out runs/adding-ddp
  gatedrnn train --task my_tasks:Parity --cell gru --out runs/parity   # a task of your own (MODULE:CLASS)

Each task has options of its own: gatedrnn train --task NAME --help lists them.

SIGINT (Ctrl-C) or SIGTERM (a scheduler, docker stop): the step under way finishes and is
saved, one line names it and the command that resumes, and the exit code is 130 or 143. A
second signal stops at once, keeping the last checkpoint.
"""


def task_spec(text: str) -> str:
    """``--task``: a built-in task's name, or MODULE:CLASS / FILE.py:CLASS for a task of your own."""
    if text in tasks.BUILT_IN:
        return text
    if tasks.is_import_path(text):  # a file is kept by its absolute path: the run is usable from anywhere
        where, _, name = text.rpartition(":")
        return f"{Path(where).expanduser().resolve()}:{name}" if where.endswith(".py") else text
    raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(tasks.BUILT_IN)}, "
                                     "or MODULE:CLASS for a task of your own)")  # fmt: skip


def _cell_name(task):
    """``--cell``'s check: a cell of ``task``, or of another task (then TrainConfig.validate says
    which cells this task takes); else "invalid choice"."""

    def check(text: str) -> str:
        if task is not None and text in task.cells:
            return text
        every = list(dict.fromkeys(cell for cls in tasks.TASKS.values() for cell in cls.cells))  # imports them all
        if text in every:
            return text
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from "
                                         f"{', '.join(task.cells if task is not None else every)})")  # fmt: skip

    return check


def named_task(argv: list[str]):
    """The task class a ``train`` command line trains (its ``--task``, else its config file's,
    preset's or resumed run's, else the default), imported to offer its own options and cells;
    None for a bare ``--help``, which lists no task's options and so imports none."""
    peek = argparse.ArgumentParser(add_help=False)
    for flag in ("--task", "--preset", "--config", "--out"):
        peek.add_argument(flag)
    peek.add_argument("--resume", action="store_true")
    peek.add_argument("-h", "--help", action="store_true")
    known, _ = peek.parse_known_args(argv)
    spec = known.task
    if spec is None and known.config:
        spec = _task_in_file(Path(known.config))
    if spec is None and known.preset in PRESETS:
        spec = PRESETS[known.preset]["task"]
    if spec is None and known.resume and known.out:
        spec = _task_in_file(Path(known.out) / "config.json")
    if spec is None and known.help:
        return None
    spec = spec or tasks.DEFAULT
    if spec not in tasks.BUILT_IN and not tasks.is_import_path(spec):
        return None  # --task's own check names it
    if tasks.is_import_path(spec) and known.task is None:
        return None  # a file's import path is imported only when --task gives it (run() says so)
    try:
        return tasks.task_class(spec)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _task_in_file(path: Path):
    """The "task" of a JSON or TOML options file, or None (the full parse reports what is wrong)."""
    import json

    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        else:
            values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    task = values.get("task") if isinstance(values, dict) else None
    return task if isinstance(task, str) else None


def cutoffs(text: str) -> list[int]:
    """Parses "N,N,..."; TrainConfig.validate and the model check the values."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected increasing integers separated by commas, got {text!r}") from None


def add_parser(sub, task=None):
    """The ``train`` subcommand's parser, with ``task``'s own options and cells (a Task class), if given."""
    p = sub.add_parser("train", help="train a cell on a task", epilog=EXAMPLES,
                       usage="%(prog)s [--task TASK | --preset NAME | --config FILE] [options] --out RUN_DIR",
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--preset", choices=list(PRESETS), metavar="NAME",
                   help="named settings of README's results tables (gatedrnn presets lists them)")
    p.add_argument("--data-dir", type=Path, metavar="DIR",
                   help=f"where a preset's data paths start (default: ${DATA_ENV}, else ../shared/data beside the "
                        "checkout)")  # fmt: skip
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="options from a JSON or TOML file, as a run's config.json holds them (over --preset; "
                        "options given here override it)")  # fmt: skip
    p.add_argument("--task", type=task_spec, metavar="TASK",
                   help=f"the task: {', '.join(tasks.BUILT_IN)}, or MODULE:CLASS for one of your own "
                        f"(default {tasks.DEFAULT})")
    p.add_argument("--cell", type=_cell_name(task), metavar="CELL",
                   help="the recurrent cell (default lstm; convlstm and convgru for --task video; gatedrnn train "
                        "--task NAME --help lists a task's cells)")  # fmt: skip
    p.add_argument("--length", type=positive_int, help="sequence length T of a synthetic task (default 100)")
    p.add_argument("--data", metavar="PATH", help="the data file or folder of a task that reads one")
    p.add_argument("--hidden-size", type=positive_int, help="hidden units (default 64)")
    p.add_argument("--layers", type=positive_int, help="stacked layers (default 1)")
    p.add_argument("--embedding-size", type=positive_int, help="token embedding size (default: the task's)")
    p.add_argument("--dropout", type=float, help="dropout on embeddings, outputs and between layers (default 0)")
    p.add_argument("--tie-weights", action="store_true", default=None,
                   help="language models: the readout reuses the embedding matrix (needs embedding = hidden size)")
    p.add_argument("--adaptive-softmax", type=cutoffs, metavar="N,N,...",
                   help="language models: an adaptive softmax with these cutoffs, e.g. 1000,4000 (vocabulary by frequency)")
    p.add_argument("--backend", choices=["auto", "fused", "reference", "scan"],
                   help="implementation (default auto; scan: the parallel scan of mingru and minlstm)")
    p.add_argument("--chrono", type=float, metavar="T_MAX",
                   help="LSTM, GRU: chrono initialization, gate time constants spread up to T_MAX steps "
                        "(Tallec & Ollivier 2018; default off)")
    p.add_argument("--peephole", action="store_true", default=None,
                   help="LSTM: peephole connections from the cell state into the gates (Gers & Schmidhuber 2000)")
    p.add_argument("--recurrent-dropout", type=float, metavar="P",
                   help="variational dropout on h_{t-1} in the recurrent product, one mask per sequence (default 0)")
    p.add_argument("--weight-dropout", type=float, metavar="P",
                   help="DropConnect on the recurrent weights W_hh, once per forward (AWD-LSTM; default 0)")
    p.add_argument("--zoneout", type=float, metavar="P",
                   help="each unit keeps its previous state with probability P in training (default 0)")
    p.add_argument("--layer-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="LSTM, GRU: layer normalization of the pre-activations (and the LSTM's cell) (Ba et al. 2016; "
                        "--no-layer-norm turns off a preset's)")
    p.add_argument("--coupled", action="store_true", default=None,
                   help="LSTM: input gate = 1 - forget gate, no input-gate weights (CIFG, Greff et al. 2017)")
    p.add_argument("--reset-after", action=argparse.BooleanOptionalAction, default=None,
                   help="GRU: --no-reset-after is Cho et al. 2014's candidate, the reset gate before the recurrent "
                        "product (default: after it, as torch.nn.GRU)")
    p.add_argument("--optimizer", choices=["adam", "adamw"], help="default adam")
    p.add_argument("--lr", type=float, help="learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, help="default 0")
    p.add_argument("--schedule", choices=["constant", "cosine"], help="learning-rate schedule (default constant)")
    p.add_argument("--warmup", type=int, help="steps of linear warm-up (default 0)")
    p.add_argument("--batch-size", type=positive_int, help="default 64")
    p.add_argument("--steps", type=positive_int, help="training steps (default 2000)")
    p.add_argument("--clip", type=float, help="max gradient norm, 0 for none (default 1.0)")
    p.add_argument("--eval-every", type=positive_int, help="steps between evaluations (default 100)")
    p.add_argument("--patience", type=int,
                   help="evaluations without improvement before stopping; the run then ends on its best "
                   "validation weights, stopped early or not (default 0: never)")  # fmt: skip
    p.add_argument("--stop-when-solved", action="store_true", default=None, help="stop once the task is solved")
    p.add_argument("--max-minutes", type=float, help="stop after this much wall-clock time (default 0: no limit)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--device", help="torch device (default cpu)")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="CPU threads torch uses for the run (torch.set_num_threads; default: torch's choice)")
    p.add_argument("--precision", choices=["float32", "bfloat16"],
                   help="float32 (default), or bfloat16: mixed precision, the forward and the loss under "
                        "torch.autocast (evaluation and prediction too); weights, optimizer and checkpoint stay "
                        "float32. Meant for CPUs with bfloat16 instructions (AVX-512 BF16, AMX) and GPUs")  # fmt: skip
    if task is not None:
        add_task_options(p, task)
    p.add_argument("--out", type=Path, required=True, help="run folder: config, metrics, checkpoint, report")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--trust-edited", action="store_true",
                   help="with --resume: continue although the run's config.json, model.json or a saved file changed "
                        "since its checkpoint was written (each field is still checked)")
    p.add_argument("--no-report", action="store_true", help="skip writing report.html at the end")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard events (scalars, gate histograms) to OUT/tensorboard; "
                        "needs pip install 'gatedrnn[tensorboard]'")  # fmt: skip
    p.add_argument("--dist-timeout", type=float, default=TIMEOUT_MINUTES, metavar="MINUTES",
                   help="under torchrun: how long a process waits for the others (rank 0 evaluates while the "
                        f"others wait) before it gives them up as hung (default {TIMEOUT_MINUTES:g})")  # fmt: skip
    p.set_defaults(run=run)
    return p


def add_task_options(p, task) -> None:
    """The task's own options (``Task.options``), as a group of their own."""
    group = p.add_argument_group(f"{task.name} task options")
    for name, (kind, default, text) in task.options.items():
        help_text = text + ("" if kind is bool or default in ("", None) or "default" in text else f" (default {default})")
        help_text = help_text.replace("%", "%%")  # argparse formats help strings with %
        flag, dest = f"--{name.replace('_', '-')}", f"extra.{name}"
        if kind is bool:
            group.add_argument(flag, action="store_true", default=None, dest=dest, help=help_text)
        else:
            metavar = {int: "N", float: "X"}.get(kind, name.upper())
            group.add_argument(flag, type=kind, dest=dest, metavar=metavar, help=help_text)


def explain_unknown(flag: str, args) -> str | None:
    """An unknown ``--flag`` that is another built-in task's option: which tasks it belongs to."""
    name = flag[2:].replace("-", "_")
    owners = [key for key, cls in tasks.TASKS.items() if name in cls.options]
    if not owners:
        return None
    return (f"{flag} is an option of the {' and '.join(owners)} task{'s' if len(owners) > 1 else ''}, "
            f"not of --task {args.task or tasks.DEFAULT}")


def _merge(base: dict, over: dict) -> dict:
    """``over``'s settings on top of ``base``'s, the task options (``extra``) merged key by key."""
    extra = {**base.get("extra", {}), **over.get("extra", {})}
    merged = {**base, **over}
    merged.pop("extra", None)
    return {**merged, **({"extra": extra} if extra else {})}


def _given(args) -> dict:
    from gatedrnn.config import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    extra = {k[len("extra."):]: v for k, v in vars(args).items() if k.startswith("extra.") and v is not None}
    if extra:
        given["extra"] = extra
    return given


@run_errors
def run(args) -> int:
    from gatedrnn.checkpoint import CHECKPOINT, saved_step
    from gatedrnn.config import TrainConfig
    from gatedrnn.distributed import PEER_LOST_GRACE_S, PeerLost, main_process
    from gatedrnn.runs import CONFIG, data_to_read, load_config
    from gatedrnn.train import Stopped, stop_reason, train

    given = _given(args)
    settings = {}  # what --preset and --config set, under what the command line gives
    if args.preset:
        settings = resolve(args.preset, args.data_dir)
    elif args.data_dir is not None:
        raise UsageError("--data-dir locates a preset's data: give --preset NAME with it (or the file itself as --data)")
    from_file = config_file.read(args.config) if args.config else {}
    given = _merge(_merge(settings, from_file), given)
    data = given.get("data", "")
    if args.preset and data == settings.get("data") and data not in BUILT_IN and not Path(data).exists():
        raise UsageError(f"preset {args.preset} reads {data}, which does not exist; point --data-dir or "
                         f"${DATA_ENV} at the folder holding the data sets (README, Data), or give --data")  # fmt: skip
    if args.trust_edited and not args.resume:
        raise UsageError("--trust-edited accepts the edited files of a run being resumed: give it with --resume "
                         "(a new run writes its files afresh)")  # fmt: skip
    out: Path = args.out
    if out.is_symlink() and not out.exists():
        raise UsageError(f"--out {out} is a symbolic link to {os.readlink(out)}, which does not exist; create "
                         "that folder, or choose another --out")  # fmt: skip
    if out.is_symlink():  # resolved once: no file of the run is then written through a link
        out = out.resolve()
        if main_process():
            print(f"--out {args.out} is a symbolic link: the run is written in {out}", flush=True)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, expected a run folder; choose another --out")
    saved = None  # the step of the checkpoint a resume continues from
    if args.resume:
        config = load_config(out, args.trust_edited)  # its files checked against its checkpoint's manifest
        for key, value in given.items():
            if key in ("steps", "max_minutes", "threads"):
                setattr(config, key, value)  # a resumed run may be extended, in steps or in time
            elif getattr(config, key) != value:
                raise UsageError(
                    f"{out} holds a run with {key}={getattr(config, key)!r}, not {value!r}; "
                    "drop the option to resume it, or train into another --out"
                )
        data_to_read(config, out, given.get("data"))  # a data path from the run folder, only where it may point
        saved = saved_step(out)
        if saved is not None and config.steps <= saved:  # nothing to train: decided where no live run holds the folder
            from gatedrnn import lock

            with lock.held(out) if main_process() else contextlib.nullcontext():
                done = _nothing_to_do(out, saved_step(out), config.steps, "steps" in given)
            if done:  # config.json stays as it is
                if main_process():
                    print(done)
                return 0
    else:
        # A config with no checkpoint and no result is a run killed before its first checkpoint:
        # nothing trained is lost by starting afresh there.
        trained = [name for name in (CHECKPOINT, "result.json") if (out / name).exists()]
        if trained and not (out / CONFIG).exists():
            raise UsageError(f"{out} holds {trained[0]} but no config.json, so it cannot be resumed; move its files "
                             "away or choose another --out")  # fmt: skip
        if trained:
            existing = load_config(out)
            what = "another task's run" if existing.task != given.get("task", existing.task) else "a run"
            raise UsageError(f"{out} already holds {what} (task {existing.task}, cell {existing.cell}); "
                             "pass --resume to continue it or choose another --out")  # fmt: skip
        config = TrainConfig(**given)
    if tasks.is_import_path(config.task) and args.task is None:
        where = f"{out}'s run" if args.resume else f"--config {args.config}"
        raise UsageError(f"{where} names the task {config.task}, a task of your own: give --task {config.task} "
                         "to import it (its code runs)")  # fmt: skip
    if args.config:
        config_file.check_extra(from_file.get("extra", {}), config.task, args.config)
    try:
        config.validate()
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.dist_timeout <= 0:
        raise UsageError(f"--dist-timeout must be a positive number of minutes, got {args.dist_timeout:g}")
    if args.tensorboard:
        from gatedrnn.tensorboard import require

        try:
            require()
        except ModuleNotFoundError as error:
            raise UsageError(str(error)) from None
    if args.resume and main_process():
        if saved is not None:
            print(f"resuming {out} from step {saved} of {config.steps}", flush=True)
        elif not (out / CHECKPOINT).exists():  # (an unreadable one is train's to refuse)
            print(f"resuming {out}: it stopped before its first checkpoint, so it starts over at step 0 of "
                  f"{config.steps}", flush=True)  # fmt: skip
    try:
        result = train(config, out, resume=args.resume, tensorboard=args.tensorboard,
                       timeout_minutes=args.dist_timeout)  # fmt: skip
    except Stopped as stopped:  # SIGINT or SIGTERM: saved, or stopped at once by a second signal
        if main_process():
            print(f"gatedrnn train: {_stopped_line(out, config, args, stopped)}", file=sys.stderr, flush=True)
        return stopped.exit_code
    except OSError as error:  # a full disk, a folder not writable: what failed and what to do
        raise UsageError(_write_error(out, error)) from None
    except PeerLost as error:  # under torchrun: another process died or hung; it printed its own error
        print(f"gatedrnn train: error: {error}", file=sys.stderr, flush=True)
        time.sleep(PEER_LOST_GRACE_S)  # the rank that failed first exits first, and torchrun names it
        return 1
    if not main_process():  # under torchrun rank 0 alone prints and writes the report
        return 1 if result.status == "nan" else 0
    print(f"{config.cell} on {config.task}: step {result.step}, test " +
          ", ".join(f"{k} {v:.4f}" for k, v in result.test.items()) +
          (f", solved at step {result.solved_at}" if result.solved_at else "") +
          f"; ended: {stop_reason(result)}")  # fmt: skip
    if result.baselines:
        from gatedrnn.cli.evaluate import baselines_line

        print(baselines_line(result.baselines, "test", tasks.task_class(config.task).metric))
    if not args.no_report:
        from gatedrnn.cli.report import report_runs

        print(f"report: {report_runs([out], out, args.task, data=config.data)}")  # the data it was given
    if result.status == "nan":
        print(f"gatedrnn train: {result.message}")
        return 1
    return 0


def _nothing_to_do(out: Path, saved: int | None, steps: int, asked: bool) -> str | None:
    """What a resume of a run that already has ``steps`` says, or None where there is work.
    A finished run with ``steps`` or more says so and is left as it is (exit code 0: a job
    script that resumes until done ends well). A checkpoint past ``steps`` in a run that is
    not finished is a usage error: a run is extended, never cut back."""
    if saved is None or steps > saved:
        return None
    finished = _result_step(out) == saved
    if finished and steps == saved:
        return f"{out} already has its {saved} steps: nothing to do (its result stands)"
    if finished:
        return (f"{out} already has {saved} steps, more than --steps {steps}: nothing to do (a run is extended, "
                "never cut back; its result and config.json stand)")  # fmt: skip
    if steps < saved:
        what = "--steps" if asked else "its config.json's steps"
        raise UsageError(f"{out} already has {saved} steps, more than {what} {steps}: a run is extended, never "
                         f"cut back; give --steps {saved} or more")  # fmt: skip
    return None  # its last step is saved but its test evaluation is not: the resume finishes it


def _result_step(out: Path) -> int | None:
    """The step of the run's result.json, or None where there is no readable one."""
    import json

    from gatedrnn.runs import RESULT

    try:
        step = json.loads((out / RESULT).read_text(encoding="utf-8")).get("step")
    except (OSError, ValueError, AttributeError):
        return None
    return step if isinstance(step, int) else None


def _resume_command(out: Path, config, args) -> str:
    """The command that continues the run in ``out`` (under torchrun, on as many processes)."""
    words = ["gatedrnn", "train", "--out", str(out), "--resume"]
    if tasks.is_import_path(config.task):  # a task of one's own is imported only when named
        words[2:2] = ["--task", config.task]
    if args.tensorboard:
        words.append("--tensorboard")
    if not under_torchrun():
        return shlex.join(words)
    size = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_WORLD_SIZE", size))
    nodes = "" if local == size else f"--nnodes {size // local} (and your rendezvous options) "
    return f"torchrun {nodes}--nproc_per_node {local} -m {shlex.join(words)}"


def _stopped_line(out: Path, config, args, stopped) -> str:
    """One line: the signal, the step saved (or kept) and the command that resumes."""
    from gatedrnn.checkpoint import CHECKPOINT, saved_step
    from gatedrnn.runs import CONFIG

    resume = _resume_command(out, config, args)
    if stopped.saved:
        return (f"{stopped.name}: stopped after step {stopped.step} of {stopped.steps} and saved it in "
                f"{out / CHECKPOINT}; resume with: {resume}")  # fmt: skip
    how = f"a second {stopped.name} stopped the run at once" if stopped.second else f"{stopped.name}: stopped at once"
    if not (out / CONFIG).exists():
        return f"{how}, before the run wrote anything; run the same command again to train"
    step = saved_step(out)
    kept = ("no checkpoint was written yet (a resume starts over)" if step is None else
            f"the checkpoint of step {step} is kept")  # fmt: skip
    return f"{how}; {kept}; resume with: {resume}"


def _write_error(out: Path, error: OSError) -> str:
    """One line: the file that could not be written, why, what was kept and how to go on."""
    from gatedrnn import checkpoint
    from gatedrnn.runs import CONFIG

    step = checkpoint.saved_step(out)
    kept = "no checkpoint was written yet" if step is None else f"the checkpoint of step {step} is kept"
    fix = "free some space" if error.errno in (errno.ENOSPC, errno.EDQUOT) else "fix that"
    go_on = (f"continue with gatedrnn train --out {out} --resume" if (out / CONFIG).exists() else
             "train again")  # fmt: skip
    return f"cannot write {error.filename or out}: {error.strerror}; {kept}: {fix}, then {go_on}"

"""The ``gatedrnn`` command: one module per subcommand.

The command parses first and imports the work after: every subcommand module is light to
import (torch, the layers and the tasks are imported inside ``run``), so ``gatedrnn --help``,
``--version``, ``presets`` and each subcommand's ``--help`` answer without starting torch.

Exit codes: 0 done; 1 the work failed (a NaN loss, a lost torchrun process); 2 a usage
error, in one line; 130 and 143 stopped by SIGINT and SIGTERM (128 + the signal's number, the
shell's convention; ``train`` saves the step under way first, see :class:`gatedrnn.train.Stopped`);
141 a reader of the output closed the pipe.
"""

from __future__ import annotations

import argparse
import os
import sys

from gatedrnn.cli import convert, demo, evaluate, explore, export, generate, predict, presets, report, train
from gatedrnn.cli.errors import Parser, UsageError

SUBCOMMANDS = {"demo": demo, "train": train, "evaluate": evaluate, "generate": generate, "predict": predict,
               "report": report, "presets": presets, "export": export, "explore": explore,
               "convert": convert}  # fmt: skip


def version() -> str:
    """What ``gatedrnn --version`` prints: this package's version and the torch and Python it
    runs on (torch's as installed, read without importing it)."""
    import platform
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    from gatedrnn import __version__

    try:
        torch = installed("torch")
    except PackageNotFoundError:
        torch = "not installed"
    return f"gatedrnn {__version__} (torch {torch}, Python {platform.python_version()})"


def build_parser(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, dict]:
    """The command's parser and its subcommands' parsers by name. ``argv`` tells ``train``
    which task's own options to offer (the one its command line names)."""
    parser = Parser(
        prog="gatedrnn",
        description="Gated recurrent networks: train, evaluate and look inside LSTM, GRU and RNN cells.",
    )
    parser.add_argument("--version", action="version", version=version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    subparsers = {}
    for name, module in SUBCOMMANDS.items():
        if name == "train":  # offers the options of the task it trains, when the command is train
            subparsers[name] = module.add_parser(sub, train.named_task(argv[1:]) if argv[:1] == ["train"] else None)
        else:
            subparsers[name] = module.add_parser(sub)
    return parser, subparsers


def main(argv: list[str] | None = None) -> int:
    try:
        parser, subparsers = build_parser(argv)
    except UsageError as error:  # the task named on the command line cannot be imported
        print(f"gatedrnn train: error: {error}", file=sys.stderr)
        return 2
    args, extras = parser.parse_known_args(argv)
    if args.command is None:
        if extras:
            parser.unrecognized(extras)
        parser.print_help()
        return 2
    if extras:
        explain = getattr(SUBCOMMANDS[args.command], "explain_unknown", None)  # whose option it is, if any
        subparsers[args.command].unrecognized(extras, explain and (lambda flag: explain(flag, args)))
    try:
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # a broken pipe shows here, where it is handled, not at exit
        return code
    except UsageError as error:
        print(f"gatedrnn {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as error:  # Ctrl-C outside train's own handling
        print(f"gatedrnn {args.command}: interrupted", file=sys.stderr)
        return getattr(error, "exit_code", 130)
    except BrokenPipeError:  # output piped into a reader that stopped early (| head): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error as Python flushes
        return 141


if __name__ == "__main__":
    sys.exit(main())

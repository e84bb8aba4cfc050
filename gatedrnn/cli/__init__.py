"""The ``gatedrnn`` command: one module per subcommand."""

from __future__ import annotations

import argparse
import os
import sys

from gatedrnn.cli import demo, evaluate, export, generate, predict, presets, report, train
from gatedrnn.cli.errors import UsageError

SUBCOMMANDS = {"demo": demo, "train": train, "evaluate": evaluate, "generate": generate, "predict": predict,
               "report": report, "presets": presets, "export": export}  # fmt: skip


def version() -> str:
    """What ``gatedrnn --version`` prints: this package's version and the torch and Python it runs on."""
    import platform

    import torch

    from gatedrnn import __version__

    return f"gatedrnn {__version__} (torch {torch.__version__}, Python {platform.python_version()})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatedrnn",
        description="Gated recurrent networks: train, evaluate and look inside LSTM, GRU and RNN cells.",
    )
    parser.add_argument("--version", action="version", version=version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # a broken pipe shows here, where it is handled, not at exit
        return code
    except UsageError as error:
        print(f"gatedrnn {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gatedrnn {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped early (| head): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error as Python flushes
        return 141


if __name__ == "__main__":
    sys.exit(main())

"""The ``gatedrnn`` command: one module per subcommand."""

from __future__ import annotations

import argparse
import sys

from gatedrnn.cli import demo, evaluate, export, generate, report, train
from gatedrnn.cli.errors import UsageError

SUBCOMMANDS = {"demo": demo, "train": train, "evaluate": evaluate, "generate": generate, "report": report,
               "export": export}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatedrnn",
        description="Gated recurrent networks: train, evaluate and look inside LSTM, GRU and RNN cells.",
    )
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
        return int(args.run(args) or 0)
    except UsageError as error:
        print(f"gatedrnn {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gatedrnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""How the command reports mistakes: one line, exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import sys


class UsageError(Exception):
    """A mistake in what the user asked for: reported in one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse's parser, and an unknown option answered with the closest known one
    ("--hiden-size: did you mean --hidden-size?") by the subcommand it was given to."""

    def unrecognized(self, extras: list[str], explain=None):
        """Exits with one line on ``extras``, the arguments the parser did not take.
        ``explain(flag)`` may say more of an unknown ``--flag`` (whose option it is)."""
        for arg in extras:
            if not arg.startswith("--"):
                continue
            flag = arg.split("=", 1)[0]
            said = explain(flag) if explain else None
            if said:
                self.error(said)
            known = [s for s in self._option_string_actions if s.startswith("--")]
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.7)
            if close:
                self.error(f"unrecognized arguments: {' '.join(extras)} ({flag}: did you mean {close[0]}?)")
        self.error(f"unrecognized arguments: {' '.join(extras)}")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def run_errors(run):
    """Turns the errors a user can cause (bad files, bad values) into UsageError."""

    @functools.wraps(run)
    def wrapped(args):
        try:
            return run(args)
        except Exception as error:
            if isinstance(error, _user_errors()):
                raise UsageError(str(error)) from None
            raise

    return wrapped


def _user_errors() -> tuple:
    """The exceptions that are the user's to fix. A checkpoint or lock error can only come from
    its module once imported, so a command that never loads one does not import it (nor torch)."""
    kinds = [FileNotFoundError, ValueError, json.JSONDecodeError]
    for module, name in (("gatedrnn.checkpoint", "CheckpointError"), ("gatedrnn.lock", "RunFolderBusy")):
        if module in sys.modules:
            kinds.append(getattr(sys.modules[module], name))
    return tuple(kinds)

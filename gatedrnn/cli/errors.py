"""How the command reports mistakes: one line, exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import functools
import json


class UsageError(Exception):
    """A mistake in what the user asked for: reported in one line, exit code 2."""


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
        from gatedrnn.checkpoint import CheckpointError
        from gatedrnn.lock import RunFolderBusy

        try:
            return run(args)
        except (CheckpointError, RunFolderBusy, FileNotFoundError, ValueError, json.JSONDecodeError) as error:
            raise UsageError(str(error)) from None

    return wrapped

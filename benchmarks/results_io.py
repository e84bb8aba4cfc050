"""What the benchmarks share: writing a results file whole (a temporary file renamed over it),
stamped with the command that produced it and the machine it ran on (``benchmarks/tables.py``
prints both under every table it makes from the file)."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    """The CPU model, its cores, the threads torch runs on and torch's version, now."""
    import torch

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__}  # fmt: skip


def command() -> str:
    """This process's command line, as it could be typed again from the repository root."""
    return shlex.join(["python", *sys.argv])


def stamped(value) -> dict:
    """``value`` with "command" (a list of command lines) and "machine" keys; a list becomes the
    "rows" of such a dict."""
    if not isinstance(value, dict):
        value = {"rows": value}
    return {"command": [command()], "machine": machine(), **value}


def write_json(path: str, value) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(stamped(value), f, indent=1)
    os.replace(path + ".tmp", path)

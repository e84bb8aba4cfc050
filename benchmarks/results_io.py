"""What the benchmarks share: writing a results file whole (a temporary file renamed over it)."""

from __future__ import annotations

import json
import os


def write_json(path: str, value) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=1)
    os.replace(path + ".tmp", path)

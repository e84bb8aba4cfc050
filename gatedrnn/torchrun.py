"""What a process knows of torchrun before torch starts (the command reads it while it parses):
whether it runs under torchrun, and how long a process waits for the others by default."""

from __future__ import annotations

import os

TIMEOUT_MINUTES = 30.0  # torch's own default; rank 0 evaluates while the others wait this long at most


def under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ

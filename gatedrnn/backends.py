"""Which implementation runs a layer: ``backend="reference"`` is the readable loop of
:mod:`gatedrnn.reference`; ``"auto"`` picks the fastest one that supports the
configuration."""

from __future__ import annotations

from gatedrnn import reference

BACKENDS = ("auto", "reference")


def select_backend(layer, x, want_trace):
    """The ``run_direction`` function that will run ``layer`` on ``x``."""
    return reference.run_direction

"""Models in and out of other frameworks, one module per framework: the official ``xlstm``
package (:mod:`.xlstm`), Keras 3 (:mod:`.keras`), Flax (:mod:`.flax`) and haste
(:mod:`.haste`). torch.nn's own layers convert with ``from_torch``/``to_torch`` on each layer.

Each converter copies weights exactly (no training, no approximation) and refuses, with an
error naming the layer and the option, what gatedrnn cannot compute. The names below are
imported on first use, so a framework that is not installed costs nothing until it is asked for.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "from_xlstm": "gatedrnn.convert.xlstm", "to_xlstm": "gatedrnn.convert.xlstm",
    "from_keras": "gatedrnn.convert.keras", "to_keras": "gatedrnn.convert.keras_export",
    "from_flax": "gatedrnn.convert.flax", "to_flax": "gatedrnn.convert.flax_export",
    "from_haste": "gatedrnn.convert.haste", "to_haste": "gatedrnn.convert.haste",
}  # fmt: skip

__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'gatedrnn.convert' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value

"""What the two directions of the Flax converter share (:mod:`gatedrnn.convert.flax`, Flax →
gatedrnn, and :mod:`gatedrnn.convert.flax_export`, gatedrnn → Flax): Flax's cell names and gate
orders, arrays to tensors and back, and reading a params tree (its leaves, its wrappers)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

# cell_type as given (class name, or the command's --cell) -> Flax's class name
CELL_NAMES = {
    "lstm": "LSTMCell", "lstmcell": "LSTMCell", "optimizedlstm": "OptimizedLSTMCell",
    "optimizedlstmcell": "OptimizedLSTMCell", "gru": "GRUCell", "grucell": "GRUCell", "mgu": "MGUCell",
    "mgucell": "MGUCell", "simple": "SimpleCell", "simplecell": "SimpleCell", "rnn": "SimpleCell",
    "convlstm": "ConvLSTMCell", "convlstmcell": "ConvLSTMCell",
}  # fmt: skip
LSTM_GATES = ("i", "f", "g", "o")  # Flax's and torch's order in LSTMCell; ConvLSTMCell's is i, g, f, o
GRU_GATES = ("r", "z", "n")


# -- arrays ----------------------------------------------------------------------------------------


def tensor_of(array) -> torch.Tensor:
    """A jax or numpy array as a torch tensor of its dtype (bfloat16 through float32, exactly)."""
    a = np.asarray(array)
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(np.array(a, copy=True))


def array_of(tensor: torch.Tensor):
    """A torch tensor as a jax array of its dtype."""
    import jax.numpy as jnp

    t = tensor.detach().cpu()
    if t.dtype == torch.bfloat16:
        return jnp.asarray(t.float().numpy(), dtype=jnp.bfloat16)
    return jnp.asarray(t.numpy().copy())


def leaf(tree: Mapping, name: str, key: str, where: str, shape: tuple | None = None) -> torch.Tensor:
    """``tree[name][key]`` as a tensor, checked (its shape too, where given); ``where`` names the
    subtree in the errors."""
    if name not in tree:
        raise ValueError(f"params{where}: no {name!r} (has {sorted(tree)}): not the parameters of this Flax cell")
    sub = tree[name]
    if not isinstance(sub, Mapping) or key not in sub:
        raise ValueError(f"params{where}[{name!r}]: no {key!r} (has {sorted(sub) if isinstance(sub, Mapping) else sub})")
    t = tensor_of(sub[key])
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"params{where}[{name!r}][{key!r}]: expected shape {tuple(shape)}, got {tuple(t.shape)}")
    return t


def has_bias(tree: Mapping, name: str) -> bool:
    """Whether the dense layer ``name`` of ``tree`` has a bias."""
    return isinstance(tree.get(name), Mapping) and "bias" in tree[name]


def expect_keys(tree: Mapping, names: set, where: str, cell: str) -> None:
    """Refuses a cell's params whose dense layers are not exactly ``names``."""
    if set(tree) != names:
        raise ValueError(f"params{where}: a Flax {cell} has the dense layers {sorted(names)}, got {sorted(tree)}")


# -- what was given: params, a cell type, perhaps a module ----------------------------------------


def is_nnx(value) -> bool:
    """Whether ``value`` is an nnx module or state (else a linen params tree)."""
    from flax import nnx

    return isinstance(value, (nnx.Module, nnx.State))


def plain(tree) -> dict:
    """A nested plain dict of a linen params tree (a FrozenDict, or ``{"params": ...}``)."""
    if not isinstance(tree, Mapping):
        raise TypeError(f"params must be a Flax params dict (linen) or an nnx module or state, got {type(tree).__name__}")
    tree = {k: (plain(v) if isinstance(v, Mapping) else v) for k, v in tree.items()}
    return tree["params"] if set(tree) == {"params"} else tree


def cell_name(cell_type) -> str:
    """Flax's class name for ``cell_type``: a name, a Flax class, or a Flax module."""
    if isinstance(cell_type, str):
        key = cell_type.lower().replace("_", "").replace("-", "")
        if key not in CELL_NAMES:
            raise ValueError(f"cell_type must name a Flax cell ({', '.join(sorted(set(CELL_NAMES.values())))}), "
                             f"got {cell_type!r}")  # fmt: skip
        return CELL_NAMES[key]
    name = (cell_type if isinstance(cell_type, type) else type(cell_type)).__name__
    if name not in set(CELL_NAMES.values()):
        raise ValueError(f"cell_type: gatedrnn converts Flax's {', '.join(sorted(set(CELL_NAMES.values())))}, "
                         f"RNN and Bidirectional; got {name}")  # fmt: skip
    return name


def same_function(given, *expected) -> bool:
    """Whether ``given`` is one of ``expected`` (or wraps one)."""
    return any(given is e or getattr(given, "__wrapped__", None) is e for e in expected)


def unwrap(module, tree: dict) -> tuple[object, list, str, bool]:
    """``(cell module or None, each direction's cell params, wrapper, batch_first)`` where
    wrapper is ``""``, ``"rnn"`` or ``"bidirectional"``; checks what the wrappers set."""
    batch_first = not getattr(module, "time_major", False)
    if module is not None and type(module).__name__ == "Bidirectional":
        from flax.linen.recurrent import _concatenate

        merge = getattr(module, "merge_fn", _concatenate)
        if not same_function(merge, _concatenate) and getattr(merge, "__name__", "") != "_concatenate":
            raise ValueError(f"Bidirectional(merge_fn={getattr(merge, '__name__', merge)}): gatedrnn's "
                             "bidirectional layer concatenates the two directions (Flax's default merge)")  # fmt: skip
        forward, backward = module.forward_rnn, module.backward_rnn  # it sets each one's reverse itself
        if type(forward.cell) is not type(backward.cell):
            raise ValueError("Bidirectional: its two directions hold different cells "
                             f"({type(forward.cell).__name__}, {type(backward.cell).__name__})")  # fmt: skip
        module = forward.cell
    elif module is not None and type(module).__name__ == "RNN":
        if getattr(module, "reverse", False):
            raise ValueError("RNN(reverse=True): gatedrnn's layers read forward, or both ways with "
                             "bidirectional=True (Flax's Bidirectional)")  # fmt: skip
        module = module.cell
    if "forward_rnn" in tree or "backward_rnn" in tree:
        if set(tree) != {"forward_rnn", "backward_rnn"}:
            raise ValueError(f"params: a Flax Bidirectional has forward_rnn and backward_rnn, got {sorted(tree)}")
        directions = []
        for name in ("forward_rnn", "backward_rnn"):
            part = tree[name]
            if not (isinstance(part, Mapping) and set(part) == {"cell"}):
                raise ValueError(f"params[{name!r}]: expected a Flax RNN's {{'cell': ...}}, got {sorted(part)}")
            directions.append(part["cell"])
        return module, directions, "bidirectional", batch_first
    if set(tree) == {"cell"}:
        return module, [tree["cell"]], "rnn", batch_first
    return module, [tree], "", batch_first


def conv_reorder(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Flax ConvLSTM's gate blocks i, g, f, o as torch's i, f, g, o (or back: the swap is its own inverse)."""
    i, g, f, o = t.chunk(4, dim=dim)
    return torch.cat([i, f, g, o], dim=dim)

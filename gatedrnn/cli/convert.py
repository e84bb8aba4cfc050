"""``gatedrnn convert``: a Keras model, a Flax cell's parameters or a haste layer's state dict as a
gatedrnn module in a file, checked on a random batch against the framework it came from."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gatedrnn.cli.errors import UsageError, run_errors

EXAMPLES = """examples:
  gatedrnn convert model.keras --out model.pt
  gatedrnn convert params.msgpack --from flax --cell lstm --out lstm.safetensors
  gatedrnn convert params.msgpack --from flax --cell mgu --as-gru --out mgu.pt
  gatedrnn convert haste.pt --from haste --cell layer_norm_lstm --zoneout 0.1 --out lstm.pt

--from is read from the extension when not given (.keras: keras, .msgpack: flax). A Flax file is
flax.serialization.to_bytes (or msgpack_serialize) of a linen cell's params, or of an RNN's or
Bidirectional's (then a layer comes out); --cell names the cell: lstm, optimized_lstm, gru, mgu,
simple, conv_lstm. A haste file is torch.save of a haste layer's state_dict (one layer, or --prefix
to pick one); --cell lstm, gru, layer_norm_lstm, layer_norm_gru (read from the keys if left out),
and haste's constructor settings --zoneout, --dropout, --batch-first.

The file: a gatedrnn cell or layer is written as its configuration and weights, with no pickle:
.safetensors (the configuration in the metadata) or any other name (torch.save of a dict of the
configuration and the state dict, loadable with weights_only=True). Load either with
gatedrnn.cli.convert.load_module(FILE). A Keras model converts into a module of its own classes:
torch.save of the whole module (.pt only; torch.load(FILE, weights_only=False), a pickle).
The check runs the source (Keras; Flax on jax; haste's documented equations in float64, haste
needing CUDA) and the converted module on one random batch and prints the largest difference."""

FRAMEWORKS = ("keras", "flax", "haste")
FORMAT = "gatedrnn-converted-1"
CLASSES = ("LSTM", "GRU", "RNN", "ConvLSTM", "LSTMCell", "GRUCell", "RNNCell", "ConvLSTMCell")  # what load_module builds
B, T = 3, 7  # the random batch of the check


def add_parser(sub):
    p = sub.add_parser("convert", help="convert a Keras model, Flax cell or haste layer into a gatedrnn module",
                       description="A Keras model, a Flax cell's parameters or a haste layer's state dict as a gatedrnn "
                       "module in a file, checked on a random batch against the framework it came from.", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("source", type=Path, metavar="FILE", help="a .keras file, a Flax msgpack, a haste state dict")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="the file to write (.pt or .safetensors)")
    p.add_argument("--from", dest="framework", choices=FRAMEWORKS, help="the source's framework (default: its extension)")
    p.add_argument("--cell", help="flax: lstm, optimized_lstm, gru, mgu, simple, conv_lstm; haste: lstm, gru, "
                                  "layer_norm_lstm, layer_norm_gru")  # fmt: skip
    p.add_argument("--activation", choices=("tanh", "relu"), default="tanh", help="flax --cell simple: its activation_fn")
    p.add_argument("--as-gru", action="store_true", help="flax --cell mgu: as the gatedrnn GRU that computes it")
    p.add_argument("--zoneout", type=float, default=0.0, metavar="P", help="haste: the layer's zoneout")
    p.add_argument("--dropout", type=float, default=0.0, metavar="P", help="haste: its dropout (DropConnect)")
    p.add_argument("--batch-first", action="store_true", help="haste: the layer was batch_first")
    p.add_argument("--prefix", help="haste: the keys' prefix of the layer in a model's state dict")
    p.add_argument("--seed", type=int, default=0, help="the random batch's seed (default 0)")
    p.set_defaults(run=run)
    return p


def _framework(args) -> str:
    if args.framework:
        return args.framework
    by_suffix = {".keras": "keras", ".msgpack": "flax"}
    if args.source.suffix in by_suffix:
        return by_suffix[args.source.suffix]
    raise UsageError(f"{args.source}: say which framework wrote it: --from {'|'.join(FRAMEWORKS)}")


def _options_for(framework: str, args) -> None:
    """Refuses an option given for another framework than the source's."""
    own = {"flax": ("cell", "activation", "as_gru"), "haste": ("cell", "zoneout", "dropout", "batch_first", "prefix"),
           "keras": ()}[framework]  # fmt: skip
    defaults = {"cell": None, "activation": "tanh", "as_gru": False, "zoneout": 0.0, "dropout": 0.0,
                "batch_first": False, "prefix": None}  # fmt: skip
    for name, default in defaults.items():
        if name not in own and getattr(args, name) != default:
            raise UsageError(f"--{name.replace('_', '-')} is not an option of --from {framework}")


# -- the converted module: what it is, its file -----------------------------------------------------


def describe(module) -> tuple[str, dict] | None:
    """``(class name, constructor keywords)`` of a gatedrnn cell or layer this command writes,
    or ``None`` for another module (a Keras model's).

    Args:
        module (torch.nn.Module): the converted module.
    """
    import gatedrnn

    name = type(module).__name__
    if name not in CLASSES or type(module) is not getattr(gatedrnn, name):
        return None
    if name == "ConvLSTMCell":
        return name, {"in_channels": module.in_channels, "hidden_channels": module.hidden_channels,
                      "kernel_size": list(module.kernel_size), "bias": module.bias}  # fmt: skip
    if name == "ConvLSTM":
        return name, {"in_channels": module.in_channels, "hidden_channels": module.hidden_channels,
                      "kernel_size": list(module.kernel_size), "num_layers": module.num_layers, "bias": module.bias,
                      "batch_first": module.batch_first}  # fmt: skip
    config = dict(module._config())
    if name in ("LSTM", "GRU", "RNN"):
        for option in ("layer_norm", "reset_after", "peephole", "coupled"):
            if hasattr(module, option) and getattr(module, option) != (option == "reset_after"):
                config[option] = getattr(module, option)
        if any(module.zoneout):
            zoneout = module.zoneout_given()
            config["zoneout"] = list(zoneout) if isinstance(zoneout, tuple) else zoneout
        for option in ("recurrent_dropout", "weight_dropout"):
            if getattr(module, option):
                config[option] = getattr(module, option)
    return name, config


def _signature(name: str, config: dict) -> str:
    return f"gatedrnn.{name}(" + ", ".join(f"{k}={v!r}" for k, v in config.items()) + ")"


def save_module(module, path: Path) -> str:
    """Writes ``module`` to ``path`` atomically (see the command's help); returns what was written.

    Args:
        module (torch.nn.Module): a gatedrnn cell or layer (its configuration and weights), or
            another module (written whole with ``torch.save``, to a ``.pt`` name only).
        path (Path): ``.safetensors`` (the configuration in the metadata), or any other name
            (``torch.save`` of a dict that ``weights_only=True`` loads).
    """
    import torch

    from gatedrnn.checkpoint import atomic_write

    described = describe(module)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    if described is None:
        if path.suffix == ".safetensors":
            raise UsageError(f"--out {path}: a {type(module).__name__} is no gatedrnn layer: it is written whole "
                             "with torch.save, to a .pt file")  # fmt: skip
        atomic_write(path, lambda tmp: torch.save(module, tmp))
        return f"the whole {type(module).__name__} (torch.save: torch.load(FILE, weights_only=False))"
    name, config = described
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        metadata = {"format": FORMAT, "class": name, "config": json.dumps(config)}
        atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))
    else:
        record = {"format": FORMAT, "class": name, "config": config, "state_dict": state}
        atomic_write(path, lambda tmp: torch.save(record, tmp))
    return f"{_signature(name, config)} and its weights (gatedrnn.cli.convert.load_module(FILE))"


def load_module(path):
    """The gatedrnn cell or layer ``gatedrnn convert`` wrote to ``path`` (``.safetensors`` or a
    ``torch.save`` dict), built from its configuration with its weights, in eval mode; no pickle.

    Args:
        path (str or Path): the file.

    Examples:
        >>> import gatedrnn, tempfile, pathlib
        >>> from gatedrnn.cli.convert import load_module, save_module
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "gru.safetensors"
        >>> _ = save_module(gatedrnn.GRU(3, 5, batch_first=True), path)
        >>> load_module(path)
        GRU(3, 5, batch_first=True)
    """
    import torch

    import gatedrnn

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{path}: not a file gatedrnn convert wrote (no {FORMAT!r} in its metadata)")
        name, config = metadata["class"], json.loads(metadata["config"])
    else:
        record = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise ValueError(f"{path}: not a file gatedrnn convert wrote (no {FORMAT!r} record)")
        name, config, state = record["class"], record["config"], record["state_dict"]
    if name not in CLASSES:
        raise ValueError(f"{path}: class {name!r} is not one gatedrnn convert writes")
    if isinstance(config.get("zoneout"), list):
        config["zoneout"] = tuple(config["zoneout"])
    dtype = next(iter(state.values())).dtype if state else None
    module = getattr(gatedrnn, name)(**config, dtype=dtype)
    module.load_state_dict(state)
    return module.eval()


# -- the check: the source framework's computation against the converted module ------------------


def _largest(pairs) -> float:
    import numpy as np

    worst = 0.0
    for ours, theirs in pairs:
        a, b = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
        if a.shape != b.shape:
            raise UsageError(f"the converted module's output has shape {a.shape}, the source's {b.shape}")
        worst = max(worst, float(np.abs(a - b).max()) if a.size else 0.0)
    return worst


def _check_flax(module, params, cell_type, args) -> tuple[float, str]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from gatedrnn.convert import flax_export
    from gatedrnn.convert.flax_common import plain

    nnx = flax_export.is_nnx_layout(params)  # an nnx module's state, saved as a plain dict
    build = flax_export.nnx_module if nnx else flax_export.linen_module
    flax_module = build(params, cell_type, activation=args.activation)
    variables = {"params": plain(params)}

    def apply(*inputs, **options):  # linen: apply the params; nnx: the module holds them
        return flax_module(*inputs, **options) if nnx else flax_module.apply(variables, *inputs, **options)

    rng = np.random.default_rng(args.seed)
    name = type(flax_module).__name__
    if name in ("RNN", "Bidirectional"):
        cell = flax_module.cell if name == "RNN" else flax_module.forward_rnn.cell
    else:
        cell = flax_module
    conv = type(cell).__name__ == "ConvLSTMCell"
    size = (getattr(module, "in_channels", None),) if conv else (getattr(module, "input_size", None),)
    frame = (6, 5) if conv else ()
    wrapped = flax_module is not cell
    x = rng.standard_normal((B, *((T,) if wrapped else ()), *frame, *size)).astype(np.float32)  # Flax: channels last
    xt = torch.from_numpy(x)
    if conv:
        xt = xt.movedim(-1, -3).contiguous()  # (..., H, W, C) -> (..., C, H, W)
    module.eval()
    with torch.no_grad():
        if wrapped:
            carry, y = apply(jnp.asarray(x), return_carry=True)
            out, state = module(xt)
            ours = [out.movedim(-3, -1) if conv else out]
            theirs = [y]
            flat = jax.tree_util.tree_leaves(carry)
            if isinstance(state, tuple):  # LSTM: gatedrnn (h, c), each (D, B, H); Flax (c, h) per direction
                h, c = state
                directions = [flat[i : i + 2] for i in range(0, len(flat), 2)]
                for d, (fc, fh) in enumerate(directions):
                    got_h, got_c = (h[d].movedim(-3, -1), c[d].movedim(-3, -1)) if conv else (h[d], c[d])
                    ours += [got_h, got_c]
                    theirs += [fh, fc]
            else:
                ours += [state[d] for d in range(state.shape[0])]
                theirs += flat
            what = f"outputs and final states of {type(flax_module).__name__}({type(cell).__name__}) on a ({B}, {T}, ...) batch"
        else:
            if nnx:
                from flax.nnx import Rngs

                zeros = cell.initialize_carry(x.shape, rngs=Rngs(0))
            else:
                zeros = cell.initialize_carry(jax.random.key(0), x.shape)
            carry0 = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.standard_normal(a.shape).astype(np.float32)), zeros)
            new_carry, _ = apply(carry0, jnp.asarray(x))

            def to_torch(a):  # channels last (Flax) -> channels first (gatedrnn) for a ConvLSTM
                return torch.from_numpy(np.array(a)).movedim(-1, -3) if conv else torch.from_numpy(np.array(a))

            if isinstance(carry0, tuple):  # (c, h)
                h, c = module(xt, (to_torch(carry0[1]), to_torch(carry0[0])))
                ours, theirs = [h, c], [to_torch(new_carry[1]), to_torch(new_carry[0])]
            else:
                ours, theirs = [module(xt, to_torch(carry0))], [to_torch(new_carry)]
            what = f"one step of {type(cell).__name__} on a batch of {B}, from a random carry"
    return _largest((o.numpy(), np.asarray(t)) for o, t in zip(ours, theirs)), what


def _check_haste(module, state_dict, args) -> tuple[float, str]:
    import torch

    from gatedrnn.convert.haste import _strip_prefix, haste_equations

    entries = _strip_prefix(state_dict, args.prefix)
    generator = torch.Generator().manual_seed(args.seed)
    x = torch.randn(T, B, module.input_size, generator=generator, dtype=module.weight_ih_l0.dtype)  # (T, B, I)
    output, state = haste_equations(entries, args.cell, x, zoneout=args.zoneout)
    module.eval()
    with torch.no_grad():
        ours, got = module(x.transpose(0, 1) if module.batch_first else x)
    if module.batch_first:
        ours = ours.transpose(0, 1)
    pairs = [(ours, output)]
    if isinstance(got, tuple):
        pairs += [(got[0][0], state[0]), (got[1][0], state[1])]
    else:
        pairs += [(got[0], state)]
    return _largest((a.double().numpy(), b.numpy()) for a, b in pairs), \
        f"outputs and final states on a ({T}, {B}, {module.input_size}) batch, in eval mode, vs haste's equations (float64)"  # fmt: skip


def _check_keras(module, path: Path, args) -> tuple[float, str]:
    import os

    import numpy as np
    import torch

    os.environ.setdefault("KERAS_BACKEND", "torch")  # as from_keras: Keras on PyTorch unless chosen already
    import keras
    model = keras.saving.load_model(path)
    shape = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else None
    if shape is None:
        return float("nan"), "not checked: the Keras model has no input shape"
    rng = np.random.default_rng(args.seed)
    concrete = [B if i == 0 else (T if s is None else s) for i, s in enumerate(shape)]
    dtype = str(getattr(model.inputs[0], "dtype", "float32"))
    if "int" in dtype:
        embedding = next((layer for layer in model.layers if type(layer).__name__ == "Embedding"), None)
        vocabulary = embedding.input_dim if embedding is not None else 2
        x = rng.integers(1, vocabulary, size=concrete)
        xt = torch.from_numpy(x)
    else:
        x = rng.standard_normal(concrete).astype(np.float32)
        xt = torch.from_numpy(x)
    theirs = model(x)
    module.eval()
    with torch.no_grad():
        ours = module(xt)
    flat = lambda v: [v] if not isinstance(v, (list, tuple)) else [a for item in v for a in flat(item)]
    theirs = [keras.ops.convert_to_numpy(a) for a in flat(theirs)]
    ours = [a.detach().numpy() for a in flat(ours)]
    if len(ours) != len(theirs):
        raise UsageError(f"the converted module returns {len(ours)} tensors, the Keras model {len(theirs)}")
    return _largest(zip(ours, theirs)), f"outputs on a {tuple(concrete)} batch"


# -- the command ------------------------------------------------------------------------------------


def _read_haste(path: Path):
    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (a pickle of code, not tensors, or no torch file: torch's many kinds)
        raise UsageError(f"{path}: not a state dict torch.load reads with weights_only=True ({error})".split("\n")[0])
    for key in ("state_dict", "model"):  # a training checkpoint holding one
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict):
        raise UsageError(f"{path}: holds a {type(loaded).__name__}, not a state dict")
    return loaded


def _read_flax(path: Path):
    from flax import serialization

    try:
        return serialization.msgpack_restore(path.read_bytes())
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001  (msgpack's many kinds of bad bytes)
        raise UsageError(f"{path}: not a Flax msgpack file ({type(error).__name__}: {error})") from None


@run_errors
def run(args) -> int:
    try:
        return _run(args)
    except TypeError as error:  # a layer or value a converter does not take, named by it
        raise UsageError(str(error)) from None


def _run(args) -> int:
    framework = _framework(args)
    _options_for(framework, args)
    if not args.source.is_file():
        raise UsageError(f"{args.source}: no such file")
    if not args.out.parent.is_dir():
        raise UsageError(f"--out {args.out}: the folder {args.out.parent} does not exist")
    if args.out.resolve() == args.source.resolve():
        raise UsageError(f"--out {args.out}: is the source itself")
    for p, name in ((args.zoneout, "--zoneout"), (args.dropout, "--dropout")):
        if not 0.0 <= p <= 1.0:
            raise UsageError(f"{name} must be a probability in [0, 1], got {p}")
    if framework == "keras":
        try:
            from gatedrnn.convert import from_keras
        except ImportError as error:
            raise UsageError(f"--from keras needs Keras 3: pip install 'gatedrnn[interop]' ({error})") from None
        module = from_keras(args.source)
        difference, what = _check_keras(module, args.source, args)
        source = "Keras model"
    elif framework == "flax":
        if not args.cell:
            raise UsageError("--from flax needs --cell: lstm, optimized_lstm, gru, mgu, simple or conv_lstm")
        try:
            from gatedrnn.convert import flax as converting
            from gatedrnn.convert.flax_common import cell_name
        except ImportError as error:
            raise UsageError(f"--from flax needs jax and flax: pip install 'gatedrnn[interop]' ({error})") from None
        params = _read_flax(args.source)
        cell_type = cell_name(args.cell)
        if args.activation != "tanh":
            if cell_type != "SimpleCell":
                raise UsageError("--activation is a SimpleCell's (--cell simple)")
            import flax.linen as fnn
            import jax

            cell_type = fnn.SimpleCell(features=1, activation_fn=jax.nn.relu)  # its options are what is read
        module = converting.from_flax(params, cell_type, as_gru=args.as_gru)
        difference, what = _check_flax(module, params, cell_type, args)
        source = f"Flax {cell_name(cell_type)}"
    else:
        from gatedrnn.convert.haste import _cell_name, _guess, _strip_prefix, from_haste

        state_dict = _read_haste(args.source)
        module = from_haste(state_dict, args.cell, batch_first=args.batch_first, zoneout=args.zoneout,
                            dropout=args.dropout, prefix=args.prefix)  # fmt: skip
        source = f"haste {_cell_name(args.cell) if args.cell else _guess(_strip_prefix(state_dict, args.prefix))}"
        difference, what = _check_haste(module, state_dict, args)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in module.state_dict().items())
    print(f"converted the {source} in {args.source} into {type(module).__name__}: {shapes}")
    written = save_module(module.cpu(), args.out)
    print(f"wrote {args.out}: {written}")
    print(f"checked {what}: max abs difference {difference:.2e}")
    return 0

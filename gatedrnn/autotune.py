"""``backend="auto"`` decided by measurement: the first call of a new shape class times each
candidate implementation once, briefly, and the winner is remembered, in memory and in a small
cache file beside the native build, the way ``torch.backends.cudnn.benchmark`` picks
convolution algorithms.

What is measured: each candidate runs the layer on the first steps of the call's own input
(forward only where no gradient is wanted; forward and backward, with ``torch.autograd.grad``
so that no ``.grad`` changes, where one is), interleaved in an order drawn afresh each round,
the median of ``ROUNDS`` to ``MAX_ROUNDS`` rounds per length (more for cheap calls) after
``WARMUPS`` warm-up calls each. torch's own kernel keeps a near tie: the fused loop wins only
where it is faster by more than ``TORCH_MARGIN``, and a win by less than ``CLOSE`` is timed
a second time before it counts. A win over it is provisional: the first call ``CONFIRM_S``
seconds later times the candidates again, and the win stands only if seen again
(:func:`choose`). (On this project's shared
two-core machine the same torch.nn LSTM call, (B, T, I, H) = (34, 112, 258, 53), took 4.2 ms
and 7.3 ms a second apart, and such swings do not move both candidates alike: a misread tie
would break auto's promise never to be slower than torch.nn.)

A call of ``T <= LONG`` steps is timed whole. A longer one is timed at ``LONG`` steps first;
where its slowest candidate should then take at most ``WHOLE_S`` over the whole call, the
whole call is timed too, and decides. The time per step is not constant: once a call's
activations outgrow the caches it grows, and not alike for both candidates (torch's LSTM in
training at (B, T, I, H) = (17, 1980, 211, 19): 21 us a step over 128 steps, 50 over all
1980, where the fused loop's stayed 24-30; chosen from the prefixes, ``auto`` was 1.6x the
faster candidate: ``benchmarks/random_shapes.py``, seed 2). A call too long for that is also
timed at ``SHORT`` steps, and its time at ``T`` read off the line through the two: a call
costs a fixed part (dispatch, buffers, weight packing) plus a part per step, and the
candidates differ in both, so a single short prefix overweights the fixed part. (With one
32-step prefix, ``auto`` chose torch's kernel for the LSTM at (5, 313, 161, 27) in inference,
where the fused loop took 0.69 of its time over the whole call.) That costs a few
milliseconds for a small layer and at most about ``BUDGET_S`` seconds per length for a large
one, once per shape class and process, twice where torch's kernel loses (the second look
half a second later); then once per machine, from the file.
torch's random number generator is saved and restored around it, so a run draws the same
dropout masks whether it timed or not.

A **shape class** is the layer's cell, dtype, whether a gradient is wanted, its number of
layers and directions, and ``B``, ``T``, ``I``, ``H`` rounded to half octaves (powers of
``sqrt(2)``), plus the number of threads torch uses.

Never timed: inside ``torch.compile``, ``torch.export``, ``torch.jit.trace`` or a
``torch.func`` transform (the caller's routing already excludes those), or when autotuning is
off: ``gatedrnn.set_autotune(False)`` or ``GATEDRNN_AUTOTUNE=0`` in the environment. Then the
static rule decides (:func:`gatedrnn.backends.static_backend`).

The candidates compute the same function; their results agree within float32 rounding (the
tests compare them), so which one wins changes speed, not the answer beyond rounding.

The cache file, ``autotune-<digest>.json`` in the native build's root folder
(``~/.cache/gatedrnn`` by default), is keyed by the CPU model, the thread count, torch's and
gatedrnn's versions: a file from another machine, version or a corrupt one is ignored and
replaced; a provisional choice is written once confirmed. The file is written whole to a
temporary file and renamed over the old one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import platform
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

SHORT = 32  # the shorter of the two prefixes a long call is timed at
LONG = 128  # calls up to this many steps are timed whole; longer ones at SHORT and LONG steps
ROUNDS = 5  # interleaved timing rounds per length, after WARMUPS warm-up calls each ...
MAX_ROUNDS = 15  # ... and up to this many where they fit in FAST_S (cheap calls: their spread is widest)
FAST_S = 0.05  # seconds of the slowest candidate's calls a length may take in rounds past ROUNDS
WARMUPS = 2  # a first call at a new shape allocates and packs afresh; the second was often slow too
# torch's kernel keeps a near tie: another candidate wins only if faster than it by more than this
# fraction. auto promises never to be slower than torch.nn; a tie misread by the timing noise
# of a shared machine costs that promise, a true win this small costs at most this much
TORCH_MARGIN = 0.03
CLOSE = 0.10  # a candidate beating torch's kernel by less than this fraction is timed twice before it wins
CONFIRM_S = 0.5  # a win over torch's kernel is provisional this long; the first call after it times again
BUDGET_S = 0.25  # a candidate slower than this per call is timed fewer rounds (never fewer than 1)
WHOLE_S = 0.25  # a longer call whose slowest candidate should take at most this is timed whole

_enabled: bool | None = None  # None: from the environment
_lock = threading.Lock()
_memory: dict[str, str] = {}  # shape class -> winner, this process
_pending: dict[str, tuple[str, float]] = {}  # shape class -> (provisional winner, when it was timed): choose()
_loaded_from: Path | None = None
_generation = 0  # counts forget() and set_autotune(): what layers remember of earlier choices is stale then
_looks: list[dict] = []  # this process's timings, oldest first (at most MAX_LOOKS): looks()
MAX_LOOKS = 1000


def set_autotune(enabled: bool) -> None:
    """Turns measured choices of ``backend="auto"`` on (the default) or off; off, a static rule
    decides. Overrides ``GATEDRNN_AUTOTUNE``.

    Args:
        enabled (bool): whether ``auto`` times its candidates on a new shape class.

    Examples:
        >>> import gatedrnn
        >>> gatedrnn.set_autotune(False)
        >>> gatedrnn.autotune_enabled()
        False
        >>> gatedrnn.set_autotune(True)
    """
    global _enabled, _generation
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True or False, got {enabled!r}")
    _enabled = enabled
    _generation += 1


def autotune_enabled() -> bool:
    """Whether ``backend="auto"`` times its candidates: :func:`set_autotune`'s last value, else
    ``GATEDRNN_AUTOTUNE`` (``0``, ``false``, ``off`` or ``no`` turn it off), else on.

    Examples:
        >>> import gatedrnn
        >>> gatedrnn.set_autotune(True)
        >>> gatedrnn.autotune_enabled()
        True
    """
    if _enabled is not None:
        return _enabled
    value = os.environ.get("GATEDRNN_AUTOTUNE")  # (read on every call of an auto layer: the usual None first)
    return value is None or value.strip().lower() not in ("0", "false", "off", "no")


def forget() -> None:
    """Drops the choices remembered in this process, provisional ones too (the file stays): the
    next call of each shape class reads the file again, or times."""
    global _loaded_from, _generation
    with _lock:
        _memory.clear()
        _pending.clear()
        _loaded_from = None
        _generation += 1


def generation() -> int:
    """How many times :func:`forget` and :func:`set_autotune` have run in this process: a
    layer that remembers its choice per call signature (:func:`gatedrnn.backends.plan_key`)
    keys it by this count, so that neither leaves it a stale choice."""
    return _generation


def bucket(n: int) -> int:
    """``n`` rounded to the nearest half octave, as an index: ``round(2 * log2(n))``."""
    return round(2 * math.log2(max(n, 1)))


def shape_class(cell: str, dtype: torch.dtype, grad: bool, num_layers: int, directions: int, B: int, T: int,
                I: int, H: int) -> str:  # noqa: E741
    """The key a choice is remembered under (see the module docstring).

    Args:
        cell (str): the layer's mode (``"LSTM"``, ``"GRU"``, ``"RNN_TANH"``, ...).
        dtype (torch.dtype): the input's.
        grad (bool): whether a gradient is wanted (training).
        num_layers (int): the layer's.
        directions (int): 1, or 2 when bidirectional.
        B (int): the batch size.
        T (int): the sequence length.
        I (int): the input features.
        H (int): the hidden size.
    """
    return _shape_class(cell, dtype, grad, num_layers, directions, B, T, I, H, torch.get_num_threads())


@functools.lru_cache(maxsize=4096)
def _shape_class(cell, dtype, grad, num_layers, directions, B, T, I, H, threads) -> str:  # noqa: E741
    """The memoized key (every call of every layer asks for it)."""
    parts = [cell, str(dtype).removeprefix("torch."), "train" if grad else "infer", f"L{num_layers}",
             f"D{directions}", *(f"{n}{bucket(v)}" for n, v in zip("BTIH", (B, T, I, H))),
             f"threads{threads}"]  # fmt: skip
    return "-".join(parts)


def _identity() -> dict:
    """What a cache file is keyed by: the CPU model, the thread count, torch's and gatedrnn's versions."""
    return dict(_machine(), threads=torch.get_num_threads())


@functools.cache
def _machine() -> dict:
    from gatedrnn import __version__

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "torch": torch.__version__, "gatedrnn": __version__}


def cache_path() -> Path:
    """This machine's, thread count's and versions' cache file."""
    from gatedrnn.fused._native import build_root

    digest = hashlib.sha1(json.dumps(_identity(), sort_keys=True).encode()).hexdigest()[:12]
    return build_root() / f"autotune-{digest}.json"


def _read(path: Path) -> dict[str, str]:
    """The choices in ``path``; empty when it is missing, corrupt or from another identity."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("identity") != _identity() or not isinstance(data.get("choices"), dict):
        return {}
    return {k: v for k, v in data["choices"].items() if isinstance(k, str) and isinstance(v, str)}


def _write(path: Path, choices: dict[str, str]) -> None:
    """``choices`` merged over what the file holds now, written whole and renamed into place. A
    folder that cannot be written costs the file, not the choice."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        merged = _read(path) | choices
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"identity": _identity(), "choices": merged}, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


def remembered(key: str) -> str | None:
    """The winner for ``key`` from this process or the cache file, else None. A choice already
    remembered costs one dictionary lookup: this runs on every call of every layer."""
    global _loaded_from
    winner = _memory.get(key)  # (the key holds the thread count: the file for another count is another file)
    if winner is not None:
        return winner
    with _lock:
        path = cache_path()
        if _loaded_from != path:
            _memory.update(_read(path))
            _loaded_from = path
        return _memory.get(key)


def looks() -> list[dict]:
    """What the autotuner measured in this process, oldest first (the latest ``MAX_LOOKS``):
    per timing of a shape class, ``{"key": ..., "seconds": {candidate: seconds per call},
    "winner": ...}``, where ``winner`` is the choice after that look. For a benchmark that
    wants to show why ``auto`` chose what it did (``benchmarks/random_shapes.py``).

    Examples:
        >>> from gatedrnn import autotune
        >>> isinstance(autotune.looks(), list)
        True
    """
    with _lock:
        return [dict(look, seconds=dict(look["seconds"])) for look in _looks]


def _saw(key: str, seconds: dict[str, float], winner: str) -> None:
    with _lock:
        _looks.append({"key": key, "seconds": dict(seconds), "winner": winner})
        del _looks[:-MAX_LOOKS]


def remember(key: str, winner: str) -> None:
    with _lock:
        _memory[key] = winner
        _write(cache_path(), {key: winner})


def time_candidates(candidates: dict[str, Callable[[int], object]], T: int) -> dict[str, float]:
    """Estimated seconds of each candidate's call over ``T`` steps: ``candidates[name](steps)``
    runs it on the first ``steps`` steps. Timed whole where ``T <= LONG`` or where the whole
    call should take at most ``WHOLE_S`` (from its time at ``LONG`` steps), else extrapolated
    from ``SHORT`` and ``LONG`` steps (see the module docstring); medians of interleaved
    rounds after one warm-up call each (fewer rounds for a candidate slower than
    ``BUDGET_S``). torch's CPU random state is restored afterwards."""
    rng = torch.random.get_rng_state()
    try:
        if T <= LONG:
            return _medians(candidates, T)
        long = _medians(candidates, LONG)
        if max(long.values()) * T / LONG <= WHOLE_S:  # the whole call is cheap enough to time
            return _medians(candidates, T)
        short = _medians(candidates, SHORT)
        return {name: short[name] + (long[name] - short[name]) * (T - SHORT) / (LONG - SHORT) for name in candidates}
    finally:
        torch.random.set_rng_state(rng)


def _medians(candidates: dict[str, Callable[[int], object]], steps: int) -> dict[str, float]:
    """Median seconds per call of each candidate over ``steps`` steps, interleaved: ``ROUNDS``
    rounds (fewer where the slowest candidate's calls would pass ``BUDGET_S``), more, up to
    ``MAX_ROUNDS``, where they fit in ``FAST_S``. Cheap calls get the extra rounds because
    their times spread the most: torch's LSTM kernel at (B, T, I, H) = (14, 6, 198, 37) in
    inference (0.33 ms a call) over the same kernel in a second layer read 0.98-1.06 in six
    medians of 7 rounds, 0.996-1.005 in six medians of 200. Each round runs the candidates in
    an order drawn afresh (seeded, so a run repeats): a call's time depends on the call before
    it, and a fixed order gives each candidate a fixed predecessor (``benchmarks/timing.py``,
    ``shuffled_ratios``)."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(WARMUPS):  # warm-up, interleaved; the last gives a first reading of each cost
        for name, run in candidates.items():
            started = time.perf_counter()
            run(steps)
            times[name].append(time.perf_counter() - started)
    slowest = max(max(ts[-1] for ts in times.values()), 1e-9)
    rounds = max(1, min(ROUNDS, int(BUDGET_S / slowest)), min(MAX_ROUNDS, int(FAST_S / slowest)))
    for name in candidates:
        times[name] = []
    order, draw = list(candidates), random.Random(steps)  # (its own generator: the caller's stay untouched)
    for _ in range(rounds):
        draw.shuffle(order)
        for name in order:
            started = time.perf_counter()
            candidates[name](steps)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(ts) for name, ts in times.items()}


def pick(seconds: dict[str, float], prefer: str | None = None, margin: float = 0.0) -> str:
    """The winner among timed candidates (in order; ``seconds`` per call): the fastest, ties to
    the first, except that ``prefer`` keeps any call that no candidate beats by more than the
    fraction ``margin`` of its time."""
    fastest = min(seconds, key=lambda name: (seconds[name], list(seconds).index(name)))
    if prefer in seconds and seconds[fastest] >= (1.0 - margin) * seconds[prefer]:
        return prefer
    return fastest


def choose(key: str, candidates: dict[str, Callable[[int], object]], T: int, prefer: str | None = None,
           margin: float = 0.0) -> str:  # fmt: skip
    """The fastest of ``candidates`` for shape class ``key``: remembered, or timed now over a
    call of ``T`` steps (:func:`time_candidates`) and decided by :func:`pick` (ties to the first
    candidate; ``prefer`` unless beaten by more than ``margin``).

    A candidate that beats ``prefer`` by less than ``CLOSE`` is timed a second time, and the
    mean of the two times decides: a few rounds misread a near tie by several percent (a fused
    LSTM loop chosen at (207, 3, 310, 257) in inference ran at 1.10x torch.nn, torch's kernel
    at 1.02x: ``benchmarks/random_shapes.py``, seed 2). A choice of ``prefer`` is remembered
    then. Another winner is provisional (:func:`pending`): it runs the calls of the next
    ``CONFIRM_S`` seconds, and the first call after them times the candidates again; it is
    remembered only if it wins that look too (by more than ``margin``), else ``prefer`` is. A
    slowdown of a few milliseconds (the machine's other work) rarely favours the same
    candidate in two looks half a second apart: in a run of that benchmark before this look
    (seeds 0-2), at three of 720 calls ``auto`` ran the fused loop where torch's kernel took
    0.80-0.94 of its time (at two of them, started afresh three times each, the autotuner
    chose torch's kernel every time). (Each candidate's faster time of the two looks deciding instead let one
    reading 3% fast choose a loop that ran at 1.22x torch's kernel.) A misread that leaves
    ``prefer`` costs the promise never to be slower than torch.nn; one that keeps it costs at
    most the margin of a win."""
    winner = remembered(key)
    if winner in candidates:
        return winner
    held = _pending.get(key)
    if held is not None:
        winner, since = held
        if time.monotonic() - since < CONFIRM_S:
            return winner
        again = time_candidates(candidates, T)
        if pick(again, prefer, margin) != winner:  # not seen again: the preferred one
            winner = prefer
        _saw(key, again, winner)
        _pending.pop(key, None)
        remember(key, winner)
        return winner
    seconds = time_candidates(candidates, T)
    winner = pick(seconds, prefer, margin)
    _saw(key, seconds, winner)
    if prefer in seconds and winner != prefer and seconds[winner] > (1.0 - CLOSE) * seconds[prefer]:
        again = time_candidates(candidates, T)  # a close win over the preferred one: a second look
        winner = pick({name: (seconds[name] + again[name]) / 2 for name in seconds}, prefer, margin)
        _saw(key, again, winner)
    if prefer in seconds and winner != prefer:
        _pending[key] = (winner, time.monotonic())
        return winner
    remember(key, winner)
    return winner


def pending(key: str) -> bool:
    """Whether the choice for shape class ``key`` is provisional (:func:`choose`): a layer keeps
    it with its plans (:func:`gatedrnn.backends.plan_key`) only until its second look is due
    (:func:`due`), so that a later call comes back to take that look.

    Args:
        key (str): a shape class (:func:`shape_class`).

    Examples:
        >>> from gatedrnn import autotune
        >>> autotune.pending("LSTM-float32-infer-L1-D1-B4-T8-I8-H8-threads2")
        False
    """
    return key in _pending


def due(key: str) -> bool:
    """Whether the choice for ``key`` is no longer a provisional one in its ``CONFIRM_S``
    seconds (confirmed, forgotten, or due for its second look): a layer's plan that holds a
    provisional choice (:meth:`gatedrnn.RNNBase.forward`) asks this on each call."""
    held = _pending.get(key)
    return held is None or time.monotonic() - held[1] >= CONFIRM_S


def provisional(key: str) -> str | None:
    """The provisional winner for ``key`` (:func:`choose`) while its ``CONFIRM_S`` seconds
    last, else None: the cheap first question of every call of an ``auto`` layer."""
    held = _pending.get(key)
    return held[0] if held is not None and time.monotonic() - held[1] < CONFIRM_S else None

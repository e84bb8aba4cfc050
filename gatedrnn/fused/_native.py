"""Builds the native time loops (``csrc/*.cpp``) on first use, with torch's C++ extension
tooling and ninja, and caches them; where no compiler exists, the same loops in Python
(:mod:`gatedrnn.fused.loops`) stand in, after one warning.

``GATEDRNN_NATIVE=0`` in the environment forces the Python loops.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch

CSRC = Path(__file__).parent / "csrc"
SOURCES = ["bindings.cpp", "lstm.cpp", "gru.cpp", "rnn.cpp"]

# Instruction sets by what torch found this CPU can do; named explicitly (not -march=native)
# so that the cached build also runs on another machine of the same capability.
ARCH_FLAGS = {
    "AVX512": ["-mavx2", "-mfma", "-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl"],
    "AVX2": ["-mavx2", "-mfma"],
}

_kernels = None
_native_error: str | None = None


def _ninja_on_path() -> None:
    """Puts the ninja that pip installed with gatedrnn on PATH, where torch looks for it,
    even when the virtual environment is not activated."""
    try:
        import ninja
    except ImportError:
        return
    if ninja.BIN_DIR not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def _build():
    from torch.utils import cpp_extension

    _ninja_on_path()
    capability = torch.backends.cpu.get_cpu_capability()
    # -fno-trapping-math lets the float-to-int step of exp vectorise; NaN and Inf keep their meaning
    flags = ["-O3", "-std=c++17", "-fno-trapping-math", *ARCH_FLAGS.get(capability, [])]
    digest = hashlib.sha1()
    for name in SOURCES + ["common.h"]:
        digest.update((CSRC / name).read_bytes())
    digest.update(" ".join(flags + [torch.__version__]).encode())
    return cpp_extension.load(
        name=f"gatedrnn_loops_{digest.hexdigest()[:12]}",
        sources=[str(CSRC / name) for name in SOURCES],
        extra_cflags=flags,
        verbose=False,
    )


def kernels(device: torch.device | None = None):
    """The module holding ``{lstm,gru,rnn}_{forward,backward}`` for tensors on ``device``:
    the native loops on the CPU when they build, else the Python ones."""
    global _kernels, _native_error
    if device is not None and device.type != "cpu":
        from gatedrnn.fused import loops

        return loops
    if _kernels is None:
        if os.environ.get("GATEDRNN_NATIVE", "1") == "0":
            _native_error = "GATEDRNN_NATIVE=0 is set"
        else:
            try:
                _kernels = _build()
            except Exception as error:  # no compiler, no ninja, no headers: fall back
                _native_error = f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}"
                warnings.warn(
                    "gatedrnn could not build its native CPU kernels "
                    f"({_native_error}); the fused backend runs its Python loops instead, "
                    "correct but slower. Install a C++ compiler and ninja to get the native ones.",
                    RuntimeWarning,
                    stacklevel=3,
                )
        if _kernels is None:
            from gatedrnn.fused import loops

            _kernels = loops
    return _kernels


def native_available() -> bool:
    """Whether the native loops are built and in use."""
    return getattr(kernels(), "__name__", "").startswith("gatedrnn_loops_")


def use_python_loops(flag: bool = True) -> None:
    """Switches between the native loops and the Python ones (for tests and comparisons)."""
    global _kernels
    if flag:
        from gatedrnn.fused import loops

        _kernels = loops
    else:
        _kernels = None
        os.environ.pop("GATEDRNN_NATIVE", None)
        kernels()

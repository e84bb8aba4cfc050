import os
from pathlib import Path

import pytest

# backend="auto" times its candidates on a new shape class (gatedrnn/autotune.py): the suite
# runs with that off, here and in the commands it starts, so that no test's outcome depends on
# a timing; tests/test_autotune.py turns it on where it tests it.
os.environ["GATEDRNN_AUTOTUNE"] = "0"

from gatedrnn import autotune, fused

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def autotune_stays_off():
    """Whatever a test sets with gatedrnn.set_autotune (a docstring example ends with it on)
    is undone after it, so that no later test times its candidates."""
    yield
    autotune._enabled = None  # the environment's "0" decides again


@pytest.fixture
def shared_data():
    """The path of a file in ../shared/data, or a skip saying it is absent."""

    def path(relative: str) -> Path:
        p = SHARED_DATA / relative
        if not p.exists():
            pytest.skip(f"{p} is absent: the shared data set is not beside this checkout (see README, Data)")
        return p

    return path


@pytest.fixture(params=["native", "native-mm", "python"])
def loops(request):
    """Runs a test with the native loops (their per-step products straight to BLAS), again with
    the products through at::mm (a torch without BLAS symbols), then with the Python loops
    (the no-compiler path)."""
    if request.param == "python":
        fused.use_python_loops(True)
        yield "python"
        fused.use_python_loops(False)
    else:
        if not fused.native_available():
            pytest.skip("native kernels not built on this machine")
        fused.kernels().use_direct_blas(request.param == "native")
        yield request.param
        fused.kernels().use_direct_blas(True)

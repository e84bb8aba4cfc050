"""torch.export of the xLSTM layers and stack: one graph that runs at every sequence length.

The sLSTM's and the mLSTM's recurrences are captured as one node of torch's ``scan`` (the
reference steps, :mod:`gatedrnn.exportable`), so the exported program equals the eager layer at
lengths other than the traced one; the mLSTM's eager forms (parallel up to ``chunk_size``,
chunkwise above) would otherwise fix ``T`` through their choice.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.export import Dim

import gatedrnn
from gatedrnn import exportable

pytestmark = pytest.mark.skipif(exportable.scan_op is None, reason="this torch has no scan operator")


def _leaves(x):
    return [t for t in torch.utils._pytree.tree_leaves(x) if isinstance(t, torch.Tensor)]


def _exported(module, x, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)  # an unrolled loop would warn
        return torch.export.export(module, (x,), kwargs=kwargs, dynamic_shapes=({0: Dim("T", min=2, max=4096)},))


LAYERS = {
    "sLSTM": lambda: gatedrnn.sLSTM(6, 8, num_heads=2, num_layers=2, forget="exp"),
    "mLSTM": lambda: gatedrnn.mLSTM(6, 8, num_heads=2),
    "xLSTM[1:1]": lambda: gatedrnn.xLSTM(6, 8, num_layers=2, num_heads=2, slstm_at=[1]),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_an_exported_xlstm_layer_runs_at_every_length(name):
    torch.manual_seed(0)
    layer = LAYERS[name]().eval()
    program = _exported(layer, torch.randn(5, 3, 6))
    for T in (3, 130):  # 130: past the mLSTM's chunk size of 64, where eager runs the chunkwise form
        x = torch.randn(T, 3, 6)
        got, want = _leaves(program.module()(x)), _leaves(layer(x))
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_an_exported_stack_resumes_from_its_state():
    """The state an exported stack returns, fed back, continues the sequence as eager does."""
    torch.manual_seed(1)
    stack = gatedrnn.xLSTM(6, 8, num_layers=2, num_heads=2, slstm_at=[0]).eval()
    program = _exported(stack, torch.randn(4, 2, 6))
    first, second = torch.randn(9, 2, 6), torch.randn(11, 2, 6)
    _, state = program.module()(first)
    got, _ = stack(second, state)
    want, _ = stack(torch.cat([first, second]))
    torch.testing.assert_close(got, want[9:], rtol=1e-4, atol=1e-5)


def test_carries_that_are_one_tensor_export_right():
    """Regression: under torch.export, torch's scan op computes wrong results, silently, from
    initial carries that are one tensor. An sLSTM block starts h, c, n and m from one zeros
    tensor: its exported output was off by 1.5 at the traced length itself.
    :func:`gatedrnn.exportable.run_direction` now gives each carry its own tensor."""
    torch.manual_seed(2)
    block = gatedrnn.xLSTM(6, 8, num_layers=1, num_heads=2, slstm_at=[0]).eval()
    x = torch.randn(5, 2, 6)
    program = torch.export.export(block, (x,))
    torch.testing.assert_close(program.module()(x)[0], block(x)[0], rtol=1e-4, atol=1e-5)

"""The native loops' cache of large per-call buffers (``csrc/buffers.h``): a freed block is
handed out again, never a block a live tensor still holds; results do not depend on it; the
limit and ``empty_buffer_cache`` give memory back."""

from __future__ import annotations

import contextlib

import pytest
import torch

import gatedrnn
from gatedrnn import fused

pytestmark = pytest.mark.skipif(not fused.native_available(), reason="needs the native kernels (a C++ compiler)")


@contextlib.contextmanager
def cache(min_bytes=1, limit=None):
    """Every buffer through the cache (at these small sizes the 8 MB floor would skip it)."""
    kernels = fused.kernels()
    saved = kernels.buffer_cache_min_bytes(), kernels.buffer_cache_limit()
    kernels.empty_buffer_cache()
    kernels.set_buffer_cache_min_bytes(min_bytes)
    if limit is not None:
        kernels.set_buffer_cache_limit(limit)
    try:
        yield kernels
    finally:
        kernels.set_buffer_cache_min_bytes(saved[0])
        kernels.set_buffer_cache_limit(saved[1])
        kernels.empty_buffer_cache()


def step(layer, x):
    out, state = layer(x)
    grads = torch.autograd.grad(out.square().sum() + state[0].sum(), [x, *layer.parameters()])
    return out, grads


@pytest.mark.parametrize("cls", [gatedrnn.LSTM, gatedrnn.GRU, gatedrnn.RNN])
def test_freed_blocks_come_back_and_live_ones_do_not(cls):
    torch.manual_seed(0)
    layer = cls(3, 8, backend="fused")
    x1, x2 = torch.randn(6, 4, 3, requires_grad=True), torch.randn(6, 4, 3, requires_grad=True)
    with cache() as kernels:
        out1, grads1 = step(layer, x1)
        kept = out1.clone(), [g.clone() for g in grads1]
        assert kernels.buffer_cache_bytes() > 0  # the saved activations, freed by the backward
        held = kernels.buffer_cache_bytes()
        for _ in range(3):
            out2, grads2 = step(layer, x2)
            assert out2.data_ptr() != out1.data_ptr()
            assert kernels.buffer_cache_bytes() <= held + out2.numel() * out2.element_size() * 4
        torch.testing.assert_close(out1, kept[0], rtol=0, atol=0)  # nothing wrote into the live output
        for a, b in zip(grads1, kept[1]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        kernels.empty_buffer_cache()
        assert kernels.buffer_cache_bytes() == 0
    with cache(min_bytes=2**62):  # the cache out of the way: the same numbers
        out3, grads3 = step(layer, x2)
    torch.testing.assert_close(out2, out3, rtol=0, atol=0)
    for a, b in zip(grads2, grads3):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_block_freed_is_the_next_of_its_size():
    torch.manual_seed(0)
    layer = gatedrnn.GRU(3, 8, backend="fused")
    x = torch.randn(6, 4, 3)
    with cache() as kernels, torch.no_grad():
        out = layer(x)[0]
        pointer = out.data_ptr()
        del out
        assert kernels.buffer_cache_bytes() >= 6 * 4 * 8 * 4
        assert layer(x)[0].data_ptr() == pointer


def test_the_limit_frees_the_oldest_and_zero_turns_it_off():
    torch.manual_seed(0)
    layer = gatedrnn.LSTM(3, 8, backend="fused")
    x = torch.randn(6, 4, 3, requires_grad=True)
    with cache(limit=6 * 4 * 8 * 4) as kernels:  # room for one (T, B, H) block
        step(layer, x)
        assert 0 < kernels.buffer_cache_bytes() <= 6 * 4 * 8 * 4
    with cache(limit=0) as kernels:
        step(layer, x)
        assert kernels.buffer_cache_bytes() == 0

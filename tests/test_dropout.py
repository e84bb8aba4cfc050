"""Dropout between layers draws torch.nn's masks: same seed, same masks, with padded
input, a PackedSequence, and ``lengths=`` (the masks of the equivalent packing)."""

import pytest
import torch
from helpers import twin_layers
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

BACKENDS = ("reference", "fused", "auto")
LAYERS = ("RNN", "LSTM", "GRU")


def _dropout_twins(name, backend):
    kw = {"input_size": 3, "hidden_size": 4, "num_layers": 3, "dropout": 0.5, "bidirectional": True}
    theirs, ours = twin_layers(name, torch.float64, backend, **kw)
    return theirs.train(), ours.train()


@pytest.mark.parametrize("enforce_sorted", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", LAYERS)
def test_dropout_with_packed_input_draws_torchs_masks(name, backend, enforce_sorted):
    theirs, ours = _dropout_twins(name, backend)
    x = torch.randn(6, 7, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 6, 4, 4, 4, 2, 1]) if enforce_sorted else torch.tensor([4, 6, 2, 4, 1, 6, 4])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)  # ties in both
    results = []
    for layer in (theirs, ours):
        torch.manual_seed(7)
        out, final = layer(packed)
        final = final if isinstance(final, tuple) else (final,)
        after = torch.rand(3)  # the RNG advanced as far
        weights = torch.linspace(-1, 1, out.data.numel(), dtype=torch.float64).view_as(out.data)
        loss = (out.data * weights).sum()
        grads = torch.autograd.grad(loss + sum(s.sum() for s in final), list(layer.parameters()))
        results.append((out.data, final, after, grads))
    for what, a, b in zip(("output", "final states", "RNG after", "gradients"), *results):
        torch.testing.assert_close(a, b, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize("name", LAYERS)
def test_dropout_with_lengths_draws_the_masks_of_packing(name, backend):
    """``lengths=`` draws what torch.nn draws for the batch packed with
    ``pack_padded_sequence(x, lengths, enforce_sorted=False)`` (here no two lengths tie,
    so that packing's order is unambiguous)."""
    theirs, ours = _dropout_twins(name, backend)
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    lengths = torch.tensor([3, 6, 1, 5])
    torch.manual_seed(3)
    out_t, final_t = theirs(pack_padded_sequence(x, lengths, enforce_sorted=False))
    after_t = torch.rand(3)
    torch.manual_seed(3)
    out_o, final_o = ours(x, lengths=lengths)
    after_o = torch.rand(3)
    torch.testing.assert_close(out_o, pad_packed_sequence(out_t)[0])
    torch.testing.assert_close(final_o, final_t)
    torch.testing.assert_close(after_o, after_t)


@pytest.mark.parametrize("name", LAYERS)
def test_dropout_with_tied_lengths_advances_the_rng_as_packing_does(name):
    """Ties make the packing's order a matter of its sort; the draw is one mask of
    ``sum(lengths)`` rows either way, and padding gets none (its output stays zero)."""
    theirs, ours = _dropout_twins(name, "fused")
    x = torch.randn(6, 5, 3, dtype=torch.float64)
    lengths = torch.tensor([4, 6, 4, 1, 4])
    torch.manual_seed(5)
    theirs(pack_padded_sequence(x, lengths, enforce_sorted=False))
    after_t = torch.rand(3)
    torch.manual_seed(5)
    out, _ = ours(x, lengths=lengths)
    torch.testing.assert_close(torch.rand(3), after_t)
    assert out[4:, 0].abs().max() == 0 and out[1:, 3].abs().max() == 0

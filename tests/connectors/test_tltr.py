"""Tests for LTU-AS's time-and-layer-wise transformer connector (mowe/connectors/tltr.py)."""

from __future__ import annotations

import math

import pytest
import torch

from mowe.connectors.base import ConnectorOutput
from mowe.connectors.tltr import TLTRConnector
from mowe.errors import MoWEInputError

IN, OUT, LAYERS = 16, 12, 5


def make(**kw) -> TLTRConnector:
    torch.manual_seed(0)
    kw = {"in_dim": IN, "out_dim": OUT, "num_layers_in": LAYERS, "time_heads": 1, "layer_heads": 4, **kw}
    return TLTRConnector(**kw).eval()


@pytest.mark.parametrize("hidden_dim", [None, 8])
def test_shapes_and_ceil_tokens(hidden_dim):
    tltr = make(hidden_dim=hidden_dim)
    lengths = torch.tensor([1, 19, 20, 21, 60, 45])
    out = tltr(torch.randn(6, LAYERS, 70, IN), lengths)  # tensor longer than any clip: trimmed
    assert isinstance(out, ConnectorOutput)
    expected = [math.ceil(n / 20) for n in lengths.tolist()]
    assert out.lengths.tolist() == expected and out.lengths.dtype == torch.int64
    assert torch.equal(tltr.out_lengths(lengths), out.lengths)
    assert out.embeds.shape == (6, max(expected), OUT)


def test_defaults_match_ltu_as():
    tltr = TLTRConnector(in_dim=64, out_dim=32, num_layers_in=33)
    assert tltr.needs_all_layers is True and (tltr.in_dim, tltr.out_dim, tltr.time_pool) == (64, 32, 20)
    assert tltr.time_block.attn.num_heads == 1 and tltr.layer_block.attn.num_heads == 8
    assert isinstance(tltr.down, torch.nn.Identity)  # LTU-AS runs TLTR at the full Whisper width


@pytest.mark.parametrize("layer", [0, LAYERS // 2, LAYERS - 1])
def test_every_layer_affects_output(layer):
    tltr = make()
    x = torch.randn(2, LAYERS, 40, IN)
    lengths = torch.tensor([40, 33])
    ref = tltr(x, lengths).embeds
    x2 = x.clone()
    x2[:, layer] += torch.randn(2, 40, IN)
    changed = tltr(x2, lengths).embeds
    for i, n in enumerate(tltr.out_lengths(lengths).tolist()):
        assert (changed[i, :n] - ref[i, :n]).abs().amax(-1).min() > 1e-4  # every token moved


def test_padding_invariance():
    """A clip alone gives the same tokens as batched with a longer clip over garbage padding."""
    tltr = make(hidden_dim=8)
    short = torch.randn(1, LAYERS, 27, IN)  # 27 frames: 2 tokens, the second from a partial pool window
    alone = tltr(short, torch.tensor([27]))
    batch = torch.randn(2, LAYERS, 64, IN) * 100
    batch[0, :, :27] = short[0]
    batch[0, :, 40] = float("nan")  # padding may hold anything
    both = tltr(batch, torch.tensor([27, 64]))
    assert alone.lengths.tolist() == [2] and both.lengths.tolist() == [2, 4]
    torch.testing.assert_close(both.embeds[0, :2], alone.embeds[0], atol=1e-5, rtol=1e-5)
    assert torch.all(both.embeds[0, 2:] == 0)
    assert torch.isfinite(both.embeds).all()


def test_frames_beyond_length_do_not_matter():
    tltr = make()
    x = torch.randn(2, LAYERS, 50, IN)
    lengths = torch.tensor([31, 50])
    ref = tltr(x, lengths).embeds
    x2 = x.clone()
    x2[0, :, 31:] = torch.randn(LAYERS, 19, IN) * 50  # includes frames 31..39 inside the last pool window
    torch.testing.assert_close(tltr(x2, lengths).embeds, ref, atol=0, rtol=0)


def test_partial_pool_window_averages_valid_frames_only():
    """A last pool window of k valid frames equals a full window of those frames tiled to 20."""
    tltr = make(time_pool=20)
    frames = torch.randn(1, LAYERS, 5, IN)
    partial = tltr(frames, torch.tensor([5]))
    tiled = tltr(frames.repeat(1, 1, 4, 1), torch.tensor([20]))
    torch.testing.assert_close(partial.embeds, tiled.embeds, atol=1e-5, rtol=1e-5)


def test_padding_tokens_are_zero():
    tltr = make()
    out = tltr(torch.randn(3, LAYERS, 80, IN), torch.tensor([80, 3, 41]))
    for i, n in enumerate(out.lengths.tolist()):
        assert torch.all(out.embeds[i, n:] == 0)
        assert torch.all(out.embeds[i, :n].abs().sum(-1) > 0)


def test_wrong_layer_count_raises_naming_expected_and_got():
    tltr = make()
    with pytest.raises(MoWEInputError, match=rf"4 layers.*num_layers_in={LAYERS}"):
        tltr(torch.randn(2, 4, 20, IN), torch.tensor([20, 20]))


@pytest.mark.parametrize(
    ("features", "lengths", "match"),
    [
        (torch.randn(2, 20, IN), torch.tensor([20, 20]), "features"),  # last layer only, not all layers
        (torch.randn(2, LAYERS, 20, IN + 1), torch.tensor([20, 20]), "features"),
        (torch.randn(2, LAYERS, 20, IN), torch.tensor([20]), "lengths"),
        (torch.randn(2, LAYERS, 20, IN), torch.tensor([21, 20]), "lengths"),
        (torch.randn(2, LAYERS, 20, IN), torch.tensor([0, 20]), "lengths"),
    ],
)
def test_bad_input_raises_naming_argument(features, lengths, match):
    with pytest.raises(MoWEInputError, match=match):
        make()(features, lengths)


def test_bad_constructor_arguments():
    with pytest.raises(MoWEInputError, match="layer_heads"):
        TLTRConnector(in_dim=IN, out_dim=OUT, num_layers_in=LAYERS, layer_heads=3)
    with pytest.raises(MoWEInputError, match="time_pool"):
        TLTRConnector(in_dim=IN, out_dim=OUT, num_layers_in=LAYERS, time_pool=0)


@pytest.mark.parametrize("hidden_dim", [None, 8])
def test_gradients_reach_every_parameter_and_the_input(hidden_dim):
    tltr = make(hidden_dim=hidden_dim, dropout=0.1).train()
    x = torch.randn(2, LAYERS, 45, IN, requires_grad=True)
    out = tltr(x, torch.tensor([45, 22]))
    out.embeds.square().sum().backward()
    for name, p in tltr.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad[:, :, :22].abs().amax(dim=(0, 2, 3)).min() > 0  # every layer gets gradient
    assert torch.all(x.grad[1, :, 22:] == 0)

"""Tests for SALMONN's window-level Q-Former connector (mowe/connectors/qformer.py)."""

from __future__ import annotations

import math

import pytest
import torch

from mowe.connectors.base import ConnectorOutput
from mowe.connectors.qformer import WindowQFormerConnector, window_count
from mowe.errors import MoWEInputError

IN, OUT = 12, 10


def make(**kw) -> WindowQFormerConnector:
    torch.manual_seed(0)
    kw = {"in_dim": IN, "out_dim": OUT, "hidden_dim": 16, "num_heads": 4, **kw}
    return WindowQFormerConnector(**kw).eval()


def brute_force_windows(length: int, window: int, stride: int) -> int:
    """Windows slide from frame 0 while they start inside the clip and still add frames the previous one
    lacked."""
    n, start = 0, 0
    while start < length and (n == 0 or start - stride + window < length):
        n, start = n + 1, start + stride
    return n


@pytest.mark.parametrize("frames", [1, 16, 17, 18, 34, 35])
def test_tokens_per_clip_is_ceil_frames_over_17(frames):
    qf = make()
    out = qf(torch.randn(1, frames, IN), torch.tensor([frames]))
    assert isinstance(out, ConnectorOutput)
    assert out.lengths.tolist() == [math.ceil(frames / 17)]
    assert out.lengths.dtype == torch.int64
    assert out.embeds.shape == (1, math.ceil(frames / 17), OUT)


def test_defaults_match_salmonn():
    qf = WindowQFormerConnector(in_dim=8, out_dim=4)
    assert (qf.window, qf.stride, qf.num_queries, len(qf.layers)) == (17, 17, 1, 2)
    assert qf.queries.shape == (1, 768) and qf.layers[0].self_attn.num_heads == 12
    assert qf.needs_all_layers is False and (qf.in_dim, qf.out_dim) == (8, 4)


@pytest.mark.parametrize("num_queries", [1, 3])
def test_out_lengths_agrees_with_forward(num_queries):
    qf = make(num_queries=num_queries)
    lengths = torch.tensor([35, 1, 17, 18, 34, 16])
    out = qf(torch.randn(6, 40, IN), lengths)  # tensor longer than any clip: extra windows are trimmed
    expected = torch.tensor([math.ceil(n / 17) for n in lengths.tolist()]) * num_queries
    assert torch.equal(out.lengths, expected)
    assert torch.equal(qf.out_lengths(lengths), expected)
    assert out.embeds.shape == (6, int(expected.max()), OUT)


@pytest.mark.parametrize(("window", "stride"), [(17, 17), (10, 4), (3, 5), (6, 1)])
def test_padding_invariance(window, stride):
    """A clip alone gives the same tokens as batched with a longer clip over garbage padding."""
    qf = make(window=window, stride=stride, num_queries=2)
    short = torch.randn(1, 18, IN)
    alone = qf(short, torch.tensor([18]))
    batch = torch.randn(2, 35, IN) * 100
    batch[0, :18] = short[0]
    batch[0, 20] = float("nan")  # padding may hold anything
    both = qf(batch, torch.tensor([18, 35]))
    n = int(alone.lengths[0])
    assert int(both.lengths[0]) == n
    torch.testing.assert_close(both.embeds[0, :n], alone.embeds[0], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(both.embeds).all()


@pytest.mark.parametrize(("window", "stride"), [(17, 17), (10, 4)])
def test_partial_window_ignores_missing_frames(window, stride):
    """A window holding one valid frame attends to that frame only, not to zero-filled padding.

    Attention over a frame repeated ``window`` times equals attention over the frame alone, so a
    one-frame clip must give the same token as a full window of copies of that frame.
    """
    qf = make(window=window, stride=stride)
    frame = torch.randn(1, 1, IN)
    one = qf(frame, torch.tensor([1]))
    copies = qf(frame.expand(1, window, IN).contiguous(), torch.tensor([window]))
    assert one.lengths.tolist() == copies.lengths.tolist() == [1]
    torch.testing.assert_close(one.embeds, copies.embeds, atol=1e-5, rtol=1e-5)


def test_padding_tokens_are_zero():
    qf = make(num_queries=2)
    out = qf(torch.randn(3, 60, IN), torch.tensor([60, 5, 20]))
    for i, n in enumerate(out.lengths.tolist()):
        assert torch.all(out.embeds[i, n:] == 0)
        assert torch.all(out.embeds[i, :n].abs().sum(-1) > 0)


def test_frames_beyond_length_do_not_matter():
    qf = make()
    x = torch.randn(2, 40, IN)
    lengths = torch.tensor([25, 40])
    ref = qf(x, lengths).embeds
    x2 = x.clone()
    x2[0, 25:] = torch.randn(15, IN) * 50
    torch.testing.assert_close(qf(x2, lengths).embeds, ref, atol=0, rtol=0)


@pytest.mark.parametrize(("window", "stride"), [(17, 17), (10, 4), (3, 5)])
def test_each_token_sees_only_its_window(window, stride):
    """Token k equals the connector run on frames [k*stride, k*stride + window) cut out of the clip alone."""
    qf = make(window=window, stride=stride)
    length = 23
    x = torch.randn(1, 30, IN)
    out = qf(x, torch.tensor([length]))
    for k in range(int(out.lengths[0])):
        start = k * stride
        piece = x[:, start : min(start + window, length)]
        one = qf(piece, torch.tensor([piece.shape[1]]))
        assert one.lengths.tolist() == [1]
        torch.testing.assert_close(out.embeds[0, k], one.embeds[0, 0], atol=1e-5, rtol=1e-5)


def test_window_count_formula_window_not_stride():
    for window in range(1, 9):
        for stride in range(1, 9):
            lengths = torch.arange(0, 40)
            got = window_count(lengths, window=window, stride=stride).tolist()
            assert got == [brute_force_windows(n, window, stride) for n in range(40)], (window, stride)
    # Closed forms stated in the docstring.
    lengths = torch.arange(1, 60)
    assert window_count(lengths, window=17, stride=17).tolist() == [math.ceil(n / 17) for n in range(1, 60)]
    assert window_count(lengths, window=10, stride=4).tolist() == [
        1 + math.ceil(max(n - 10, 0) / 4) for n in range(1, 60)
    ]
    assert window_count(lengths, window=3, stride=5).tolist() == [math.ceil(n / 5) for n in range(1, 60)]


def test_overlapping_windows_forward_matches_formula():
    qf = make(window=10, stride=4, num_queries=2)
    lengths = torch.tensor([1, 10, 11, 14, 15, 33])
    out = qf(torch.randn(6, 33, IN), lengths)
    expected = torch.tensor([2 * brute_force_windows(n, 10, 4) for n in lengths.tolist()])
    assert torch.equal(out.lengths, expected) and torch.equal(qf.out_lengths(lengths), expected)


def test_gradient_reaches_queries_input_and_all_parameters():
    qf = make(num_queries=2, dropout=0.1).train()
    x = torch.randn(2, 30, IN, requires_grad=True)
    out = qf(x, torch.tensor([30, 12]))
    out.embeds.square().sum().backward()
    assert qf.queries.grad is not None and qf.queries.grad.abs().sum() > 0
    assert x.grad is not None and x.grad[0].abs().sum() > 0 and x.grad[1, :12].abs().sum() > 0
    assert torch.all(x.grad[1, 12:] == 0)
    for name, p in qf.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("features", "lengths", "match"),
    [
        (torch.randn(2, 17), torch.tensor([17, 17]), "features"),
        (torch.randn(2, 1, 17, IN), torch.tensor([17, 17]), "features"),
        (torch.randn(2, 17, IN + 1), torch.tensor([17, 17]), "features"),
        (torch.randn(2, 17, IN), torch.tensor([17]), "lengths"),
        (torch.randn(2, 17, IN), torch.tensor([17.0, 3.0]), "lengths"),
        (torch.randn(2, 17, IN), torch.tensor([18, 3]), "lengths"),
        (torch.randn(2, 17, IN), torch.tensor([0, 3]), "lengths"),
    ],
)
def test_bad_input_raises_naming_argument(features, lengths, match):
    with pytest.raises(MoWEInputError, match=match):
        make()(features, lengths)


def test_bad_constructor_arguments():
    with pytest.raises(MoWEInputError, match="num_heads"):
        WindowQFormerConnector(in_dim=8, out_dim=4, hidden_dim=10, num_heads=4)
    with pytest.raises(MoWEInputError, match="stride"):
        WindowQFormerConnector(in_dim=8, out_dim=4, stride=0)

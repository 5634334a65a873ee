"""PerStreamNorm and the Q-Former's partial_window='drop' (SALMONN's layout, issue 15)."""

import pytest
import torch
import torch.nn.functional as F

from mowe.connectors.norm import PerStreamNorm
from mowe.connectors.qformer import WindowQFormerConnector, window_count
from mowe.errors import MoWEInputError


def test_each_stream_gets_its_own_layernorm_and_absent_frames_stay_zero():
    torch.manual_seed(0)
    norm = PerStreamNorm((6, 4))
    with torch.no_grad():
        for n in norm.norms:
            n.weight.normal_()
            n.bias.normal_()
    x = torch.randn(2, 5, 10)
    x[1, 3:, 6:] = 0  # the second stream ended after 3 frames
    out = norm(x)
    a, b = norm.norms
    torch.testing.assert_close(out[..., :6], F.layer_norm(x[..., :6], (6,), a.weight, a.bias, 1e-5))
    torch.testing.assert_close(out[0, :, 6:], F.layer_norm(x[0, :, 6:], (4,), b.weight, b.bias, 1e-5))
    torch.testing.assert_close(out[1, :3, 6:], F.layer_norm(x[1, :3, 6:], (4,), b.weight, b.bias, 1e-5))
    assert not out[1, 3:, 6:].any()  # not LayerNorm(0) = bias
    with pytest.raises(MoWEInputError, match="10 features"):
        norm(torch.randn(1, 2, 9))


def test_drop_partial_windows_as_unfold_without_padding():
    lengths = torch.tensor([1500, 34, 33, 17, 16])
    assert window_count(lengths, window=17, stride=17, partial="drop").tolist() == [88, 2, 1, 1, 0]
    assert window_count(lengths, window=17, stride=17).tolist() == [89, 2, 2, 1, 1]
    qf = WindowQFormerConnector(
        in_dim=10, out_dim=8, hidden_dim=16, num_heads=2, stream_dims=(6, 4), partial_window="drop"
    )
    assert isinstance(qf.input_norm, PerStreamNorm)
    out = qf(torch.randn(2, 40, 10), torch.tensor([40, 34]))
    assert out.lengths.tolist() == [2, 2] and out.embeds.shape == (2, 2, 8)
    with pytest.raises(MoWEInputError, match="clip 1 has 16 frames"):
        qf(torch.randn(2, 40, 10), torch.tensor([40, 16]))
    with pytest.raises(MoWEInputError, match="add up to in_dim"):
        WindowQFormerConnector(in_dim=10, out_dim=8, hidden_dim=16, num_heads=2, stream_dims=(6, 5))

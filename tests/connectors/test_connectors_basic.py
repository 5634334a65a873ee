import pytest
import torch

from mowe.connectors import ConvConnector, FrameStackConnector, LinearConnector, MLPConnector
from mowe.errors import MoWEInputError

CASES = [
    (LinearConnector, {}, lambda n: n),
    (MLPConnector, {}, lambda n: n),
    (FrameStackConnector, {"stack": 4}, lambda n: -(-n // 4)),
    (ConvConnector, {"stride": 3, "kernel": 5}, lambda n: -(-n // 3)),
]


@pytest.mark.parametrize("cls,kw,tokens", CASES)
def test_token_counts_and_padding_invariance(cls, kw, tokens):
    c = cls(in_dim=8, out_dim=6, **kw).eval()
    f = torch.randn(2, 23, 8)
    lens = torch.tensor([23, 10])
    out = c(f, lens)
    assert out.lengths.tolist() == [tokens(23), tokens(10)] == c.out_lengths(lens).tolist()
    assert out.embeds.shape == (2, tokens(23), 6)
    assert out.embeds[1, tokens(10):].abs().sum() == 0
    alone = c(f[1:, :10], lens[1:])
    torch.testing.assert_close(out.embeds[1, : tokens(10)], alone.embeds[0])


def test_wrong_width_is_named():
    with pytest.raises(MoWEInputError, match=r"LinearConnector: features must have shape \(batch, frames, 8\)"):
        LinearConnector(in_dim=8, out_dim=4)(torch.randn(1, 3, 7), torch.tensor([3]))

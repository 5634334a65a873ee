import pytest
import torch

from mowe.connectors import ConvConnector, FrameStackConnector, LinearConnector, MLPConnector
from mowe.errors import MoWEInputError

CASES = [
    (LinearConnector, {}, lambda n: n),
    (MLPConnector, {}, lambda n: n),
    (FrameStackConnector, {"stack": 4}, lambda n: -(-n // 4)),
    (FrameStackConnector, {"stack": 4, "stats_token": True}, lambda n: -(-n // 4) + 1),
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
    assert out.embeds[1, tokens(10) :].abs().sum() == 0
    alone = c(f[1:, :10], lens[1:])
    torch.testing.assert_close(out.embeds[1, : tokens(10)], alone.embeds[0])


def test_wrong_width_is_named():
    with pytest.raises(
        MoWEInputError, match=r"LinearConnector: features must have shape \(batch, frames, 8\)"
    ):
        LinearConnector(in_dim=8, out_dim=4)(torch.randn(1, 3, 7), torch.tensor([3]))


def test_stats_token_is_the_mlp_of_each_clips_frame_mean_and_std():
    c = FrameStackConnector(in_dim=3, out_dim=5, stack=2, stats_token=True).eval()
    f = torch.randn(2, 7, 3)
    lens = torch.tensor([7, 4])
    out = c(f, lens)
    for i, n in enumerate(lens.tolist()):
        clip = f[i, :n]
        stats = torch.cat([clip.mean(0), (clip.var(0, unbiased=False) + 1e-5).sqrt()])
        token = out.embeds[i, out.lengths[i] - 1]
        torch.testing.assert_close(token, c.stats(stats))
        # the frame tokens before it are the plain stacked tokens
        plain = _without_stats(c)(f[i : i + 1, :n], lens[i : i + 1]).embeds[0]
        torch.testing.assert_close(out.embeds[i, : out.lengths[i] - 1], plain)
    # padding frames do not move the statistics: a large value past the end changes nothing
    g = f.clone()
    g[1, 4:] = 1e3
    torch.testing.assert_close(c(g, lens).embeds, out.embeds)


def _without_stats(c):
    plain = FrameStackConnector(in_dim=c.in_dim, out_dim=c.out_dim, stack=c.stack).eval()
    plain.net.load_state_dict(c.net.state_dict())
    return plain

"""StatsPoolConnector: a fixed number of tokens per clip from its pooled mean and std."""

import pytest
import torch

from mowe.builders import build_connector
from mowe.config import ConnectorConfig
from mowe.connectors import StatsPoolConnector
from mowe.connectors.basic import masked_mean_std
from mowe.errors import MoWEInputError


def test_tokens_per_clip_do_not_depend_on_its_length():
    conn = StatsPoolConnector(in_dim=6, out_dim=10, tokens=3)
    out = conn(torch.randn(4, 40, 6), torch.tensor([40, 17, 3, 1]))
    assert out.embeds.shape == (4, 3, 10) and out.lengths.tolist() == [3, 3, 3, 3]
    assert conn.out_lengths(torch.tensor([5, 500])).tolist() == [3, 3]


def test_padding_and_batch_mates_do_not_change_a_clip():
    conn = StatsPoolConnector(in_dim=5, out_dim=8, tokens=2).eval()
    clip = torch.randn(1, 12, 5)
    alone = conn(clip, torch.tensor([12])).embeds
    batch = torch.randn(3, 30, 5) * 9  # garbage past the clip's end and in its neighbours
    batch[1, :12] = clip[0]
    together = conn(batch, torch.tensor([30, 12, 25])).embeds
    assert torch.allclose(together[1], alone[0], atol=1e-6)


def test_it_reads_exactly_the_pooled_statistics():
    conn = StatsPoolConnector(in_dim=4, out_dim=6, tokens=1)
    x, lens = torch.randn(2, 9, 4), torch.tensor([9, 4])
    want = conn.net(conn.norm(masked_mean_std(x, lens))).reshape(2, 1, 6)
    assert torch.equal(conn(x, lens).embeds, want)
    x2 = x.clone()
    x2[1, :4] = x[1, :4].flip(0)  # the order of the valid frames and what lies past them are irrelevant
    x2[1, 4:] = 0
    assert torch.allclose(conn(x2, lens).embeds[1], conn(x, lens).embeds[1], atol=1e-6)


def test_built_from_config_and_bad_token_counts_are_refused():
    conn = build_connector(ConnectorConfig("stats", {"tokens": 2}), in_dim=7, out_dim=12)
    assert isinstance(conn, StatsPoolConnector) and conn.tokens == 2 and conn.out_dim == 12
    for bad in (0, -1, 1.5):
        with pytest.raises(MoWEInputError, match="tokens must be an integer >= 1"):
            StatsPoolConnector(in_dim=3, out_dim=4, tokens=bad)

"""The token budget: pooling frames by the smallest factor that meets a cap per clip or per window."""

from __future__ import annotations

import importlib.util
import math
import os

import pytest
import torch

from mowe.connectors import FrameStackConnector, TokenBudget
from mowe.connectors.budget import audio_tokens, pool_frames
from mowe.errors import MoWEInputError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_pool_frames_averages_valid_frames_only():
    x = torch.arange(1.0, 8.0)[None, :, None].expand(2, -1, 2).clone()  # frames 1..7
    lens = torch.tensor([7, 4])
    x[1, 4:] = 0
    pooled, n = pool_frames(x, lens, 3)
    assert n.tolist() == [3, 2]
    assert pooled[0, :, 0].tolist() == [2.0, 5.0, 7.0]  # the last group holds one valid frame
    assert pooled[1, :2, 0].tolist() == [2.0, 4.0]  # (1+2+3)/3, 4/1
    layers = x[:, None].expand(-1, 3, -1, -1)  # (b, l, t, d) as TLTR takes them
    pooled_l, _ = pool_frames(layers, lens, 3)
    assert torch.equal(pooled_l[:, 1], pooled)


def _stack(frames):
    return FrameStackConnector(in_dim=2, out_dim=2, stack=4).out_lengths(frames)


def test_a_clip_budget_pools_each_clip_by_the_smallest_factor_that_fits():
    budget = TokenBudget(max_tokens=100)
    feats = torch.randn(3, 1000, 2)
    lens = torch.tensor([1000, 400, 900])
    out, n = budget(feats, lens, out_lengths=_stack)
    # 1000 frames -> 250 tokens: pooled by 3 (334 frames, 84 tokens); 400 -> 100 tokens: as it is; 900 -> by
    # 3.
    assert n.tolist() == [334, 400, 300] and _stack(n).tolist() == [84, 100, 75]
    assert torch.equal(out[1, :400], feats[1, :400])
    alone, m = budget(feats[2:, :900], lens[2:], out_lengths=_stack)
    assert torch.equal(alone[0, :300], out[2, :300]) and int(m[0]) == 300  # not changed by its batch
    assert not out[1, 400:].any() and not out[0, 334:].any()


def test_a_window_budget_pools_every_window_alike():
    budget = TokenBudget(max_tokens_per_window=10, window_frames=100)
    feats = torch.randn(2, 250, 2)
    lens = torch.tensor([250, 100])
    out, n = budget(feats, lens, out_lengths=_stack)
    # 100 frames -> 25 tokens; pooled by 3 -> 34 frames -> 9 tokens per full window; windows 100, 100, 50.
    assert n.tolist() == [34 + 34 + 17, 34]
    torch.testing.assert_close(out[0, 34], feats[0, 100:103].mean(0))  # window 2 starts its own groups
    assert all(t <= 10 * w for t, w in zip(_stack(n).tolist(), (3, 1)))


def test_an_unreachable_budget_is_named():
    fixed = lambda frames: torch.full_like(torch.as_tensor(frames), 4)  # noqa: E731 (a connector's fixed 4 tokens)
    with pytest.raises(MoWEInputError, match=r"max_tokens=2 cannot be met: the connector gives 4 tokens"):
        TokenBudget(max_tokens=2).check(fixed)
    with pytest.raises(MoWEInputError, match="needs window_frames"):
        TokenBudget(max_tokens_per_window=3)
    with pytest.raises(MoWEInputError, match=r"max_tokens must be an integer >= 1"):
        TokenBudget(max_tokens=0)


def test_audio_tokens_counts_what_the_model_gives():
    assert audio_tokens(_stack, seconds=60) == 750
    assert audio_tokens(_stack, seconds=3600, budget=TokenBudget(max_tokens=4000)) == math.ceil(
        math.ceil(180000 / 12) / 4
    )


def test_the_readme_token_table_is_what_the_script_computes():
    spec = importlib.util.spec_from_file_location(
        "tokens_per_minute", os.path.join(ROOT, "benchmarks", "tokens_per_minute.py")
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read().splitlines()
    table = script.rows()
    start = readme.index(table[0])
    assert readme[start : start + len(table)] == table

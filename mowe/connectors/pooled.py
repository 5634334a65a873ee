"""Statistics pooling as a connector: a clip's mean and standard deviation over its valid frames, as a few
tokens.

Shape legend: ``b`` clips, ``t`` frames, ``d`` feature width, ``n`` audio tokens per clip.

The x-vector recipe (Snyder et al. 2018) handed to an LLM: clip-level traits (who is speaking, how high, how
fast) live in the statistics of the frames more than in any one frame, and a linear probe on exactly these
pooled features is what :mod:`mowe.demo.probe` measures. Every clip gives the same number of tokens whatever
its length, so the LLM's cost per clip is fixed (``tokens`` per clip; no frame-level detail, so not for
transcription).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from mowe.connectors.base import ConnectorOutput, check_features
from mowe.connectors.basic import masked_mean_std
from mowe.errors import MoWEInputError

__all__ = ["StatsPoolConnector"]


class StatsPoolConnector(nn.Module):
    """``(b, t, d)`` frames -> ``(b, tokens, out_dim)``: LayerNorm'd [mean, std] over valid frames, then an
    MLP.

    The LayerNorm puts encoders of very different scales (Whisper's hidden states, CREPE's pitch posteriors, a
    unit-norm speaker embedding) on one footing before the MLP.

    Args:
        in_dim: feature width ``d``.
        out_dim: the LLM's embedding width.
        tokens: audio tokens per clip.
        hidden_dim: the MLP's width (default ``out_dim``).

    Example:
        >>> conn = StatsPoolConnector(in_dim=8, out_dim=16, tokens=2)
        >>> conn(torch.randn(3, 50, 8), torch.tensor([50, 20, 7])).embeds.shape
        torch.Size([3, 2, 16])
    """

    needs_all_layers = False

    def __init__(self, *, in_dim: int, out_dim: int, tokens: int = 1, hidden_dim: int | None = None):
        super().__init__()
        if not isinstance(tokens, int) or tokens < 1:
            raise MoWEInputError(f"tokens must be an integer >= 1, got {tokens!r}")
        self.in_dim, self.out_dim, self.tokens = in_dim, out_dim, tokens
        hidden_dim = hidden_dim or out_dim
        self.norm = nn.LayerNorm(2 * in_dim)
        self.net = nn.Sequential(
            nn.Linear(2 * in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, tokens * out_dim)
        )

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.full_like(lengths, self.tokens)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ConnectorOutput:
        lengths = check_features(features, lengths, in_dim=self.in_dim, who=type(self).__name__)
        pooled = self.norm(masked_mean_std(features, lengths))
        embeds = rearrange(self.net(pooled), "b (n d) -> b n d", n=self.tokens)
        return ConnectorOutput(embeds, self.out_lengths(lengths))

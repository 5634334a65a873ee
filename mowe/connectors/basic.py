"""Simple connectors: Linear, MLP, frame stacking and strided Conv1d.

Shape legend: ``b`` batch, ``t`` frames, ``n`` audio tokens, ``d`` width.

All meet the contract in :mod:`mowe.connectors.base`: ``forward(features (b, t, in_dim), lengths (b,))``
returns ``ConnectorOutput(embeds (b, n, out_dim), lengths (b,))`` with zeros at padded tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mowe.connectors.base import ConnectorOutput, check_features
from mowe.errors import MoWEInputError
from mowe.tensors import lengths_to_mask

__all__ = ["ConvConnector", "FrameStackConnector", "LinearConnector", "MLPConnector", "masked_mean_std"]


def _masked(embeds: torch.Tensor, lengths: torch.Tensor) -> ConnectorOutput:
    return ConnectorOutput(
        embeds * lengths_to_mask(lengths, embeds.shape[1])[..., None].to(embeds.dtype), lengths
    )


class LinearConnector(nn.Module):
    """One Linear per frame (LLaVA-1-style); one token per frame."""

    needs_all_layers = False

    def __init__(self, *, in_dim: int, out_dim: int):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.proj = nn.Linear(in_dim, out_dim)

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return lengths

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ConnectorOutput:
        lengths = check_features(features, lengths, in_dim=self.in_dim, who=type(self).__name__)
        return _masked(self.proj(features), lengths)


class MLPConnector(nn.Module):
    """Linear-GELU-Linear per frame (LLaVA-1.5-style); one token per frame."""

    needs_all_layers = False

    def __init__(self, *, in_dim: int, out_dim: int, hidden_dim: int | None = None):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        hidden_dim = hidden_dim or out_dim
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return lengths

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ConnectorOutput:
        lengths = check_features(features, lengths, in_dim=self.in_dim, who=type(self).__name__)
        return _masked(self.net(features), lengths)


def masked_mean_std(features: torch.Tensor, lengths: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Statistics pooling over each clip's valid frames: ``(b, t, d)`` -> ``(b, 2d)`` = [mean, std].

    The x-vector recipe (Snyder et al. 2018): utterance-level traits such as who speaks and how (gender, pitch
    level, rate) live in the statistics of the frames more than in any one frame.
    """
    m = lengths_to_mask(lengths, features.shape[1])[..., None].to(features.dtype)
    n = lengths.to(features.dtype)[:, None]
    mean = (features * m).sum(1) / n
    var = (((features - mean[:, None]) * m) ** 2).sum(1) / n
    return torch.cat([mean, (var + eps).sqrt()], dim=-1)


class FrameStackConnector(nn.Module):
    """Concatenate ``stack`` consecutive frames, then an MLP: ``stack``-fold fewer tokens.

    A clip's last group is zero-padded, so tokens per clip are ``ceil(t / stack)``. With ``stats_token=True``
    one more token follows each clip's frame tokens: an MLP of the mean and standard deviation of its valid
    frames (:func:`masked_mean_std`), so clip-level traits reach the LLM in one place.
    """

    needs_all_layers = False

    def __init__(
        self,
        *,
        in_dim: int,
        out_dim: int,
        stack: int = 4,
        hidden_dim: int | None = None,
        stats_token: bool = False,
    ):
        super().__init__()
        if stack < 1:
            raise MoWEInputError(f"stack must be >= 1, got {stack}")
        self.in_dim, self.out_dim, self.stack = in_dim, out_dim, stack
        hidden_dim = hidden_dim or out_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim * stack, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim)
        )
        self.stats = (
            nn.Sequential(nn.Linear(2 * in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))
            if stats_token
            else None
        )

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        n = torch.div(lengths + self.stack - 1, self.stack, rounding_mode="floor")
        return n + 1 if self.stats is not None else n

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ConnectorOutput:
        lengths = check_features(features, lengths, in_dim=self.in_dim, who=type(self).__name__)
        t = features.shape[1]
        # Zero frames past each clip's end so its last group holds only its own frames.
        x = features * lengths_to_mask(lengths, t)[..., None].to(features.dtype)
        x = F.pad(x, (0, 0, 0, (-t) % self.stack))
        x = rearrange(x, "b (n k) d -> b n (k d)", k=self.stack)
        embeds = self.net(x)
        out_len = self.out_lengths(lengths)
        if self.stats is not None:
            # The stats token goes right after the clip's last frame token, so padding stays at the end.
            embeds = F.pad(embeds, (0, 0, 0, 1))
            pos = (out_len - 1)[:, None, None].expand(-1, 1, embeds.shape[-1])
            embeds = embeds.scatter(1, pos, self.stats(masked_mean_std(features, lengths))[:, None])
        return _masked(embeds, out_len)


class ConvConnector(nn.Module):
    """Strided Conv1d downsampling (kernel defaults to the stride), GELU, then Linear.

    Tokens per clip: ``ceil(t / stride)``. Frames past a clip's end are zeroed first, so they read as the
    zero padding a lone clip would see.
    """

    needs_all_layers = False

    def __init__(
        self,
        *,
        in_dim: int,
        out_dim: int,
        stride: int = 2,
        kernel: int | None = None,
        hidden_dim: int | None = None,
    ):
        super().__init__()
        self.in_dim, self.out_dim, self.stride = in_dim, out_dim, stride
        self.kernel = kernel or stride
        if self.kernel < stride:
            raise MoWEInputError(f"kernel ({self.kernel}) must be >= stride ({stride})")
        hidden_dim = hidden_dim or out_dim
        self.conv = nn.Conv1d(in_dim, hidden_dim, self.kernel, stride=stride)
        self.proj = nn.Linear(hidden_dim, out_dim)

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths + self.stride - 1, self.stride, rounding_mode="floor")

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ConnectorOutput:
        lengths = check_features(features, lengths, in_dim=self.in_dim, who=type(self).__name__)
        t = features.shape[1]
        n = -(-t // self.stride)
        x = features * lengths_to_mask(lengths, t)[..., None].to(features.dtype)
        x = F.pad(x, (0, 0, 0, (n - 1) * self.stride + self.kernel - t))
        x = F.gelu(self.conv(rearrange(x, "b t d -> b d t")))
        return _masked(self.proj(rearrange(x, "b d n -> b n d")), self.out_lengths(lengths))

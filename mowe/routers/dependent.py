"""Data-dependent router: per-clip logits from the strong encoder's pooled features.

Shape legend: ``b`` batch, ``d`` strong feature width, ``e`` weak encoders.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DataDependentRouter"]


class DataDependentRouter(nn.Module):
    """A small MLP over the strong encoder's time-averaged features: ``(b, d) -> (b, e)`` logits.

    Args:
        in_dim: strong encoder width ``d``.
        num_encoders: size ``e`` of the weak pool.
        hidden_dim: MLP width.
    """

    def __init__(self, *, in_dim: int, num_encoders: int, hidden_dim: int = 256):
        super().__init__()
        self.in_dim = in_dim
        self.num_encoders = num_encoders
        self.net = nn.Sequential(
            nn.LayerNorm(in_dim),
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, num_encoders),
        )
        # Small last layer: starts close to the independent router's prior instead of overriding it.
        nn.init.normal_(self.net[-1].weight, std=0.02)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(pooled)

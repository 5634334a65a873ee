"""Normalising a concatenation of encoder streams one stream at a time.

Shape legend: ``b`` batch, ``t`` frames, ``d`` width (the sum of the streams' widths).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mowe.errors import MoWEInputError

__all__ = ["PerStreamNorm"]


class PerStreamNorm(nn.Module):
    """One LayerNorm per stream of a feature concatenation (SALMONN's ``ln_speech`` and ``ln_audio``).

    The input's last dimension is the streams' widths laid side by side, in order. Each slice gets its own
    LayerNorm. A frame where a stream is absent (its slice is all zeros: a weak stream zero-padded past its
    end, an encoder the router did not select) stays all zeros instead of becoming the norm's bias: SALMONN
    normalises BEATs before zero-padding it to Whisper's length, and this computes exactly that.

    Args:
        dims: the streams' widths, e.g. ``(1280, 768)`` for Whisper-large + BEATs.
        eps: LayerNorm epsilon (``nn.LayerNorm``'s default, as SALMONN).

    Example:
        >>> norm = PerStreamNorm((4, 2))
        >>> norm(torch.tensor([[[1.0, 2.0, 3.0, 4.0, 0.0, 0.0]]]))[0, 0, 4:].tolist()
        [0.0, 0.0]
    """

    def __init__(self, dims: Sequence[int], *, eps: float = 1e-5):
        super().__init__()
        dims = tuple(dims)
        if not dims or any(not isinstance(d, int) or d < 1 for d in dims):
            raise MoWEInputError(f"stream widths must be positive ints, got {dims}")
        self.dims = dims
        self.norms = nn.ModuleList(nn.LayerNorm(d, eps=eps) for d in dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, t, sum(dims))`` -> the same shape, each stream normalised on its own."""
        if x.shape[-1] != sum(self.dims):
            raise MoWEInputError(
                f"PerStreamNorm expects {sum(self.dims)} features {self.dims}, got {x.shape[-1]}"
            )
        out = []
        for part, norm in zip(x.split(self.dims, dim=-1), self.norms):
            present = part.ne(0).any(-1, keepdim=True)
            out.append(
                torch.where(present, norm(part), torch.zeros((), dtype=part.dtype, device=part.device))
            )
        return torch.cat(out, dim=-1)

"""Data-independent router: one learned preference over the weak pool, shared by every clip.

MoWE-Audio (arXiv 2409.06635, sec. 3) pairs it with a data-dependent router so the model can learn a
global prior over weak encoders that every clip starts from.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DataIndependentRouter"]


class DataIndependentRouter(nn.Module):
    """Learned logits ``(e,)``, broadcast to every clip.

    Args:
        num_encoders: size ``e`` of the weak pool.

    Call as ``router(pooled)`` with ``pooled`` ``(b, d)`` (only its batch size and device are used);
    returns logits ``(b, e)``, identical rows.
    """

    def __init__(self, *, num_encoders: int):
        super().__init__()
        self.num_encoders = num_encoders
        # Zero init: a uniform prior, so training starts without a favourite.
        self.logits = nn.Parameter(torch.zeros(num_encoders))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.logits[None, :].expand(pooled.shape[0], -1)

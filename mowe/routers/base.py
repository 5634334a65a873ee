"""What a router returns.

Shape legend: ``b`` batch (clips), ``e`` weak encoders in the pool, ``k`` selected per clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["RouterOutput"]


@dataclass
class RouterOutput:
    """Routing decision for a batch of clips.

    Attributes:
        logits: ``(b, e)`` combined router logits (after training noise, if any).
        probs: ``(b, e)`` softmax of ``logits``.
        gates: ``(b, e)`` weights used to scale each weak encoder's features; zero for encoders not selected.
            They carry gradient back to the routers.
        indices: ``(b, k)`` selected encoder indices per clip, most probable first.
        aux_loss: scalar load-balance loss (unweighted; the model multiplies it by its ``aux_loss_weight``).
    """

    logits: torch.Tensor
    probs: torch.Tensor
    gates: torch.Tensor
    indices: torch.Tensor
    aux_loss: torch.Tensor

"""What a router returns.

Shape legend: ``b`` batch (clips), ``w`` routing windows per clip, ``e`` weak encoders in the pool, ``k``
selected per clip (or per window).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["RouterOutput", "WindowRoute"]


@dataclass
class WindowRoute:
    """The routing decision with its window axis (:meth:`RouterOutput.per_window`).

    Attributes:
        logits, probs, gates: ``(b, w, e)``; gates are zero for encoders a window did not select, and on
            windows past a clip's end.
        indices: ``(b, w, k)`` selected encoders per window, most probable first (meaningless where ``mask``
            is False).
        mask: ``(b, w)`` bool, True on windows inside the clip.
        frames: strong-encoder frames per window; None: one window that spans each whole clip (``w == 1``).
    """

    logits: torch.Tensor
    probs: torch.Tensor
    gates: torch.Tensor
    indices: torch.Tensor
    mask: torch.Tensor
    frames: int | None


@dataclass
class RouterOutput:
    """Routing decision for a batch of clips.

    Clip-level routing (the default) is the case of one window per clip: the ``window_*`` fields are then None
    and :meth:`per_window` gives the clip fields with a window axis of 1. With routing per window
    (``RouterConfig(window_seconds=...)``, :func:`mowe.routers.route_per_window`) each window of
    ``window_frames`` strong frames was routed on its own; the ``window_*`` fields hold those decisions and
    the clip fields summarise them over each clip's windows.

    Attributes:
        logits: ``(b, e)`` combined router logits (after training noise, if any); per window: their mean over
            the clip's windows.
        probs: ``(b, e)`` softmax of ``logits``; per window: the mean of the windows' probabilities.
        gates: ``(b, e)`` weights used to scale each weak encoder's features; zero for encoders not selected.
            They carry gradient back to the routers. Per window: the mean gate over the clip's windows (the
            share of the clip each encoder carried).
        indices: ``(b, k)`` selected encoder indices per clip, most probable first; per window: the ``k``
            encoders with the largest mean gate.
        aux_loss: scalar load-balance loss (unweighted; the model multiplies it by its ``aux_loss_weight``);
            per window: over all windows of the batch.
        window_logits, window_probs, window_gates: ``(b, w, e)``, or None for clip-level routing.
        window_indices: ``(b, w, k)``, or None.
        window_mask: ``(b, w)`` bool, True on windows inside the clip, or None.
        window_frames: strong-encoder frames per window, or None.
    """

    logits: torch.Tensor
    probs: torch.Tensor
    gates: torch.Tensor
    indices: torch.Tensor
    aux_loss: torch.Tensor
    window_logits: torch.Tensor | None = None
    window_probs: torch.Tensor | None = None
    window_gates: torch.Tensor | None = None
    window_indices: torch.Tensor | None = None
    window_mask: torch.Tensor | None = None
    window_frames: int | None = None

    def per_window(self) -> WindowRoute:
        """The decision with its window axis; clip-level routing gives one window per clip (views)."""
        if self.window_gates is None:
            one = torch.ones(self.gates.shape[0], 1, dtype=torch.bool, device=self.gates.device)
            return WindowRoute(
                self.logits[:, None],
                self.probs[:, None],
                self.gates[:, None],
                self.indices[:, None],
                one,
                None,
            )
        return WindowRoute(
            self.window_logits,
            self.window_probs,
            self.window_gates,
            self.window_indices,
            self.window_mask,
            self.window_frames,
        )

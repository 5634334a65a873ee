"""Routing per window: each window of a clip is routed on its own, by any router.

Shape legend: ``b`` clips, ``t`` strong frames, ``d`` strong width, ``w`` windows per clip, ``F`` frames per
window, ``n`` windows inside their clips (over the batch), ``e`` weak encoders, ``k`` selected per window,
``d_p`` prompt width.

A long clip routed once gets one decision for all of its minutes. :func:`route_per_window` cuts the strong
features into consecutive windows of ``F`` frames on the strong encoder's grid (a clip's last window holds
what is left of it) and hands the windows to the router *as if they were clips*: the router's own pooling (the
mean over valid frames for :class:`~mowe.routers.MixtureRouter`) then pools per window, top-k is taken per
window, and the router's load-balance loss is taken over windows. Every router that meets the router contract
(:mod:`mowe.components`) therefore works per window unchanged: data-independent, data-dependent, prompt-aware
(each window gets its clip's prompt) and your own. The clip-level decision is the case of one window per clip.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mowe.errors import MoWEInputError
from mowe.routers.base import RouterOutput
from mowe.tensors import window_lengths

__all__ = ["route_per_window"]


def route_per_window(
    router: nn.Module,
    features: torch.Tensor,
    lengths: torch.Tensor,
    *,
    window_frames: int,
    prompt: torch.Tensor | None = None,
) -> RouterOutput:
    """Route every window of ``window_frames`` strong frames on its own.

    Args:
        router: any router (``router(features, lengths[, prompt]) -> RouterOutput``).
        features: ``(b, t, d)`` strong features; ``lengths`` ``(b,)`` valid frames per clip.
        window_frames: ``F``, frames per window.
        prompt: ``(b, d_p)`` each clip's pooled prompt, for a router with ``needs_prompt``; every window of a
            clip gets its clip's.

    Returns:
        A :class:`RouterOutput` with its ``window_*`` fields set (``(b, w, ...)``) and clip-level summaries.

    Raises:
        MoWEInputError: a bad window size, a prompt-aware router without ``prompt``, or a router whose output
            does not have one row per window (naming the router).
    """
    if window_frames < 1:
        raise MoWEInputError(f"window_frames must be >= 1, got {window_frames}")
    needs_prompt = bool(getattr(router, "needs_prompt", False))
    if needs_prompt and prompt is None:
        raise MoWEInputError(
            "this router is prompt-aware: pass prompt (b, d_p), the pooled prompt embedding "
            "of each clip's sample (MoWEAudioLLM.prompt_embeddings)"
        )
    b, t, d = features.shape
    wl = window_lengths(lengths, window_frames)  # (b, w) valid frames per window
    w = wl.shape[1]
    span = w * window_frames
    x = F.pad(features, (0, 0, 0, span - t)) if span > t else features[:, :span]
    mask = wl > 0
    sel = mask.reshape(-1).nonzero().flatten()
    xs = x.reshape(b * w, window_frames, d)[sel]
    ls = wl.reshape(-1)[sel]
    if needs_prompt:
        out = router(xs, ls, prompt.repeat_interleave(w, dim=0)[sel])
    else:
        out = router(xs, ls)
    n = sel.numel()
    for name in ("logits", "probs", "gates", "indices"):
        v = getattr(out, name)
        if v.dim() != 2 or v.shape[0] != n:
            raise MoWEInputError(
                f"router {type(router).__name__}: per window, {name} must have one row per "
                f"window ({n}), got shape {tuple(v.shape)}"
            )

    def per_window(v: torch.Tensor) -> torch.Tensor:
        full = v.new_zeros(b * w, v.shape[1])
        full[sel] = v
        return full.reshape(b, w, v.shape[1])

    wlog, wprob, wgate, widx = (per_window(v) for v in (out.logits, out.probs, out.gates, out.indices))
    count = mask.sum(1, keepdim=True).to(wgate.dtype)  # (b, 1), >= 1
    gates = wgate.sum(1) / count
    k = out.indices.shape[1]
    return RouterOutput(
        logits=wlog.sum(1) / count.to(wlog.dtype),
        probs=wprob.sum(1) / count.to(wprob.dtype),
        gates=gates,
        indices=gates.detach().topk(k, dim=-1).indices,
        aux_loss=out.aux_loss,
        window_logits=wlog,
        window_probs=wprob,
        window_gates=wgate,
        window_indices=widx,
        window_mask=mask,
        window_frames=window_frames,
    )

"""A token budget: at most so many audio tokens per clip or per window, pooling frames harder as audio grows.

Shape legend: ``b`` clips, ``l`` layers (TLTR's input), ``t`` frames, ``w`` windows, ``F`` frames per window,
``d`` width, ``n`` audio tokens.

A connector turns ``t`` frames into ``connector.out_lengths(t)`` tokens: 750 a minute for frame stacking by 4
at 50 Hz, 45,000 for an hour. :class:`TokenBudget` sits in front of the connector and average-pools each
clip's frames in time (groups of ``p`` consecutive valid frames become their mean) by the smallest whole
factor ``p`` that keeps the connector's output within the budget:

* ``max_tokens``: at most this many tokens per clip; ``p`` grows with the clip, so an hour fits a chosen
  context.
* ``max_tokens_per_window``: at most this many tokens per window of ``window_frames`` frames; every window is
  pooled by the same ``p`` (the one a full window needs), so tokens grow linearly with the audio, and a clip
  of ``w`` windows gets at most ``w * max_tokens_per_window``.

Both may be set (the window budget first, then the clip budget on its result). A clip within budget is left
exactly as it is (``p = 1``), and a clip's tokens do not depend on what it is batched with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mowe.errors import MoWEInputError
from mowe.tensors import lengths_to_mask, window_lengths

__all__ = ["TokenBudget", "audio_tokens", "pool_frames"]

OutLengths = Callable[[torch.Tensor], torch.Tensor]


def pool_frames(
    features: torch.Tensor, lengths: torch.Tensor, factor: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average groups of ``factor`` consecutive valid frames (a clip's last group: its valid frames only).

    Args:
        features: ``(b, t, d)`` or ``(b, l, t, d)``; lengths ``(b,)`` valid frames.
        factor: ``p >= 1``.

    Returns:
        ``(b, ceil(t / p), d)`` (or with ``l``) pooled features, zero past each clip's
        ``ceil(lengths / p)``, and those lengths.
    """
    if factor == 1:
        return features, lengths
    t = features.shape[-2]
    valid = lengths_to_mask(lengths, t)
    valid = valid.view(valid.shape[0], *([1] * (features.dim() - 3)), t)
    pad = (-t) % factor
    x = F.pad(features, (0, 0, 0, pad)).unflatten(-2, (-1, factor))  # (b, [l,] t/p, p, d)
    v = F.pad(valid, (0, pad)).unflatten(-1, (-1, factor)).to(features.dtype)  # (b, [1,] t/p, p)
    n = v.sum(-1)
    pooled = (x * v[..., None]).sum(-2) / n.clamp(min=1)[..., None]
    return pooled, torch.div(lengths + factor - 1, factor, rounding_mode="floor")


def _smallest_factor(frames: int, cap: int, out_lengths: OutLengths, *, who: str, what: str) -> int:
    """The smallest ``p`` with ``out_lengths(ceil(frames / p)) <= cap`` (out_lengths grows with frames)."""

    def tokens(p: int) -> int:
        return int(out_lengths(torch.tensor([-(-frames // p)]))[0])

    if tokens(1) <= cap:
        return 1
    if tokens(frames) > cap:
        raise MoWEInputError(
            f"{what}={cap} cannot be met: {who} gives {tokens(frames)} tokens even from a "
            f"single pooled frame; raise {what}"
        )
    lo, hi = 1, frames  # tokens(lo) > cap >= tokens(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if tokens(mid) <= cap else (mid, hi)
    return hi


@dataclass(frozen=True)
class TokenBudget:
    """Caps on audio tokens (see the module docstring); None: no cap of that kind.

    Args:
        max_tokens: tokens per clip.
        max_tokens_per_window: tokens per window of ``window_frames`` frames.
        window_frames: frames per window (the routing window on the strong grid; 30 s when routing is per
            clip).
    """

    max_tokens: int | None = None
    max_tokens_per_window: int | None = None
    window_frames: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_tokens_per_window", "window_frames"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise MoWEInputError(f"TokenBudget: {name} must be an integer >= 1 or None, got {v!r}")
        if self.max_tokens_per_window is not None and self.window_frames is None:
            raise MoWEInputError("TokenBudget: max_tokens_per_window needs window_frames (frames per window)")

    @property
    def active(self) -> bool:
        return self.max_tokens is not None or self.max_tokens_per_window is not None

    def check(self, out_lengths: OutLengths, *, who: str = "the connector") -> None:
        """Whether the caps can be met at all (a connector with a fixed token count may exceed them).

        Raises:
            MoWEInputError: naming the cap and ``who``.
        """
        if self.max_tokens_per_window is not None:
            _smallest_factor(
                self.window_frames,
                self.max_tokens_per_window,
                out_lengths,
                who=who,
                what="max_tokens_per_window",
            )
        if self.max_tokens is not None:
            _smallest_factor(1, self.max_tokens, out_lengths, who=who, what="max_tokens")

    def window_factor(self, out_lengths: OutLengths, *, who: str = "the connector") -> int:
        """The pooling factor every window gets under ``max_tokens_per_window`` (1 without it)."""
        if self.max_tokens_per_window is None:
            return 1
        return _smallest_factor(
            self.window_frames, self.max_tokens_per_window, out_lengths, who=who, what="max_tokens_per_window"
        )

    def __call__(
        self,
        features: torch.Tensor,
        lengths: torch.Tensor,
        *,
        out_lengths: OutLengths,
        who: str = "the connector",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool ``(b, t, d)`` (or ``(b, l, t, d)``) features so the connector's tokens meet the budget.

        Returns:
            The pooled features and ``(b,)`` valid frames (the input itself when every clip is within budget).
        """
        p = self.window_factor(out_lengths, who=who)
        if p > 1:
            features, lengths = _pool_windows(features, lengths, self.window_frames, p)
        if self.max_tokens is None:
            return features, lengths
        host = lengths.tolist()
        factors = [
            _smallest_factor(n, self.max_tokens, out_lengths, who=who, what="max_tokens") for n in host
        ]
        if all(f == 1 for f in factors):
            return features, lengths
        parts, order = [], []
        for f in sorted(set(factors)):
            idx = [i for i, g in enumerate(factors) if g == f]
            sub = torch.tensor(idx, device=features.device)
            x, n = pool_frames(features[sub][..., : max(host[i] for i in idx), :], lengths[sub], f)
            parts.append((x, n))
            order += idx
        t = max(x.shape[-2] for x, _ in parts)
        x = torch.cat([F.pad(x, (0, 0, 0, t - x.shape[-2])) for x, _ in parts])
        n = torch.cat([n for _, n in parts])
        device = features.device
        inverse = torch.empty(len(order), dtype=torch.long, device=device)
        inverse[torch.tensor(order, device=device)] = torch.arange(len(order), device=device)
        return x[inverse], n[inverse]


def _pool_windows(
    features: torch.Tensor, lengths: torch.Tensor, window: int, factor: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool each window of ``window`` frames by ``factor`` on its own, then lay the windows end to end (every
    window but a clip's last is full, so the pooled frames stay contiguous)."""
    b, t = features.shape[0], features.shape[-2]
    wl = window_lengths(lengths, window)  # (b, w)
    w = wl.shape[1]
    span = w * window
    x = F.pad(features, (0, 0, 0, span - t)) if span > t else features[..., :span, :]
    lead = x.shape[1:-2]  # () or (l,)
    x = x.unflatten(-2, (w, window))  # (b, [l,] w, F, d)
    if lead:
        x = x.transpose(1, 2)  # (b, w, l, F, d)
    rows = x.reshape(b * w, *x.shape[2:])
    pooled, n = pool_frames(rows, wl.reshape(-1), factor)
    pooled = pooled.reshape(b, w, *pooled.shape[1:])
    if lead:
        pooled = pooled.transpose(1, 2)  # (b, l, w, F/p, d)
    pooled = pooled.flatten(-3, -2)  # (b, [l,] w * F/p, d)
    total = n.reshape(b, w).sum(1)
    t_out = int(total.max())
    keep = lengths_to_mask(total, t_out).view(b, *([1] * len(lead)), t_out, 1).to(pooled.dtype)
    return pooled[..., :t_out, :] * keep, total


def audio_tokens(
    out_lengths: OutLengths, *, seconds: float, frame_rate: float = 50.0, budget: TokenBudget | None = None
) -> int:
    """Audio tokens a connector (its ``out_lengths``) gives for ``seconds`` of audio at ``frame_rate``
    frames/s, after ``budget``, without running anything: the figures of the README's table
    (``benchmarks/tokens_per_minute.py``)."""
    frames = round(seconds * frame_rate)
    n = torch.tensor([frames])
    if budget is not None and budget.active:
        p = budget.window_factor(out_lengths)
        if p > 1:
            wl = window_lengths(n, budget.window_frames)
            n = torch.div(wl + p - 1, p, rounding_mode="floor").sum(1)
        if budget.max_tokens is not None:
            f = _smallest_factor(
                int(n[0]), budget.max_tokens, out_lengths, who="connector", what="max_tokens"
            )
            n = torch.div(n + f - 1, f, rounding_mode="floor")
    return int(out_lengths(n)[0])

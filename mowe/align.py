"""Bringing feature streams of different frame rates onto one time grid.

Shape legend: ``b`` batch, ``t`` source frames, ``u`` target frames, ``d`` width.
"""

from __future__ import annotations

import torch

from mowe.tensors import lengths_to_mask

__all__ = ["ALIGNMENTS", "align_to_grid", "pad_to_grid"]


def align_to_grid(
    features: torch.Tensor,
    lengths: torch.Tensor,
    *,
    src_rate: float,
    dst_rate: float,
    dst_lengths: torch.Tensor,
    dst_len: int,
) -> torch.Tensor:
    """Linearly interpolate ``(b, t, d)`` features at ``src_rate`` Hz onto a ``dst_rate`` Hz grid.

    Target frame ``j`` is centred at ``(j + 0.5) / dst_rate`` seconds and reads the source at the same
    time, clamped to the clip's valid source frames, so padding never leaks in. Equal rates and lengths
    return the input unchanged (up to float rounding); HuBERT's 50 Hz with 49 frames/s maps onto
    Whisper's 50 frames/s by stretching the last fraction of a frame.

    Args:
        features: ``(b, t, d)`` source features.
        lengths: ``(b,)`` valid source frames.
        src_rate, dst_rate: frame rates in Hz.
        dst_lengths: ``(b,)`` valid target frames (frames beyond are zero).
        dst_len: target tensor length ``u``.

    Returns:
        ``(b, u, d)`` aligned features.
    """
    # Imported here: mowe.encoders imports this module (the pool aligns weak streams), so a top-level import
    # of mowe.encoders.base would be circular when mowe.align is imported first.
    b, t, d = features.shape
    if t == dst_len and src_rate == dst_rate and torch.equal(lengths, dst_lengths):
        return features * lengths_to_mask(lengths, t)[..., None].to(features.dtype)
    j = torch.arange(dst_len, device=features.device, dtype=torch.float32)
    pos = (j + 0.5) * (src_rate / dst_rate) - 0.5  # source index at the same time
    last = (lengths - 1).clamp(min=0).to(torch.float32)[:, None]  # (b, 1)
    pos = torch.minimum(pos[None, :].clamp(min=0.0), last)  # (b, u)
    lo = pos.floor().long()
    hi = torch.minimum(lo + 1, last.long())
    w = (pos - lo.to(pos.dtype)).to(features.dtype)[..., None]
    gather = lambda idx: features.gather(1, idx[..., None].expand(-1, -1, d))
    out = gather(lo) * (1 - w) + gather(hi) * w
    return out * lengths_to_mask(dst_lengths, dst_len)[..., None].to(out.dtype)


def pad_to_grid(features: torch.Tensor, lengths: torch.Tensor, *, dst_len: int) -> torch.Tensor:
    """Lay ``(b, t, d)`` features frame for frame on a grid of ``dst_len`` frames, zeros after each clip's
    end.

    SALMONN's alignment (its ``_encode_auditory_feature``): BEATs tokens and Whisper frames are paired by
    index and the shorter stream is zero-padded, not resampled. Frames past ``dst_len`` are dropped (with
    Whisper's full 30 s window, the strong grid is never the shorter one).

    Args:
        features: ``(b, t, d)``; lengths: ``(b,)`` valid frames.
        dst_len: target tensor length ``u``.

    Returns:
        ``(b, u, d)``.
    """
    t = features.shape[1]
    out = features[:, :dst_len] * lengths_to_mask(lengths, min(t, dst_len))[..., None].to(features.dtype)
    return torch.nn.functional.pad(out, (0, 0, 0, dst_len - out.shape[1]))


# The pool's ``align`` choices: how a weak stream is brought onto the strong encoder's frames.
ALIGNMENTS = ("interpolate", "pad")

"""Encoders on audio of any length: the window settings an encoder declares, running it window by window, and
checking that a window length fits it.

Shape legend: ``b`` clips, ``s`` samples, ``n`` windows (over the batch), ``t`` frames, ``d`` width, ``l``
layers.

Two optional encoder attributes (beside the protocol of :mod:`mowe.encoders.base`) say how an encoder meets
long audio:

* ``max_input_seconds: float`` -- the longest clip it takes in one call (Whisper: 30 s, the length of its
  position table). A longer clip is cut into windows of at most this, and a window setting above it is an
  error.
* ``window_seconds: float`` -- clips longer than this are cut into windows of this length (HuBERT family: 30 s
  by default, so attention memory stays bounded instead of growing with the square of the length). Unset: the
  encoder's ``max_input_seconds``.

An encoder with neither sees every clip whole. Where the model routes per window
(``RouterConfig(window_seconds=W)``), every encoder that windows at all runs in windows of ``W`` instead, so
its windows are the routing windows; ``W`` must then fit each of them (:func:`check_window_seconds`).

The frames of a clip's windows are stitched in time: window ``j``'s valid frames follow window ``j - 1``'s.
Every window but a clip's last is full, so a clip's valid frames stay contiguous. The weak pool stitches each
window onto the strong encoder's frame grid instead (:class:`~mowe.encoders.WeakEncoderPool`), so an encoder
whose window is not a whole number of its own frames cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mowe.align import align_to_grid
from mowe.constants import SAMPLE_RATE
from mowe.encoders.base import EncoderOutput
from mowe.errors import MoWEInputError
from mowe.tensors import lengths_to_mask, window_lengths

__all__ = [
    "SECONDS_PER_CALL",
    "check_window_seconds",
    "encode_in_chunks",
    "encode_in_windows",
    "encoder_window_seconds",
    "seconds_to_frames",
    "window_samples",
    "windows_per_call",
]

_TOL = 1e-6

#: Audio per call of an encoder when it runs in windows (as many whole windows as fit, at least one): its
#: activations then stay bounded whatever the duration (measured, a 4-layer HuBERT of width 384 on one
#: thread: 4 minutes whole raise peak RSS by 4.5 GB, in 30 s windows two per call by 1.3 GB); only the
#: stitched output grows.
SECONDS_PER_CALL = 60.0


def windows_per_call(window: int) -> int:
    """Windows of ``window`` samples encoded per call: :data:`SECONDS_PER_CALL` of audio, at least one."""
    return max(1, int(SECONDS_PER_CALL * SAMPLE_RATE) // window)


def encoder_window_seconds(encoder: nn.Module, routing_window: float | None = None) -> float | None:
    """The window (seconds) mowe cuts long clips into for ``encoder``: ``routing_window`` for an encoder that
    windows at all, else its ``window_seconds`` or ``max_input_seconds``; None: it sees every clip whole."""
    own = getattr(encoder, "window_seconds", None) or getattr(encoder, "max_input_seconds", None)
    if own is None:
        return None
    return float(routing_window) if routing_window is not None else float(own)


def seconds_to_frames(seconds: float, frame_rate: float, *, who: str, what: str = "window_seconds") -> int:
    """``seconds * frame_rate`` as a whole number of frames.

    Raises:
        MoWEInputError: not a whole, positive number of frames (naming ``what``, the value, ``who`` and its
            hop).
    """
    frames = seconds * float(frame_rate)
    if round(frames) < 1 or abs(frames - round(frames)) > _TOL * max(1.0, frames):
        hop = f"{1 / float(frame_rate):g} s = 1/{float(frame_rate):g} Hz"
        raise MoWEInputError(
            f"{what}={seconds:g} does not fit {who}: it is not a multiple of its frame hop "
            f"({hop}); choose a multiple of it"
        )
    return int(round(frames))


def window_samples(seconds: float, *, who: str, what: str = "window_seconds") -> int:
    """``seconds`` at 16 kHz as a whole number of samples (raises like :func:`seconds_to_frames`)."""
    return seconds_to_frames(seconds, SAMPLE_RATE, who=who, what=what)


def check_window_seconds(
    encoder: nn.Module, seconds: float, *, who: str, what: str = "model.router.window_seconds"
) -> None:
    """Whether windows of ``seconds`` fit ``encoder``: at most its ``max_input_seconds`` and a whole number of
    its frames (and of samples).

    Raises:
        MoWEInputError: naming ``what``, the value and the encoder (``who``).
    """
    cap = getattr(encoder, "max_input_seconds", None)
    if cap is not None and seconds > float(cap) + _TOL:
        raise MoWEInputError(
            f"{what}={seconds:g} does not fit {who}: longer than its maximum input of "
            f"{float(cap):g} s; choose at most {float(cap):g}"
        )
    window_samples(seconds, who=who, what=what)
    seconds_to_frames(seconds, float(encoder.frame_rate), who=who, what=what)


def encode_in_windows(
    encode: Callable[[torch.Tensor, torch.Tensor], EncoderOutput],
    waveforms: torch.Tensor,
    lengths: torch.Tensor,
    *,
    window: int,
    min_samples: int = 0,
    per_call: int | None | str = "auto",
    frame_rate: float | None = None,
) -> EncoderOutput:
    """Encode clips in windows of ``window`` samples, ``per_call`` windows per call of ``encode`` (``"auto"``:
    :func:`windows_per_call`; None: all in one call), and stitch the frames in time.

    Args:
        encode: ``(waveforms (n, s'), lengths (n,)) -> EncoderOutput`` (e.g. the encoder itself).
        waveforms: ``(b, s)`` zero-padded clips; ``lengths``: ``(b,)`` valid samples.
        window: samples per window.
        min_samples: a clip's last window shorter than this is zero-padded to it (the encoder's shortest
            input).
        frame_rate: the encoder's frames per second, to stitch on its nominal grid: every full window then
            gives exactly ``window * frame_rate / 16000`` frames and a clip's last window its share of them
            (each window's frames resampled in time onto that count, :func:`mowe.align.align_to_grid`), so
            windows never drift. An encoder that already gives those counts (Whisper) is left exactly as it
            is; HuBERT's 1499 frames per 30 s become 1500. None: the frames as the encoder gives them.

    Returns:
        ``features (b, t, d)``, ``lengths (b,)`` (the windows' valid frames, summed) and ``hidden_states``
        ``(b, l, t, d)`` when ``encode`` returns them; zeros past each clip's frames.
    """
    b, s = waveforms.shape
    wl = window_lengths(lengths, window)  # (b, w) samples per window
    w = wl.shape[1]
    wav = F.pad(waveforms, (0, w * window - s)) if w * window > s else waveforms[:, : w * window]
    wav = wav.reshape(b * w, window)
    flat = wl.reshape(-1)
    used = flat > 0  # windows wholly past a clip's end are not encoded
    seg, seg_len = wav[used], flat[used]
    if min_samples > 0 and bool((seg_len < min_samples).any()):
        seg_len = seg_len.clamp(min=min_samples)  # the padding beyond the clip is zeros already
    out = encode_in_chunks(encode, seg, seg_len, windows_per_call(window) if per_call == "auto" else per_call)
    if frame_rate is not None:
        out = _on_nominal_grid(out, flat[used], window=window, frame_rate=frame_rate)
    t_win = out.features.shape[1]
    feats = out.features.new_zeros(b * w, t_win, out.features.shape[2])
    feats[used] = out.features
    frames = torch.zeros(b * w, dtype=torch.long, device=lengths.device)
    frames[used] = out.lengths.to(lengths.device)
    frames = frames.reshape(b, w)
    # Window j of clip i starts at the frames of its earlier (full) windows: a cumulative sum, exact for the
    # last.
    starts = torch.cumsum(frames, 1) - frames  # (b, w)
    total = frames.sum(1)
    t = int(total.max())
    j = torch.arange(t_win, device=lengths.device)
    pos = starts.reshape(-1, 1) + j[None, :]  # (b*w, t_win) output frame of each window frame
    row = torch.arange(b, device=lengths.device).repeat_interleave(w)[:, None].expand(-1, t_win)
    keep = j[None, :] < frames.reshape(-1, 1)
    stitched = feats.new_zeros(b, t, feats.shape[2])
    stitched[row[keep], pos[keep]] = feats[keep]
    hidden = None
    if out.hidden_states is not None:
        nl = out.hidden_states.shape[1]
        h = out.hidden_states.new_zeros(b * w, nl, t_win, out.hidden_states.shape[3])
        h[used] = out.hidden_states
        hs = h.new_zeros(b, t, nl, h.shape[3])
        hs[row[keep], pos[keep]] = h.transpose(1, 2)[keep]
        hidden = hs.transpose(1, 2)
    keep_out = lengths_to_mask(total, t)[..., None].to(stitched.dtype)
    return EncoderOutput(features=stitched * keep_out, lengths=total, hidden_states=hidden)


def encode_in_chunks(
    encode: Callable[[torch.Tensor, torch.Tensor], EncoderOutput],
    seg: torch.Tensor,
    seg_len: torch.Tensor,
    per_call: int | None,
) -> EncoderOutput:
    """``encode`` on ``(n, s)`` windows, ``per_call`` at a time, each call trimmed to its longest window; the
    outputs concatenated (padded to the longest)."""
    n = seg.shape[0]
    host = seg_len.tolist()
    if per_call is None or n <= per_call:
        return encode(seg[:, : max(host)], seg_len)
    outs = [
        encode(seg[i : i + per_call, : max(host[i : i + per_call])], seg_len[i : i + per_call])
        for i in range(0, n, per_call)
    ]
    t = max(o.features.shape[1] for o in outs)
    feats = torch.cat([F.pad(o.features, (0, 0, 0, t - o.features.shape[1])) for o in outs])
    hidden = None
    if outs[0].hidden_states is not None:
        hidden = torch.cat([F.pad(o.hidden_states, (0, 0, 0, t - o.hidden_states.shape[2])) for o in outs])
    return EncoderOutput(features=feats, lengths=torch.cat([o.lengths for o in outs]), hidden_states=hidden)


def _on_nominal_grid(
    out: EncoderOutput, seg_len: torch.Tensor, *, window: int, frame_rate: float
) -> EncoderOutput:
    """Each window's frames resampled in time onto its nominal count: ``ceil(seg_len * F / window)`` of a full
    window's ``F = window * frame_rate / 16000`` (the window's own valid samples, before any padding)."""
    full = seconds_to_frames(window / SAMPLE_RATE, frame_rate, who="this encoder", what="the window")
    target = torch.div(seg_len.to(out.lengths.device) * full + window - 1, window, rounding_mode="floor")
    target = target.clamp(min=1)
    if out.features.shape[1] == full and torch.equal(out.lengths, target):
        return out  # already on it (Whisper)
    n, t, d = out.features.shape
    feats = align_to_grid(
        out.features, out.lengths, src_rate=frame_rate, dst_rate=frame_rate, dst_lengths=target, dst_len=full
    )
    hidden = None
    if out.hidden_states is not None:
        nl = out.hidden_states.shape[1]
        h = out.hidden_states.reshape(n * nl, t, -1)
        hidden = align_to_grid(
            h,
            out.lengths.repeat_interleave(nl),
            src_rate=frame_rate,
            dst_rate=frame_rate,
            dst_lengths=target.repeat_interleave(nl),
            dst_len=full,
        )
        hidden = hidden.reshape(n, nl, full, -1)
    return EncoderOutput(features=feats, lengths=target, hidden_states=hidden)

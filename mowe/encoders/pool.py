"""The weak-encoder pool: sparse dispatch, alignment to the strong stream, gated slot layout.

Shape legend: ``b`` batch, ``s`` samples, ``t`` strong frames, ``e`` weak encoders, ``k`` selected per clip,
``d`` width.

Sparse execution: each weak encoder runs once per batch, on only the clips that selected it, trimmed to the
longest of *those* clips. With ``k=1`` over 4 encoders a batch costs about one encoder's compute. Routed per
window (:func:`mowe.routers.route_per_window`), it runs on only the *windows* that selected it, each cut from
its clip; their frames are stitched back on the strong encoder's grid, window by window, gated per window.

Slot layouts (the connector sees ``(b, t, d_strong + out_dim)``):

* ``"fixed"``: one slot per encoder, ``out_dim = sum(d_e)``; an unselected encoder's slot is zero. The
  connector always knows which encoder filled which columns.
* ``"topk"``: ``k`` slots of width ``slot_dim``; each encoder has a learned Linear adapter to ``slot_dim``,
  slot ``i`` holds the clip's ``i``-th choice. Narrower when the pool is large.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from mowe.align import ALIGNMENTS, align_to_grid, pad_to_grid
from mowe.constants import SAMPLE_RATE
from mowe.encoders.base import EncoderOutput, check_encoder_output
from mowe.encoders.cache import FeatureCache, cached_encode
from mowe.encoders.windows import (
    encode_in_chunks,
    encoder_window_seconds,
    seconds_to_frames,
    windows_per_call,
)
from mowe.errors import MoWEInputError
from mowe.routers.base import RouterOutput
from mowe.tensors import window_lengths

__all__ = ["WeakEncoderPool"]


class WeakEncoderPool(nn.Module):
    """Runs the selected weak encoders and lays their gated, aligned features out in slots.

    Args:
        encoders: name -> encoder module (any module meeting :mod:`mowe.encoders.base`'s protocol).
        layout: ``"fixed"`` or ``"topk"`` (see the module docstring).
        top_k: clips' selection size (needed for the ``"topk"`` layout's width).
        slot_dim: adapter width for the ``"topk"`` layout.
        align: how weak frames meet the strong grid: ``"interpolate"`` (resample by time,
            :func:`mowe.align.align_to_grid`) or ``"pad"`` (pair frames by index, zero-pad the rest, as
            SALMONN: :func:`mowe.align.pad_to_grid`).

    Attributes:
        feature_cache: a :class:`~mowe.encoders.cache.FeatureCache` through which frozen, eval-mode members
            run (None: all run live); set by :meth:`mowe.model.MoWEAudioLLM.use_feature_cache`. Not a module,
            so not part of the state dict.
    """

    feature_cache: FeatureCache | None = None

    def __init__(
        self,
        *,
        encoders: Mapping[str, nn.Module],
        layout: str = "fixed",
        top_k: int = 1,
        slot_dim: int | None = None,
        align: str = "interpolate",
    ):
        super().__init__()
        if align not in ALIGNMENTS:
            raise MoWEInputError(f"align must be one of {ALIGNMENTS}, got {align!r}")
        self.align = align
        if not encoders:
            raise MoWEInputError("the weak pool needs at least one encoder")
        for name, enc in encoders.items():
            for attr in ("out_dim", "frame_rate", "min_samples"):
                if not hasattr(enc, attr):
                    raise MoWEInputError(
                        f"weak encoder {name!r} lacks the attribute {attr!r} the protocol requires"
                    )
        self.encoders = nn.ModuleDict(dict(encoders))
        self.names = list(encoders)
        self.layout = layout
        self.top_k = top_k
        dims = [int(e.out_dim) for e in encoders.values()]
        if layout == "fixed":
            self.out_dim = sum(dims)
            self.offsets = [sum(dims[:i]) for i in range(len(dims))]
            self.adapters = None
        elif layout == "topk":
            if slot_dim is None:
                slot_dim = max(dims)
            self.slot_dim = slot_dim
            self.out_dim = top_k * slot_dim
            self.adapters = nn.ModuleDict(
                {n: nn.Linear(int(e.out_dim), slot_dim) for n, e in encoders.items()}
            )
        else:
            raise MoWEInputError(f"layout must be 'fixed' or 'topk', got {layout!r}")

    @property
    def min_samples(self) -> int:
        return max(int(e.min_samples) for e in self.encoders.values())

    def __len__(self) -> int:
        return len(self.names)

    def forward(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor,
        route: RouterOutput,
        *,
        frame_rate: float,
        frame_lengths: torch.Tensor,
        num_frames: int,
    ) -> torch.Tensor:
        """Weak features aligned to the strong grid.

        Args:
            waveforms: ``(b, s)``; lengths ``(b,)`` samples.
            route: the router's decision (``indices`` ``(b, k)``, ``gates`` ``(b, e)``; or, routed per window,
                its ``window_*`` fields, :meth:`~mowe.routers.RouterOutput.per_window`).
            frame_rate, frame_lengths, num_frames: the strong stream's grid (Hz, ``(b,)``, ``t``).

        Returns:
            ``(b, t, out_dim)`` gated features; zeros where no encoder was selected.

        Routed per window, an encoder runs on only the windows that chose it, each cut from its clip and
        trimmed to the longest of them, and each window's frames are aligned onto its own stretch of the
        strong grid and scaled by that window's gate. Routed per clip, an encoder that windows
        (:mod:`mowe.encoders.windows`) sees a selected clip longer than its window the same way, in windows
        (all gated by the clip's gate).
        """
        b = waveforms.shape[0]
        out = waveforms.new_zeros(b, num_frames, self.out_dim, dtype=torch.float32)
        win = route.per_window()
        # One host transfer for the whole dispatch plan (which clips / windows go to which encoder).
        plan, inside = win.indices.cpu(), win.mask.cpu()
        lengths_cpu = lengths.cpu()
        for e, name in enumerate(self.names):
            hit = plan == e  # (b, w, k)
            chosen = hit.any(-1) & inside  # (b, w)
            if not bool(chosen.any()):
                continue
            enc = self.encoders[name]
            if win.frames is not None:
                self._run_windows(
                    out,
                    e,
                    waveforms,
                    lengths,
                    chosen,
                    hit,
                    win.gates[..., e],
                    frames=win.frames,
                    frame_rate=frame_rate,
                    frame_lengths=frame_lengths,
                )
                continue
            clips = chosen[:, 0].nonzero().flatten()
            seconds = encoder_window_seconds(enc)
            if seconds is not None and int(lengths_cpu[clips].max()) > round(seconds * SAMPLE_RATE):
                frames = seconds_to_frames(
                    seconds, frame_rate, who=f"weak encoder {name!r} on the strong grid"
                )
                wl = window_lengths(frame_lengths, frames)  # its own windows, on the strong grid
                sel = chosen[:, :1].expand(-1, wl.shape[1]) & (wl > 0).cpu()
                self._run_windows(
                    out,
                    e,
                    waveforms,
                    lengths,
                    sel,
                    hit.expand(-1, wl.shape[1], -1),
                    route.gates[:, None, e].expand(-1, wl.shape[1]),
                    frames=frames,
                    frame_rate=frame_rate,
                    frame_lengths=frame_lengths,
                )
                continue
            self._run_clips(
                out,
                e,
                waveforms,
                lengths,
                clips,
                hit[:, 0],
                route.gates[:, e],
                lengths_cpu=lengths_cpu,
                frame_rate=frame_rate,
                frame_lengths=frame_lengths,
                num_frames=num_frames,
            )
        return out

    def _encode(self, name: str, waveforms: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        enc = self.encoders[name]
        return check_encoder_output(
            cached_encode(enc, waveforms, lengths, self.feature_cache, name=name),
            batch=waveforms.shape[0],
            out_dim=int(enc.out_dim),
            who=repr(name),
        )

    def _aligned(
        self, name: str, res: EncoderOutput, *, frame_rate: float, dst_lengths: torch.Tensor, dst_len: int
    ) -> torch.Tensor:
        """An encoder's output on ``dst_len`` strong frames (``dst_lengths`` valid), through its slot
        adapter."""
        enc = self.encoders[name]
        if self.align == "pad":
            feats = pad_to_grid(res.features.float(), res.lengths.to(dst_lengths.device), dst_len=dst_len)
        else:
            feats = align_to_grid(
                res.features.float(),
                res.lengths.to(dst_lengths.device),
                src_rate=float(enc.frame_rate),
                dst_rate=frame_rate,
                dst_lengths=dst_lengths,
                dst_len=dst_len,
            )
        if self.adapters is not None:
            feats = self.adapters[name](feats)
        return feats

    def _run_clips(
        self,
        out: torch.Tensor,
        e: int,
        waveforms: torch.Tensor,
        lengths: torch.Tensor,
        clips: torch.Tensor,
        hit: torch.Tensor,
        gates: torch.Tensor,
        *,
        lengths_cpu: torch.Tensor,
        frame_rate: float,
        frame_lengths: torch.Tensor,
        num_frames: int,
    ) -> None:
        """Encoder ``e`` on whole ``clips`` (host indices), trimmed to the longest of them, into ``out``."""
        name = self.names[e]
        idx = clips.to(waveforms.device)
        s_max = int(lengths_cpu[clips].max())  # trim to the longest selected clip
        res = self._encode(name, waveforms[idx, :s_max], lengths[idx])
        feats = self._aligned(
            name, res, frame_rate=frame_rate, dst_lengths=frame_lengths[idx], dst_len=num_frames
        )
        # Gate (gradient path to the routers) and re-zero padded frames the adapter's bias filled.
        keep = torch.arange(num_frames, device=idx.device)[None, :] < frame_lengths[idx][:, None]
        feats = feats * (gates[idx][:, None] * keep).to(feats.dtype)[..., None]
        if self.layout == "fixed":
            lo = self.offsets[e]
            out[idx, :, lo : lo + feats.shape[-1]] = feats
        else:
            slot = hit[clips].float().argmax(-1).to(idx.device)  # which of the k choices this was
            cols = slot[:, None] * self.slot_dim + torch.arange(self.slot_dim, device=idx.device)[None, :]
            out[
                idx[:, None, None],
                torch.arange(num_frames, device=idx.device)[None, :, None],
                cols[:, None, :],
            ] = feats

    def _run_windows(
        self,
        out: torch.Tensor,
        e: int,
        waveforms: torch.Tensor,
        lengths: torch.Tensor,
        chosen: torch.Tensor,
        hit: torch.Tensor,
        gates: torch.Tensor,
        *,
        frames: int,
        frame_rate: float,
        frame_lengths: torch.Tensor,
    ) -> None:
        """Encoder ``e`` on the windows of ``frames`` strong frames that ``chosen`` ``(b, w)`` (host) marks,
        each cut from its clip, aligned onto its own stretch of the strong grid and scaled by ``gates[clip,
        window]``.

        ``hit``: ``(b, w, k)`` host, which of the ``k`` choices selected ``e`` (the ``"topk"`` slot)."""
        name = self.names[e]
        enc = self.encoders[name]
        device = waveforms.device
        window = seconds_to_frames(
            frames / frame_rate, SAMPLE_RATE, who=f"weak encoder {name!r}", what="the window (samples)"
        )
        pairs = chosen.nonzero()  # (n, 2) host: clip, window
        c, j = pairs[:, 0].to(device), pairs[:, 1].to(device)
        seg_len = (lengths[c] - j * window).clamp(min=0, max=window)
        seg_frames = (frame_lengths[c] - j * frames).clamp(min=0, max=frames)
        width = max(int(seg_len.max()), 1)
        pos = j[:, None] * window + torch.arange(width, device=device)[None, :]
        valid = torch.arange(width, device=device)[None, :] < seg_len[:, None]
        seg = waveforms[c[:, None], pos.clamp(max=waveforms.shape[1] - 1)] * valid.to(waveforms.dtype)
        need = int(getattr(enc, "min_samples", 0))
        seg_len = seg_len.clamp(min=max(need, 1))  # a short last window: padded with silence to what it needs
        if seg.shape[1] < int(seg_len.max()):
            seg = torch.nn.functional.pad(seg, (0, int(seg_len.max()) - seg.shape[1]))
        res = encode_in_chunks(lambda w, n: self._encode(name, w, n), seg, seg_len, windows_per_call(window))
        feats = self._aligned(name, res, frame_rate=frame_rate, dst_lengths=seg_frames, dst_len=frames)
        t = torch.arange(frames, device=device)
        keep = t[None, :] < seg_frames[:, None]  # (n, frames)
        feats = feats * (gates.to(device)[c, j][:, None] * keep).to(feats.dtype)[..., None]
        rows, cols_t = c[:, None].expand(-1, frames)[keep], (j[:, None] * frames + t[None, :])[keep]
        if self.layout == "fixed":
            lo = self.offsets[e]
            out[rows, cols_t, lo : lo + feats.shape[-1]] = feats[keep]
        else:
            slot = hit[pairs[:, 0], pairs[:, 1]].float().argmax(-1).to(device)  # (n,)
            cols = slot[:, None] * self.slot_dim + torch.arange(self.slot_dim, device=device)[None, :]
            cols = cols[:, None, :].expand(-1, frames, -1)[keep]  # (m, slot_dim)
            out[rows[:, None], cols_t[:, None], cols] = feats[keep]

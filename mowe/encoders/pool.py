"""The weak-encoder pool: sparse dispatch, alignment to the strong stream, gated slot layout.

Shape legend: ``b`` batch, ``s`` samples, ``t`` strong frames, ``e`` weak encoders, ``k`` selected per clip,
``d`` width.

Sparse execution: each weak encoder runs once per batch, on only the clips that selected it, trimmed to the
longest of *those* clips. With ``k=1`` over 4 encoders a batch costs about one encoder's compute.

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
from mowe.encoders.base import check_encoder_output
from mowe.encoders.cache import FeatureCache, cached_encode
from mowe.errors import MoWEInputError
from mowe.routers.base import RouterOutput

__all__ = ["WeakEncoderPool"]


class WeakEncoderPool(nn.Module):
    """Runs the selected weak encoders and lays their gated, aligned features out in slots.

    Args:
        encoders: name -> encoder module (any module meeting :mod:`mowe.encoders.base`'s protocol).
        layout: ``"fixed"`` or ``"topk"`` (see the module docstring).
        top_k: clips' selection size (needed for the ``"topk"`` layout's width).
        slot_dim: adapter width for the ``"topk"`` layout.
        align: how weak frames meet the strong grid: ``"interpolate"`` (resample by time,
            :func:`mowe.align.align_to_grid`) or ``"pad"`` (pair frames by index, zero-pad the rest, as SALMONN:
            :func:`mowe.align.pad_to_grid`).

    Attributes:
        feature_cache: a :class:`~mowe.encoders.cache.FeatureCache` through which frozen, eval-mode members
            run (None: all run live); set by :meth:`mowe.model.MoWEAudioLLM.use_feature_cache`. Not a module,
            so not part of the state dict.
    """

    feature_cache: FeatureCache | None = None

    def __init__(self, *, encoders: Mapping[str, nn.Module], layout: str = "fixed", top_k: int = 1,
                 slot_dim: int | None = None, align: str = "interpolate"):
        super().__init__()
        if align not in ALIGNMENTS:
            raise MoWEInputError(f"align must be one of {ALIGNMENTS}, got {align!r}")
        self.align = align
        if not encoders:
            raise MoWEInputError("the weak pool needs at least one encoder")
        for name, enc in encoders.items():
            for attr in ("out_dim", "frame_rate", "min_samples"):
                if not hasattr(enc, attr):
                    raise MoWEInputError(f"weak encoder {name!r} lacks the attribute {attr!r} the protocol requires")
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
            self.adapters = nn.ModuleDict({n: nn.Linear(int(e.out_dim), slot_dim) for n, e in encoders.items()})
        else:
            raise MoWEInputError(f"layout must be 'fixed' or 'topk', got {layout!r}")

    @property
    def min_samples(self) -> int:
        return max(int(e.min_samples) for e in self.encoders.values())

    def __len__(self) -> int:
        return len(self.names)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor, route: RouterOutput, *,
                frame_rate: float, frame_lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Weak features aligned to the strong grid.

        Args:
            waveforms: ``(b, s)``; lengths ``(b,)`` samples.
            route: the router's decision (``indices`` ``(b, k)``, ``gates`` ``(b, e)``).
            frame_rate, frame_lengths, num_frames: the strong stream's grid (Hz, ``(b,)``, ``t``).

        Returns:
            ``(b, t, out_dim)`` gated features; zeros where no encoder was selected.
        """
        b = waveforms.shape[0]
        out = waveforms.new_zeros(b, num_frames, self.out_dim, dtype=torch.float32)
        # One host transfer for the whole dispatch plan (which clips go to which encoder).
        plan = route.indices.cpu()
        lengths_cpu = lengths.cpu()
        for e, name in enumerate(self.names):
            hit = plan == e  # (b, k)
            clips = hit.any(-1).nonzero().flatten()
            if clips.numel() == 0:
                continue
            idx = clips.to(waveforms.device)
            sub_len = lengths[idx]
            s_max = int(lengths_cpu[clips].max())  # trim to the longest selected clip
            enc = self.encoders[name]
            res = check_encoder_output(cached_encode(enc, waveforms[idx, :s_max], sub_len, self.feature_cache,
                                                     name=name), batch=len(clips),
                                       out_dim=int(enc.out_dim), who=repr(name))
            if self.align == "pad":
                feats = pad_to_grid(res.features.float(), res.lengths.to(idx.device), dst_len=num_frames)
            else:
                feats = align_to_grid(res.features.float(), res.lengths.to(idx.device),
                                      src_rate=float(enc.frame_rate), dst_rate=frame_rate,
                                      dst_lengths=frame_lengths[idx], dst_len=num_frames)
            if self.adapters is not None:
                feats = self.adapters[name](feats)
            # Gate (gradient path to the routers) and re-zero padded frames the adapter's bias filled.
            keep = (torch.arange(num_frames, device=idx.device)[None, :] < frame_lengths[idx][:, None])
            feats = feats * (route.gates[idx, e][:, None] * keep).to(feats.dtype)[..., None]
            if self.layout == "fixed":
                lo = self.offsets[e]
                out[idx, :, lo:lo + feats.shape[-1]] = feats
            else:
                slot = hit[clips].float().argmax(-1).to(idx.device)  # which of the k choices this was
                cols = slot[:, None] * self.slot_dim + torch.arange(self.slot_dim, device=idx.device)[None, :]
                out[idx[:, None, None], torch.arange(num_frames, device=idx.device)[None, :, None],
                    cols[:, None, :]] = feats
        return out

"""The contract every audio encoder in mowe meets, and the checks shared by all of them.

Shape legend: ``b`` batch, ``s`` samples, ``t`` frames, ``d`` feature width, ``l`` layers.

An encoder is any :class:`torch.nn.Module` that

* has ``out_dim: int`` (feature width ``d``) and ``frame_rate: float`` (frames per second of its output),
* has ``min_samples: int`` (the shortest clip it can encode; 0 if any length works),
* is called as ``encoder(waveforms, lengths)`` with ``waveforms`` of shape ``(b, s)`` (16 kHz mono float32,
  zero-padded on the right) and ``lengths`` of shape ``(b,)`` (valid samples per clip),
* returns an :class:`EncoderOutput`.

Nothing else is required: a user module with those attributes joins a weak pool as it is.

Optional attributes:

* ``source: str | None`` -- where the encoder's *frozen* weights come from (a hub id, a folder or a file that
  the code building the encoder loads again). When it is set, :meth:`mowe.model.MoWEAudioLLM.save_pretrained`
  references the encoder instead of copying it: its frozen parameters and buffers are left out of
  ``model.safetensors`` (trainable ones are always saved), and ``from_pretrained`` rebuilds it from the
  config entry (built-in families) or takes it from ``encoders=`` (``family="custom"``) -- so a source is a
  promise that rebuilding gives the same weights. Absent or None (random or locally changed weights): every
  weight is saved. ``save_pretrained(save_frozen=True)`` saves everything regardless.
  :class:`~mowe.encoders.WhisperEncoder`, :class:`~mowe.encoders.HubertEncoder` and ``BEATsEncoder`` set it
  in ``from_pretrained`` / ``from_checkpoint``.

Frozen encoders in eval mode can also run through an on-disk feature cache
(:mod:`mowe.encoders.cache`); it needs nothing more from them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from mowe.constants import SAMPLE_RATE
from mowe.errors import MoWEInputError
from mowe.tensors import length_groups, lengths_to_mask

__all__ = [
    "SAMPLE_RATE",
    "AudioEncoder",
    "EncoderOutput",
    "check_encoder_output",
    "check_waveforms",
    "encode_in_length_groups",
    "set_trainable",
]


@dataclass
class EncoderOutput:
    """What an encoder returns.

    Attributes:
        features: ``(b, t, d)`` frame features; frames at or beyond ``lengths[i]`` are padding.
        lengths: ``(b,)`` int64, valid frames per clip.
        hidden_states: optional ``(b, l, t, d)`` stack of every layer's output (LTU-AS uses all layers).
    """

    features: torch.Tensor
    lengths: torch.Tensor
    hidden_states: torch.Tensor | None = None


@runtime_checkable
class AudioEncoder(Protocol):
    """Structural type of an encoder (see the module docstring)."""

    out_dim: int
    frame_rate: float
    min_samples: int
    # Optional, not part of the structural check: ``source: str | None`` (see the module docstring).

    def __call__(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput: ...


def check_waveforms(
    waveforms: torch.Tensor, lengths: torch.Tensor | None, *, min_samples: int = 0, name: str = "waveforms"
) -> torch.Tensor:
    """Validate a padded waveform batch and return int64 lengths on the waveforms' device.

    Args:
        waveforms: ``(b, s)`` float tensor.
        lengths: ``(b,)`` valid samples per clip, or None for "every clip fills the tensor".
        min_samples: shortest clip the caller can encode.
        name: argument name used in error messages.

    Raises:
        MoWEInputError: empty batch, wrong rank or dtype, NaN/Inf samples, lengths out of range,
            or a clip shorter than ``min_samples``. The message names the argument and the clip index.
    """
    if not isinstance(waveforms, torch.Tensor):
        raise MoWEInputError(
            f"{name} must be a torch.Tensor of shape (batch, samples), got {type(waveforms).__name__}"
        )
    if waveforms.dim() != 2:
        raise MoWEInputError(f"{name} must have shape (batch, samples), got shape {tuple(waveforms.shape)}")
    if waveforms.shape[0] == 0:
        raise MoWEInputError(f"{name} is an empty batch (shape {tuple(waveforms.shape)})")
    if not waveforms.is_floating_point():
        raise MoWEInputError(f"{name} must be floating point, got {waveforms.dtype}")
    b, s = waveforms.shape
    if lengths is None:
        lengths = torch.full((b,), s, dtype=torch.long, device=waveforms.device)
    else:
        lengths = torch.as_tensor(lengths, device=waveforms.device)
        if lengths.shape != (b,):
            raise MoWEInputError(f"lengths for {name} must have shape ({b},), got {tuple(lengths.shape)}")
        if lengths.is_floating_point():
            raise MoWEInputError(f"lengths for {name} must be integers, got {lengths.dtype}")
        lengths = lengths.long()
    # One host sync for all checks: these are cheap and catch errors that would otherwise
    # surface as silent garbage (NaN logits) far from their cause.
    bad_len = ((lengths > s) | (lengths < 1)).nonzero().flatten().tolist()
    if bad_len:
        i = bad_len[0]
        raise MoWEInputError(
            f"lengths for {name} out of range at clip {i}: length {int(lengths[i])} but the tensor holds {s} "
            f"samples"
        )
    short = (lengths < min_samples).nonzero().flatten().tolist()
    if short:
        i = short[0]
        raise MoWEInputError(
            f"clip {i} of {name} has {int(lengths[i])} samples; this encoder needs at least {min_samples} "
            f"({min_samples / SAMPLE_RATE * 1000:.0f} ms at 16 kHz)"
        )
    finite = torch.isfinite(waveforms) | ~lengths_to_mask(lengths, s)
    if not bool(finite.all()):
        i = int((~finite).any(dim=1).nonzero()[0])
        raise MoWEInputError(f"clip {i} of {name} contains NaN or Inf samples")
    return lengths


def check_encoder_output(out: object, *, batch: int, out_dim: int, who: str) -> EncoderOutput:
    """Check that an encoder honoured the contract; raise naming the encoder if not."""
    if not isinstance(out, EncoderOutput):
        raise MoWEInputError(f"encoder {who} must return an EncoderOutput, got {type(out).__name__}")
    f = out.features
    if f.dim() != 3 or f.shape[0] != batch or f.shape[2] != out_dim:
        raise MoWEInputError(
            f"encoder {who} returned features of shape {tuple(f.shape)}; expected ({batch}, frames, "
            f"{out_dim}) "
            f"(batch {batch}, its out_dim {out_dim})"
        )
    if out.lengths.shape != (batch,):
        raise MoWEInputError(
            f"encoder {who} returned lengths of shape {tuple(out.lengths.shape)}; expected ({batch},)"
        )
    return out


def encode_in_length_groups(
    encode: Callable[[torch.Tensor, torch.Tensor], EncoderOutput],
    waveforms: torch.Tensor,
    lengths: torch.Tensor,
    *,
    max_padding: float,
) -> EncoderOutput:
    """Run ``encode`` on groups of similarly long clips, each trimmed to its own longest clip.

    A batch padded to its longest clip makes every clip pay for that length; grouping makes the cost follow
    the clips' own lengths. Only valid for encoders whose output for a clip does not depend on what it is
    batched with (masked attention and normalisation), e.g. Whisper's real-length path and HuBERT here;
    then the result equals one call on the whole batch up to float rounding.

    Args:
        encode: ``(waveforms (g, s'), lengths (g,)) -> EncoderOutput`` for one group.
        waveforms: ``(b, s)`` zero-padded batch; ``lengths``: ``(b,)`` valid samples.
        max_padding: see :func:`length_groups`.

    Returns:
        The :class:`EncoderOutput` of the whole batch, in the input order, padded to the longest output.
    """
    host = lengths.tolist()  # the one host sync: group sizes and trims are read from this list
    groups = length_groups(host, max_padding)
    if len(groups) == 1:
        return encode(waveforms[:, : max(host)], lengths)
    outs = []
    for g in groups:
        idx = torch.tensor(g, device=waveforms.device)
        outs.append(encode(waveforms[idx, : max(host[i] for i in g)], lengths[idx]))
    t = max(o.features.shape[1] for o in outs)
    order = torch.tensor([i for g in groups for i in g], device=waveforms.device)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order), device=order.device)
    feats = torch.cat([F.pad(o.features, (0, 0, 0, t - o.features.shape[1])) for o in outs])[inverse]
    out_len = torch.cat([o.lengths for o in outs])[inverse]
    hidden = None
    if outs[0].hidden_states is not None:
        hidden = torch.cat([F.pad(o.hidden_states, (0, 0, 0, t - o.hidden_states.shape[2])) for o in outs])[
            inverse
        ]
    return EncoderOutput(features=feats, lengths=out_len, hidden_states=hidden)


def set_trainable(module: torch.nn.Module, trainable: bool) -> torch.nn.Module:
    """Freeze or unfreeze every parameter of ``module``; returns it for chaining."""
    for p in module.parameters():
        p.requires_grad_(trainable)
    return module

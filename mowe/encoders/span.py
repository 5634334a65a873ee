"""Bounding the span of audio an encoder sees: pad short clips with silence, cut long ones.

Shape legend: ``b`` batch, ``s`` samples, ``t`` frames, ``d`` width.

SALMONN's data pipeline pads every clip shorter than 1 s with zeros to 1 s and cuts every clip to its first
30 s before either encoder sees it (arXiv 2310.13289; its loader does this per clip). :class:`ClipSpan` puts
that rule in front of any encoder, so a model computes the same features whether the caller padded the clip or
not, and an encoder with a minimum length (BEATs: 175 ms) accepts any clip.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mowe.encoders.base import SAMPLE_RATE, EncoderOutput, check_waveforms
from mowe.errors import MoWEInputError
from mowe.tensors import lengths_to_mask

__all__ = ["ClipSpan"]


class ClipSpan(nn.Module):
    """An encoder that sees each clip padded with silence to ``min_seconds`` and cut to ``max_seconds``.

    The padded samples count as part of the clip (SALMONN's encoders see them as audio), so the wrapped
    encoder's output lengths follow the padded length. Everything else is the wrapped encoder's:
    ``out_dim``, ``frame_rate``, ``source`` and its parameters (held as ``encoder``).

    Args:
        encoder: any module meeting :mod:`mowe.encoders.base`'s protocol.
        min_seconds: clips shorter than this are zero-padded to it (0: no padding).
        max_seconds: clips longer than this keep only their start (None: no cut).

    Example:
        >>> from mowe.encoders.beats import BEATsEncoder
        >>> enc = ClipSpan(encoder=BEATsEncoder.from_preset("tiny"), min_seconds=1.0, max_seconds=30.0)
        >>> enc(torch.zeros(1, 800), torch.tensor([800])).lengths.tolist()  # 50 ms -> 1 s -> 48 tokens
        [48]
    """

    def __init__(self, *, encoder: nn.Module, min_seconds: float = 0.0, max_seconds: float | None = None):
        super().__init__()
        if not min_seconds >= 0 or (max_seconds is not None and not max_seconds >= max(min_seconds, 1e-9)):
            raise MoWEInputError(
                f"ClipSpan needs 0 <= min_seconds <= max_seconds, got {min_seconds}, {max_seconds}"
            )
        self.encoder = encoder
        self.min_len = round(min_seconds * SAMPLE_RATE)
        self.max_len = None if max_seconds is None else round(max_seconds * SAMPLE_RATE)
        if self.min_len < int(encoder.min_samples):
            raise MoWEInputError(
                f"ClipSpan(min_seconds={min_seconds}) is shorter than the wrapped encoder's "
                f"min_samples ({encoder.min_samples})"
            )
        self.out_dim = int(encoder.out_dim)
        self.frame_rate = float(encoder.frame_rate)
        self.min_samples = 1
        self.source = getattr(encoder, "source", None)

    @property
    def max_input_seconds(self) -> float | None:
        """The wrapped encoder's (:mod:`mowe.encoders.windows`); None when clips are cut (any length is
        taken)."""
        return None if self.max_len is not None else getattr(self.encoder, "max_input_seconds", None)

    @property
    def window_seconds(self) -> float | None:
        """The wrapped encoder's (:mod:`mowe.encoders.windows`); None when clips are cut (any length is
        taken)."""
        return None if self.max_len is not None else getattr(self.encoder, "window_seconds", None)

    def span(self, lengths: torch.Tensor) -> torch.Tensor:
        """``(b,)`` clip lengths -> the lengths the wrapped encoder sees."""
        return lengths.clamp(min=self.min_len, max=self.max_len)

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Output frames per clip of ``lengths`` samples (the wrapped encoder's, after padding / cutting)."""
        return self.encoder.out_lengths(self.span(torch.as_tensor(lengths)))

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """Encode ``(b, s)`` waveforms after padding / cutting each clip; see the class docstring."""
        lengths = check_waveforms(waveforms, lengths, min_samples=1)
        # Samples past a clip's end must be silence: they become that clip's padding.
        wav = waveforms * lengths_to_mask(lengths, waveforms.shape[1]).to(waveforms.dtype)
        span = self.span(lengths)
        width = int(span.max())
        wav = wav[:, :width] if wav.shape[1] >= width else F.pad(wav, (0, width - wav.shape[1]))
        return self.encoder(wav, span)

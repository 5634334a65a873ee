"""The contract every connector (projector into the LLM embedding space) meets.

Shape legend: ``b`` batch, ``t`` frames, ``l`` layers, ``d`` feature width, ``n`` audio tokens.

A connector is an :class:`torch.nn.Module` with ``in_dim`` and ``out_dim`` attributes, called as
``connector(features, lengths)`` where ``features`` is ``(b, t, d)`` (or ``(b, l, t, d)`` when the
connector sets ``needs_all_layers = True``, e.g. LTU-AS's TLTR) and ``lengths`` ``(b,)`` counts valid
frames. It returns a :class:`ConnectorOutput`. ``out_lengths(lengths)`` maps frame counts to token
counts without running the module (the processor and tests use it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ConnectorOutput"]


@dataclass
class ConnectorOutput:
    """Audio tokens for the LLM.

    Attributes:
        embeds: ``(b, n, d_llm)`` audio token embeddings; tokens at or beyond ``lengths[i]`` are padding.
        lengths: ``(b,)`` int64, audio tokens per clip (what replaces that clip's placeholder).
    """

    embeds: torch.Tensor
    lengths: torch.Tensor


def check_frame_lengths(lengths, *, batch: int, frames: int, device: torch.device) -> torch.Tensor:
    """Validate ``(b,)`` valid-frame counts against features of ``batch`` clips and ``frames`` frames.

    Returns int64 lengths on ``device``; raises :class:`~mowe.errors.MoWEInputError` naming the clip.
    """
    from mowe.errors import MoWEInputError

    if batch == 0 or frames == 0:
        raise MoWEInputError(f"features is empty ({batch} clips, {frames} frames)")
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.shape != (batch,) or lengths.is_floating_point():
        raise MoWEInputError(f"lengths must be integers of shape ({batch},), got {lengths.dtype} {tuple(lengths.shape)}")
    lengths = lengths.long()
    bad = ((lengths < 1) | (lengths > frames)).nonzero().flatten().tolist()
    if bad:
        raise MoWEInputError(
            f"lengths out of range at clip {bad[0]}: {int(lengths[bad[0]])} frames, features hold {frames}"
        )
    return lengths

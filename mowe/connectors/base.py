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

from mowe.errors import MoWEInputError

__all__ = ["ConnectorOutput", "check_features", "check_frame_lengths"]


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
    if batch == 0 or frames == 0:
        raise MoWEInputError(f"features is empty ({batch} clips, {frames} frames)")
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.shape != (batch,) or lengths.is_floating_point():
        raise MoWEInputError(
            f"lengths must be integers of shape ({batch},), got {lengths.dtype} {tuple(lengths.shape)}"
        )
    lengths = lengths.long()
    bad = ((lengths < 1) | (lengths > frames)).nonzero().flatten().tolist()
    if bad:
        raise MoWEInputError(
            f"lengths out of range at clip {bad[0]}: {int(lengths[bad[0]])} frames, features hold {frames}"
        )
    return lengths


def check_features(
    features: torch.Tensor, lengths, *, in_dim: int, num_layers: int | None = None, who: str = "connector"
) -> torch.Tensor:
    """The one input check of every connector: ``(b, t, in_dim)`` features (``(b, l, t, in_dim)`` with
    ``num_layers``) and ``(b,)`` valid-frame counts in ``[1, t]``.

    Returns:
        int64 ``(b,)`` lengths on the features' device.

    Raises:
        MoWEInputError: naming the expected shape, the argument and (for a bad length) the clip.
    """
    rank = 3 if num_layers is None else 4
    expected = (
        f"(batch, frames, {in_dim})"
        if num_layers is None
        else f"(batch, {num_layers} layers, frames, {in_dim})"
    )
    if not isinstance(features, torch.Tensor) or features.dim() != rank:
        got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        hint = " (pass EncoderOutput.hidden_states, not .features)" if num_layers is not None else ""
        raise MoWEInputError(f"{who}: features must have shape {expected}, got {got}{hint}")
    if num_layers is not None and features.shape[1] != num_layers:
        raise MoWEInputError(
            f"{who}: features has {features.shape[1]} layers but num_layers_in={num_layers} "
            f"(shape {tuple(features.shape)}, expected {expected})"
        )
    if features.shape[-1] != in_dim:
        raise MoWEInputError(f"{who}: features must have shape {expected}, got last dim {features.shape[-1]}")
    return check_frame_lengths(
        lengths, batch=features.shape[0], frames=features.shape[-2], device=features.device
    )

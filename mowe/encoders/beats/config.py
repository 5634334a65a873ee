"""BEATs architecture config (the keys of an official checkpoint's ``cfg``), presets and frontend
constants."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mowe.config import check_fields, from_dict
from mowe.errors import ConfigError

__all__ = ["BEATS_PRESETS", "BEATsConfig"]


# Frontend constants fixed by the official preprocessing (not part of the checkpoint cfg).
N_MELS = 128
FRAME_LENGTH = 400  # 25 ms at 16 kHz
FRAME_SHIFT = 160  # 10 ms
N_FFT = 512  # Kaldi rounds the window up to a power of two
PREEMPHASIS = 0.97
LOW_FREQ = 20.0  # Kaldi's default lower mel edge; the upper edge is Nyquist
WAVEFORM_SCALE = 2.0**15  # Kaldi works on 16-bit integer sample values
FBANK_MEAN = 15.41663
FBANK_STD = 6.55582

_ACTIVATIONS = ("gelu", "gelu_accurate", "gelu_fast", "relu", "tanh", "linear")


# --------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class BEATsConfig:
    """Architecture of a BEATs model; field names are the keys of an official checkpoint's ``cfg``.

    Defaults are those of the official ``BEATsConfig`` class (what the official loader assumes for a key a
    cfg leaves out), except ``input_patch_size``, whose official placeholder ``-1`` is not a usable size.
    Use :data:`BEATS_PRESETS` / :meth:`BEATsEncoder.from_preset` for the published model.
    """

    input_patch_size: int = 16
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: Literal["gelu", "gelu_accurate", "gelu_fast", "relu", "tanh", "linear"] = "gelu"
    layer_wise_gradient_decay_ratio: float = 1.0  # training only; not applied
    layer_norm_first: bool = False
    deep_norm: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0  # training only; not applied
    dropout_input: float = 0.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False
    finetuned_model: bool = False
    predictor_dropout: float = 0.1  # the predictor head is not run; kept for round trips
    predictor_class: int = 527

    def __post_init__(self) -> None:
        # Types and the activation choice, by the one config loader (0/1 accepted for flags, as in official
        # cfgs).
        check_fields(self, where="BEATs config", int_bools=True)
        positive = (
            "input_patch_size",
            "embed_dim",
            "encoder_layers",
            "encoder_embed_dim",
            "encoder_ffn_embed_dim",
            "encoder_attention_heads",
            "conv_pos",
            "conv_pos_groups",
            "predictor_class",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"BEATs config {name} must be >= 1, got {getattr(self, name)}")
        if self.input_patch_size > N_MELS:
            raise ConfigError(
                f"BEATs config input_patch_size must be <= {N_MELS}, got {self.input_patch_size}"
            )
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise ConfigError(
                f"BEATs config encoder_embed_dim ({self.encoder_embed_dim}) must be divisible by "
                f"encoder_attention_heads ({self.encoder_attention_heads})"
            )
        if self.encoder_embed_dim % self.conv_pos_groups:
            raise ConfigError(
                f"BEATs config encoder_embed_dim ({self.encoder_embed_dim}) must be divisible by "
                f"conv_pos_groups ({self.conv_pos_groups})"
            )
        if self.activation_fn not in _ACTIVATIONS:
            raise ConfigError(
                f"BEATs config activation_fn {self.activation_fn!r} is not supported; "
                f"choose one of {list(_ACTIVATIONS)}"
            )
        if self.deep_norm and self.layer_norm_first:
            raise ConfigError(
                "BEATs config: deep_norm and layer_norm_first cannot both be true (DeepNorm is post-LN)"
            )
        if self.relative_position_embedding:
            if self.num_buckets < 4 or self.num_buckets % 2:
                raise ConfigError(f"BEATs config num_buckets must be even and >= 4, got {self.num_buckets}")
            if self.max_distance <= self.num_buckets // 4:
                raise ConfigError(
                    f"BEATs config max_distance ({self.max_distance}) must exceed num_buckets // 4 "
                    f"({self.num_buckets // 4})"
                )
        for name in (
            "dropout",
            "attention_dropout",
            "activation_dropout",
            "encoder_layerdrop",
            "dropout_input",
            "predictor_dropout",
        ):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"BEATs config {name} must be in [0, 1), got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> BEATsConfig:
        """Build from an official-style cfg dict (:func:`mowe.config.from_dict`): every official key is
        understood; any other key, a wrong type or an unknown activation is a :class:`ConfigError` naming
           it."""
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"BEATs config must be a dict, got {type(cfg).__name__}")
        return from_dict(cls, dict(cfg), where="BEATs config", int_bools=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with the official key names (``save_checkpoint`` stores it as ``cfg``)."""
        return dataclasses.asdict(self)


# The published BEATs (iter3 / iter3+, Sec. 4.1: 12 layers, 768 wide, 90M parameters); cfg values as in the
# official checkpoints. "tiny" is a random-init toy for tests and demos.
_BASE: dict[str, Any] = {
    "input_patch_size": 16,
    "embed_dim": 512,
    "conv_bias": False,
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_norm_first": False,
    "deep_norm": True,
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.0,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "relative_position_embedding": True,
    "num_buckets": 320,
    "max_distance": 800,
    "gru_rel_pos": True,
    "finetuned_model": False,
}
BEATS_PRESETS: dict[str, dict[str, Any]] = {
    "base": _BASE,
    "tiny": {
        **_BASE,
        "embed_dim": 32,
        "encoder_layers": 2,
        "encoder_embed_dim": 64,
        "encoder_ffn_embed_dim": 128,
        "encoder_attention_heads": 4,
        "conv_pos": 16,
        "conv_pos_groups": 4,
    },
}

"""The BEATs encoder module: patch embedding + backbone, official checkpoint loading and saving."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mowe.encoders.base import SAMPLE_RATE, EncoderOutput, check_waveforms, set_trainable
from mowe.encoders.beats.config import (
    BEATS_PRESETS,
    FBANK_MEAN,
    FBANK_STD,
    FRAME_LENGTH,
    FRAME_SHIFT,
    N_MELS,
    WAVEFORM_SCALE,
    BEATsConfig,
)
from mowe.encoders.beats.fbank import KaldiFbank
from mowe.encoders.beats.layers import _init_weights, _TransformerEncoder
from mowe.errors import CheckpointError, ConfigError
from mowe.state_dicts import alias_groups, check_aliases
from mowe.tensors import lengths_to_mask

__all__ = ["BEATsEncoder"]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- encoder
class BEATsEncoder(nn.Module):
    """BEATs behind mowe's encoder protocol; weights and parameter names as the official checkpoints.

    Args:
        config: the architecture (an official ``cfg`` via :meth:`BEATsConfig.from_dict`).
        freeze: freeze every parameter (the classmethods default to True: SALMONN keeps BEATs frozen).
        source: checkpoint path the weights came from (None for random weights).

    Attributes:
        out_dim: ``encoder_embed_dim`` (768 for the published model).
        frame_rate: nominal tokens per second, 50.0 for 16x16 patches (see the module docstring).
        min_samples: shortest clip with one full patch row, 2800 samples (175 ms) for 16x16 patches.

    Example:
        >>> enc = BEATsEncoder.from_preset("tiny")
        >>> out = enc(torch.zeros(2, 16000), torch.tensor([16000, 8000]))
        >>> out.features.shape, out.lengths.tolist()
        (torch.Size([2, 48, 64]), [48, 24])
    """

    def __init__(self, config: BEATsConfig, *, freeze: bool = False, source: str | None = None):
        super().__init__()
        cfg = self.config = config
        p = cfg.input_patch_size
        self.out_dim = cfg.encoder_embed_dim
        self.freq_patches = N_MELS // p
        self.frame_rate = float(self.freq_patches * SAMPLE_RATE / (p * FRAME_SHIFT))
        self.min_samples = FRAME_LENGTH + (p - 1) * FRAME_SHIFT
        self.source = source

        self.fbank = KaldiFbank(N_MELS)  # buffers only: nothing in the state dict
        self.patch_embedding = nn.Conv2d(1, cfg.embed_dim, kernel_size=p, stride=p, bias=cfg.conv_bias)
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        if cfg.embed_dim != cfg.encoder_embed_dim:
            self.post_extract_proj = nn.Linear(cfg.embed_dim, cfg.encoder_embed_dim)
        else:
            self.post_extract_proj = None
        self.encoder = _TransformerEncoder(cfg)
        # AudioSet head of fine-tuned checkpoints: held so the file loads and round-trips; never run.
        self.predictor = (
            nn.Linear(cfg.encoder_embed_dim, cfg.predictor_class) if cfg.finetuned_model else None
        )
        _init_weights(self, cfg)
        if cfg.layer_wise_gradient_decay_ratio != 1.0 or cfg.encoder_layerdrop > 0:
            logger.info(
                "BEATs: layer_wise_gradient_decay_ratio and encoder_layerdrop are training settings of "
                "the official recipe and are not applied here"
            )
        set_trainable(self, not freeze)

    # ----------------------------------------------------------------------------------------- building
    @classmethod
    def from_preset(cls, name: str = "base", *, freeze: bool = True, **overrides: Any) -> BEATsEncoder:
        """Random weights at a named size (``"base"``: the published model, ``"tiny"``: a toy for tests);
        ``overrides`` replace config fields by their official names."""
        if name not in BEATS_PRESETS:
            raise ConfigError(f"unknown BEATs preset {name!r}; choose one of {sorted(BEATS_PRESETS)}")
        return cls(BEATsConfig.from_dict({**BEATS_PRESETS[name], **overrides}), freeze=freeze)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, freeze: bool = True) -> BEATsEncoder:
        """Load an official-format BEATs file (``{"cfg": dict, "model": state_dict}``, e.g.
        ``BEATs_iter3_plus_AS2M.pt``) or one written by :meth:`save_checkpoint`.

        The file is read with ``torch.load(weights_only=True)``: a pickle that would run code is refused.

        Raises:
            CheckpointError: the file is missing, truncated, not a torch file, holds something other than
                tensors and plain containers, lacks ``cfg``/``model``, has an invalid or unknown cfg key,
                or its weights are missing, unexpected or mis-shaped for its cfg. The message names the file
                and the key.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise CheckpointError(f"BEATs checkpoint {path} does not exist or is not a file")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated zip, garbage bytes, refused globals: all mean "not a usable file"
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"BEATs checkpoint {path} could not be read: it is truncated, not a torch.save file, or "
                f"holds objects other than tensors and plain containers (loaded with weights_only=True): "
                f"{reason}"
            ) from e
        if not isinstance(ckpt, Mapping) or "cfg" not in ckpt or "model" not in ckpt:
            found = sorted(map(str, ckpt)) if isinstance(ckpt, Mapping) else type(ckpt).__name__
            raise CheckpointError(
                f"BEATs checkpoint {path} must be a dict with keys 'cfg' and 'model'; found {found}"
            )
        if not isinstance(ckpt["model"], Mapping):
            raise CheckpointError(
                f"BEATs checkpoint {path}: 'model' must be a state dict, got {type(ckpt['model']).__name__}"
            )
        try:
            config = BEATsConfig.from_dict(ckpt["cfg"])
        except ConfigError as e:
            raise CheckpointError(f"BEATs checkpoint {path}: invalid cfg: {e}") from e
        model = cls(config, source=path)
        model._load_official_state(dict(ckpt["model"]), path)
        set_trainable(model, not freeze)
        return model

    def _load_official_state(self, state: dict[str, Any], path: str) -> None:
        expected = self.state_dict()
        # Every layer's key names layer 0's shared relative-position table: each copy the file holds must
        # equal layer 0's, and files that kept only layer 0's copy load too.
        state = check_aliases(state, alias_groups(self), where=f"BEATs checkpoint {path}", fill=True)
        missing = [k for k in expected if k not in state]
        if missing:
            raise CheckpointError(
                f"BEATs checkpoint {path} lacks {len(missing)} weight(s) its cfg requires: {missing[:8]}"
            )
        unexpected = [k for k in state if k not in expected]
        if unexpected:
            raise CheckpointError(
                f"BEATs checkpoint {path} has {len(unexpected)} weight(s) its cfg does not "
                f"describe: {unexpected[:8]}"
            )
        for k, ref in expected.items():
            v = state[k]
            if not isinstance(v, torch.Tensor):
                raise CheckpointError(f"BEATs checkpoint {path}: {k} is a {type(v).__name__}, not a tensor")
            if v.shape != ref.shape:
                raise CheckpointError(
                    f"BEATs checkpoint {path}: {k} has shape {tuple(v.shape)}, but its cfg "
                    f"needs {tuple(ref.shape)}"
                )
        self.load_state_dict(state, strict=True)

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Write ``{"cfg": dict, "model": state_dict}``, the official file layout, atomically."""
        path = os.fspath(path)
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        tmp = f"{path}.tmp{os.getpid()}"
        torch.save({"cfg": self.config.to_dict(), "model": state}, tmp)
        os.replace(tmp, path)

    # ----------------------------------------------------------------------------------------- running
    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Tokens per clip of ``L`` samples: ``(F // p) * (128 // p)`` with ``F = 1 + (L - 400) // 160``."""
        frames = KaldiFbank.num_frames(lengths)
        return torch.div(frames, self.config.input_patch_size, rounding_mode="floor") * self.freq_patches

    def forward(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None, output_hidden_states: bool = False
    ) -> EncoderOutput:
        """Encode 16 kHz waveforms.

        Args:
            waveforms: ``(b, s)`` float, right-zero-padded.
            lengths: ``(b,)`` valid samples per clip (None: every clip fills the tensor).
            output_hidden_states: also return ``(b, l + 1, t, d)``: the input to the first layer, then every
                layer's output (the last entry equals ``features``).

        Returns:
            EncoderOutput with features ``(b, t, d)``, ``t = max(lengths_out)``, zero past each clip's length.
        """
        lengths = check_waveforms(waveforms, lengths, min_samples=self.min_samples)
        wav = waveforms[:, : int(lengths.max())]
        fbank = self.fbank(wav.float() * WAVEFORM_SCALE)  # (b, f, m), float32
        fbank = (fbank - FBANK_MEAN) / (2.0 * FBANK_STD)
        dtype = self.patch_embedding.weight.dtype
        x = self.patch_embedding(fbank.unsqueeze(1).to(dtype))  # (b, e, f // p, m // p)
        x = self.layer_norm(rearrange(x, "b e t f -> b (t f) e"))  # time-major, as the official flattening
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        x = F.dropout(x, p=self.config.dropout_input, training=self.training)

        out_len = self.out_lengths(lengths)
        valid = lengths_to_mask(out_len, x.shape[1])
        x, states = self.encoder(x, valid, output_hidden_states)
        keep = valid[..., None].to(x.dtype)
        hidden = torch.stack(states, dim=1) * keep[:, None] if states is not None else None
        return EncoderOutput(features=x * keep, lengths=out_len, hidden_states=hidden)

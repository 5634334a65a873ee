"""HuBERT / wav2vec 2.0 / WavLM encoders through transformers.

Shape legend: ``b`` batch, ``s`` samples, ``c`` conv channels, ``t`` frames (~50 Hz), ``d`` width.

Batching with padding is exact here: the base models normalise their first conv layer with a GroupNorm
over *time*, which would let a clip's padding change its features; we compute that norm over each clip's
valid frames only, so a clip gives the same features alone or in any batch.

Long clips: attention is quadratic in length, so clips longer than ``window_seconds`` (30 s by default) are
encoded in windows of that length and their frames stitched (:mod:`mowe.encoders.windows`).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, HubertConfig, PreTrainedModel, Wav2Vec2Config, WavLMConfig

from mowe.encoders.base import (
    SAMPLE_RATE,
    EncoderOutput,
    check_waveforms,
    encode_in_length_groups,
    set_trainable,
)
from mowe.encoders.windows import check_window_seconds, encode_in_windows, window_samples
from mowe.errors import MoWEInputError
from mowe.hub import naming_refused_pickles, resolve_file
from mowe.tensors import check_bucket_padding, lengths_to_mask, resolve_bucket_padding

__all__ = ["DEFAULT_WINDOW_SECONDS", "HUBERT_PRESETS", "HubertEncoder"]

#: Clips longer than this are encoded in windows of it (``HubertEncoder(window_seconds=...)``).
DEFAULT_WINDOW_SECONDS = 30.0

# Published base sizes; the transformers config defaults are the base models.
HUBERT_PRESETS: dict[str, tuple[type, dict]] = {
    "hubert-base": (HubertConfig, {}),
    "hubert-large": (
        HubertConfig,
        dict(
            hidden_size=1024,
            num_hidden_layers=24,
            num_attention_heads=16,
            intermediate_size=4096,
            feat_extract_norm="layer",
            do_stable_layer_norm=True,
        ),
    ),
    "wav2vec2-base": (Wav2Vec2Config, {}),
    "wavlm-base": (WavLMConfig, {}),
}


def _masked_group_norm(x: torch.Tensor, norm: nn.GroupNorm, valid: torch.Tensor) -> torch.Tensor:
    """GroupNorm over time computed on valid frames only. ``x`` ``(b, c, t)``, ``valid`` ``(b, t)`` bool.

    One pass for the sums and one fused scale-and-shift: this tensor is the largest in the encoder
    (512 channels at 3.2 kHz for HuBERT-base), so every extra elementwise pass shows in the step time.
    """
    b, c, t = x.shape
    g = norm.num_groups
    m = valid[:, None, :].to(x.dtype)  # (b, 1, t)
    xm = x * m
    n = m.sum(-1, keepdim=True) * (c // g)  # (b, 1, 1) values per group
    s1 = xm.sum(-1).reshape(b, g, -1).sum(-1)  # (b, g)
    s2 = (xm * x).sum(-1).reshape(b, g, -1).sum(-1)
    mean = s1 / n[:, :, 0]
    var = (s2 / n[:, :, 0] - mean.square()).clamp(min=0)
    rstd = torch.rsqrt(var + norm.eps)
    scale = rstd.repeat_interleave(c // g, dim=1)  # (b, c)
    shift = -(mean * rstd).repeat_interleave(c // g, dim=1)
    if norm.affine:
        scale, shift = scale * norm.weight, shift * norm.weight + norm.bias
    return torch.addcmul(shift[..., None], x, scale[..., None])


class HubertEncoder(nn.Module):
    """A HuBERT-family model (``HubertModel``, ``Wav2Vec2Model``, ``WavLMModel``) behind mowe's encoder
    protocol.

    Args:
        model: the transformers base model (its modules are used as they are).
        normalize_waveform: zero-mean / unit-variance per clip before encoding (wav2vec2-large-style
            checkpoints expect it; HuBERT-base does not). Computed over valid samples only.
        freeze: freeze all parameters (default True: weak encoders are frozen in MoWE).
        bucket_padding: encode the batch in groups of similar length, each wasting at most this fraction of
            its real samples on padding (:func:`mowe.encoders.base.length_groups`); None pads the whole batch
            to its longest clip; ``"auto"`` (default): 0.05 on CPU, 0.25 on accelerators. Features are the
            same either way (masked normalisation and attention).
        source: hub id or folder the weights came from (None for random weights).
        window_seconds: clips longer than this are encoded in windows of this many seconds, their frames
            stitched in time (:func:`mowe.encoders.windows.encode_in_windows`), so attention memory stays
            bounded rather than growing with the square of the length; None: every clip whole. Default 30 s
            (the length HuBERT-family models were pre-trained on is far shorter, so a window loses little
            context).

    Example:
        >>> enc = HubertEncoder.from_preset("hubert-base", hidden_size=32, num_hidden_layers=1,
        ...                                 num_attention_heads=2, intermediate_size=64, conv_dim=(32,) * 7)
        >>> enc(torch.zeros(1, 16000)).features.shape
        torch.Size([1, 49, 32])
    """

    def __init__(
        self,
        model: PreTrainedModel,
        *,
        normalize_waveform: bool = False,
        freeze: bool = True,
        bucket_padding: float | str | None = "auto",
        source: str | None = None,
        window_seconds: float | None = DEFAULT_WINDOW_SECONDS,
    ):
        super().__init__()
        self.bucket_padding = check_bucket_padding(bucket_padding)
        self.model = model
        cfg = model.config
        self.out_dim = cfg.hidden_size
        stride = math.prod(cfg.conv_stride)
        self.frame_rate = SAMPLE_RATE / stride  # 50 Hz for the 320x downsampling of the base models
        # Receptive field of the conv stack: the shortest clip that yields one frame (400 samples).
        rf = 1
        for k, s in reversed(list(zip(cfg.conv_kernel, cfg.conv_stride))):
            rf = (rf - 1) * s + k
        self.min_samples = rf
        self.normalize_waveform = normalize_waveform
        self.source = source
        self.window_seconds = window_seconds
        if window_seconds is not None:
            check_window_seconds(
                self, window_seconds, who="this HuBERT-family encoder", what="window_seconds"
            )
        set_trainable(self, not freeze)

    @classmethod
    def from_preset(
        cls,
        name: str = "hubert-base",
        *,
        freeze: bool = True,
        normalize_waveform: bool = False,
        bucket_padding: float | str | None = "auto",
        window_seconds: float | None = DEFAULT_WINDOW_SECONDS,
        **overrides,
    ) -> HubertEncoder:
        """Random weights at a published size (``hubert-base``, ``hubert-large``, ``wav2vec2-base``,
        ``wavlm-base``)."""
        if name not in HUBERT_PRESETS:
            raise MoWEInputError(
                f"unknown HuBERT-family preset {name!r}; choose one of {sorted(HUBERT_PRESETS)}"
            )
        config_cls, base = HUBERT_PRESETS[name]
        cfg = config_cls(**{**base, **overrides})
        return cls(
            AutoModel.from_config(cfg),
            freeze=freeze,
            normalize_waveform=normalize_waveform,
            bucket_padding=bucket_padding,
            window_seconds=window_seconds,
        )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        freeze: bool = True,
        normalize_waveform: bool | None = None,
        bucket_padding: float | str | None = "auto",
        dtype: torch.dtype | None = None,
        window_seconds: float | None = DEFAULT_WINDOW_SECONDS,
    ) -> HubertEncoder:
        """Load by hub id or local folder (a checkpoint with a CTC head loads its base model)."""
        config = AutoConfig.from_pretrained(name_or_path)
        if config.model_type not in ("hubert", "wav2vec2", "wavlm"):
            raise MoWEInputError(
                f"{name_or_path}: model_type {config.model_type!r} is not hubert/wav2vec2/wavlm"
            )
        with naming_refused_pickles(name_or_path, what=f"{config.model_type} encoder"):
            model = AutoModel.from_pretrained(name_or_path, dtype=dtype)
        if normalize_waveform is None:
            normalize_waveform = _reads_normalize_flag(name_or_path)
        return cls(
            model,
            freeze=freeze,
            normalize_waveform=normalize_waveform,
            bucket_padding=bucket_padding,
            source=name_or_path,
            window_seconds=window_seconds,
        )

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        out = lengths
        for k, s in zip(self.model.config.conv_kernel, self.model.config.conv_stride):
            out = torch.div(out - k, s, rounding_mode="floor") + 1
        return out

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """Encode ``(b, s)`` 16 kHz waveforms; returns features ``(b, t, d)`` at ~50 Hz and frame lengths."""
        lengths = check_waveforms(waveforms, lengths, min_samples=self.min_samples)
        if self.window_seconds is not None:
            window = window_samples(self.window_seconds, who="this HuBERT-family encoder")
            if waveforms.shape[1] > window:
                return encode_in_windows(
                    self._encode_grouped, waveforms, lengths, window=window, min_samples=self.min_samples
                )
        return self._encode_grouped(waveforms, lengths)

    def _encode_grouped(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        if self.bucket_padding is None or waveforms.shape[0] == 1:
            return self._encode(waveforms, lengths)
        return encode_in_length_groups(
            self._encode,
            waveforms,
            lengths,
            max_padding=resolve_bucket_padding(self.bucket_padding, waveforms.device),
        )

    def _encode(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        valid = lengths_to_mask(lengths, waveforms.shape[1])
        x = waveforms.float() * valid
        if self.normalize_waveform:
            n = lengths[:, None].to(x.dtype)
            mean = x.sum(1, keepdim=True) / n
            var = (((x - mean) * valid) ** 2).sum(1, keepdim=True) / n
            x = (x - mean) / torch.sqrt(var + 1e-7) * valid
        model = self.model
        dtype = next(model.parameters()).dtype
        h = x.to(dtype)[:, None, :]  # (b, 1, s)
        frame_len = lengths
        for layer in model.feature_extractor.conv_layers:
            norm = getattr(layer, "layer_norm", None)
            if isinstance(norm, nn.GroupNorm):
                h = layer.conv(h)
                frame_len = (
                    torch.div(
                        frame_len - layer.conv.kernel_size[0], layer.conv.stride[0], rounding_mode="floor"
                    )
                    + 1
                )
                h = layer.activation(_masked_group_norm(h, norm, lengths_to_mask(frame_len, h.shape[-1])))
            else:
                h = layer(h)
        # Frames whose receptive field lies inside the clip never see padding (the convs have no padding),
        # so only the GroupNorm above needed masking.
        t = h.shape[-1]
        out_len = self.out_lengths(lengths)
        mask = lengths_to_mask(out_len, t)
        proj = model.feature_projection(h.transpose(1, 2))
        hidden = proj[0] if isinstance(proj, tuple) else proj
        enc = model.encoder(hidden, attention_mask=mask)
        feats = enc[0] if isinstance(enc, tuple) else enc.last_hidden_state
        return EncoderOutput(features=feats, lengths=out_len)


def _reads_normalize_flag(name_or_path: str) -> bool:
    """``do_normalize`` from the checkpoint's preprocessor config, False if there is none."""
    import json

    path = resolve_file(name_or_path, "preprocessor_config.json")
    if path is None:
        return False
    with open(path) as f:
        return bool(json.load(f).get("do_normalize", False))

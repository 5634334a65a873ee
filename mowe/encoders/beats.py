"""BEATs audio encoder (Chen et al. 2022, "BEATs: Audio Pre-Training with Acoustic Tokenizers",
arXiv 2212.09058).

Written from the paper and checked against the official implementation (microsoft/unilm ``beats/``) for
parameter names and arithmetic, so an official ``BEATs_iter3*.pt`` file (a dict ``{"cfg": {...}, "model":
state_dict}``) loads with strict key matching and gives the same features. SALMONN uses this encoder next to
Whisper.

Shape legend: ``b`` batch, ``s`` samples, ``f`` fbank frames (100 Hz), ``m`` mel bins (128), ``e`` patch
width (``embed_dim``), ``t`` tokens, ``d`` width (``encoder_embed_dim``), ``h`` heads, ``l`` layers.

Pipeline (paper Sec. 3.1, Fig. 2)::

    waveform * 2**15 -> Kaldi fbank (b, f, 128) -> (x - 15.41663) / (2 * 6.55582)
      -> 16x16 patches, Conv2d(1, e)          (b, e, f // 16, 8)
      -> flatten time-major                   (b, t = (f // 16) * 8, e); token j = 8 * time_row + freq_band
      -> LayerNorm, Linear(e, d)
      -> + GELU(weight-normed grouped Conv1d)  (conv positional embedding, as wav2vec 2.0)
      -> LayerNorm -> 12 post-LN ("DeepNorm") layers with gated relative position bias (as WavLM)

Output length and frame rate. A clip of ``L`` samples gives ``F = 1 + (L - 400) // 160`` fbank frames
(25 ms window, 10 ms shift, edges snipped) and ``T = (F // 16) * 8`` tokens: the patch Conv2d has stride 16
and no padding, so the official model drops the trailing ``F % 16`` frames; we do the same. Each 160 ms of
audio yields one row of 8 frequency patches, laid out one after another, so the sequence runs at a
*nominal* 8 tokens / 0.16 s = 50 tokens/s. Consecutive tokens are different frequency bands of the same
160 ms, not successive 20 ms steps; SALMONN nevertheless treats the BEATs sequence as frame-synchronous with
Whisper's 50 Hz output (it pads/truncates one to the other's length and concatenates), and so does
``frame_rate = 50.0`` here. The shortest clip with one full patch row is ``400 + 15 * 160 = 2800`` samples
(175 ms): that is ``min_samples``.

Padding. The official ``padding_mask`` path maps a sample-level mask to tokens by reshaping, which marks a
partly filled last patch row as partly valid and depends on the batch's longest clip. Here the valid token
count is computed exactly from each clip's length with the formula above, padded tokens are zeroed before
the positional convolution and never attended to, so a clip's features do not depend on what it is batched
with, and equal the official output for that clip run alone.

Checkpoint notes (verified against the official code):

* the positional conv uses ``torch.nn.utils.weight_norm(..., dim=2)``: keys ``encoder.pos_conv.0.weight_g``
  ``(1, 1, conv_pos)`` and ``weight_v``; we hold the two tensors directly and rebuild the weight each call;
* layer 0 owns the relative-position table and the other layers share that very module, so ``state_dict()``
  lists ``encoder.layers.{i}.self_attn.relative_attention_bias.weight`` for *every* layer (all equal). We
  share it the same way. Exports that keep only layer 0's copy load too;
* fine-tuned AudioSet checkpoints (``finetuned_model: true``) carry ``predictor.weight``/``predictor.bias``
  (the 527-class head). They are loaded and saved so the file round-trips, but ``forward`` never uses them:
  SALMONN and mowe take the encoder features;
* ``layer_wise_gradient_decay_ratio``, ``encoder_layerdrop`` and ``predictor_dropout`` are training-time
  settings of the official recipe; they are kept in the config (so files round-trip) and not applied.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mowe.encoders.base import SAMPLE_RATE, EncoderOutput, check_waveforms, lengths_to_mask, set_trainable
from mowe.errors import CheckpointError, ConfigError

__all__ = ["BEATS_PRESETS", "BEATsConfig", "BEATsEncoder", "KaldiFbank"]

logger = logging.getLogger(__name__)

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
    activation_fn: str = "gelu"
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
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, f.type, getattr(self, f.name)))
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
        """Build from an official-style cfg dict; every official key is understood, any other is an error."""
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"BEATs config must be a dict, got {type(cfg).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        for key in cfg:
            if key not in known:
                raise ConfigError(f"unknown BEATs config key {key!r}; known keys: {sorted(known)}")
        return cls(**dict(cfg))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with the official key names (``save_checkpoint`` stores it as ``cfg``)."""
        return dataclasses.asdict(self)


def _coerce(name: str, kind: Any, value: Any) -> Any:
    """Check one config value against its annotated type ('int', 'float', 'bool', 'str')."""
    kind = kind if isinstance(kind, str) else kind.__name__
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):  # the official code compares some flags with == 1
            return bool(value)
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind == "str" and isinstance(value, str):
        return value
    raise ConfigError(f"BEATs config {name} must be {kind}, got {value!r} ({type(value).__name__})")


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


# --------------------------------------------------------------------------------------------- frontend
def _mel_scale(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(freq / 700.0)


def kaldi_mel_matrix(
    n_mels: int = N_MELS,
    *,
    n_fft: int = N_FFT,
    sample_rate: int = SAMPLE_RATE,
    low_freq: float = LOW_FREQ,
    high_freq: float | None = None,
) -> torch.Tensor:
    """Kaldi's triangular mel filters (not area-normalised), a ``(n_fft // 2 + 1, n_mels)`` float64 matrix.

    Triangles are equally spaced on the mel scale ``1127 ln(1 + f / 700)`` between ``low_freq`` and
    ``high_freq`` (Nyquist by default) and evaluated at the FFT bin centres in mel; the Nyquist bin gets 0.
    """
    high = sample_rate / 2 if high_freq is None else high_freq
    mel_lo, mel_hi = (
        _mel_scale(torch.tensor(low_freq, dtype=torch.float64)),
        _mel_scale(torch.tensor(high, dtype=torch.float64)),
    )
    step = (mel_hi - mel_lo) / (n_mels + 1)
    edges = mel_lo + step * torch.arange(n_mels + 2, dtype=torch.float64)  # left, centre, right per filter
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bin_mel = _mel_scale(torch.arange(n_fft // 2, dtype=torch.float64) * (sample_rate / n_fft))[None, :]
    rising = (bin_mel - left) / (centre - left)
    falling = (right - bin_mel) / (right - centre)
    tri = torch.minimum(rising, falling).clamp(min=0.0)  # (n_mels, n_fft // 2)
    return F.pad(tri, (0, 1)).T.contiguous()


class KaldiFbank(nn.Module):
    """Batched Kaldi log mel filterbank, as ``torchaudio.compliance.kaldi.fbank`` with BEATs' settings.

    Settings: 25 ms Povey window, 10 ms shift, edges snipped, DC offset removed per frame, pre-emphasis 0.97,
    no dither, FFT size 512, power spectrum, 128 mel bins from 20 Hz to Nyquist, natural log floored at the
    float32 epsilon, no energy term. Each frame sees only its own 400 samples, so frames inside a clip do not
    depend on the padding after it.
    """

    def __init__(self, n_mels: int = N_MELS):
        super().__init__()
        # Povey window: a symmetric Hann window raised to 0.85.
        window = torch.hann_window(FRAME_LENGTH, periodic=False, dtype=torch.float64).pow(0.85)
        self.register_buffer("window", window.float(), persistent=False)
        self.register_buffer("mel_matrix", kaldi_mel_matrix(n_mels).float(), persistent=False)

    @staticmethod
    def num_frames(lengths: torch.Tensor) -> torch.Tensor:
        """Frames for clips of ``lengths`` samples (``snip_edges``: whole windows only); 0 below 400."""
        return (torch.div(lengths - FRAME_LENGTH, FRAME_SHIFT, rounding_mode="floor") + 1).clamp(min=0)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``(b, s)`` samples on the int16 scale -> ``(b, f, m)`` float32 log mel energies."""
        frames = waveforms.float().unfold(-1, FRAME_LENGTH, FRAME_SHIFT)  # (b, f, 400)
        frames = frames - frames.mean(dim=-1, keepdim=True)
        # Pre-emphasis inside the frame; the first sample uses itself as its predecessor (as Kaldi does).
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = (frames - PREEMPHASIS * previous) * self.window
        spectrum = torch.fft.rfft(frames, n=N_FFT)  # zero-padded to 512 points
        power = spectrum.real.square() + spectrum.imag.square()
        mel = power @ self.mel_matrix
        return mel.clamp(min=torch.finfo(torch.float32).eps).log()


# --------------------------------------------------------------------------------------------- backbone
class _WeightNormConv1d(nn.Module):
    """Grouped Conv1d whose weight is ``weight_g * weight_v / ||weight_v||``, the norm taken over every axis
    but the kernel axis (``torch.nn.utils.weight_norm(conv, dim=2)``); same parameter names and shapes."""

    def __init__(self, channels: int, kernel: int, groups: int):
        super().__init__()
        self.padding, self.groups = kernel // 2, groups
        v = torch.empty(channels, channels // groups, kernel)
        # wav2vec 2.0 / BEATs init: N(0, sqrt(4 / (kernel * channels))), then g = ||v||.
        nn.init.normal_(v, mean=0.0, std=math.sqrt(4.0 / (kernel * channels)))
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(v.norm(dim=(0, 1), keepdim=True))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.weight_v
        weight = v * (self.weight_g / v.norm(dim=(0, 1), keepdim=True))
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class _DropLastForEvenKernel(nn.Module):
    """An even kernel with ``padding = k // 2`` yields one extra output frame; drop it to keep the length."""

    def __init__(self, kernel: int):
        super().__init__()
        self.drop = 1 if kernel % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : x.shape[-1] - self.drop]


def _relative_buckets(length: int, num_buckets: int, max_distance: int, device: torch.device) -> torch.Tensor:
    """``(t, t)`` bucket index of key-minus-query offsets (T5-style, bidirectional, log-spaced far away)."""
    pos = torch.arange(length, device=device)
    offset = pos[None, :] - pos[:, None]
    half = num_buckets // 2  # one half for keys after the query, one for keys before
    exact = half // 2  # offsets below this get a bucket each
    dist = offset.abs()
    # Same float32 arithmetic and operation order as the official code, so bucket edges coincide.
    far = (
        exact
        + (
            torch.log(dist.clamp(min=1).float() / exact) / math.log(max_distance / exact) * (half - exact)
        ).long()
    )
    far = far.clamp(max=half - 1)
    return (offset > 0).long() * half + torch.where(dist < exact, dist, far)


class _SelfAttention(nn.Module):
    """Multi-head self-attention with WavLM's gated relative position bias (BEATs Sec. 3.1).

    The bias table is shared across layers; each layer gates it per head and query with
    ``a * (b * grep_a - 1) + 2`` where ``a, b = sigmoid(sum of 4 of grep_linear(q))``, ``q`` being the
    unscaled query projection of that head.
    """

    def __init__(self, dim: int, heads: int, *, dropout: float, gated: bool):
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.gated = gated
        if gated:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor | None, key_padding: torch.Tensor | None
    ) -> torch.Tensor:
        """``x (b, t, d)``; ``bias (h, t, t)`` or None; ``key_padding (b, t)`` True on padding, or None."""
        q, k, v = (
            rearrange(p(x), "b t (h e) -> b h t e", h=self.heads)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        mask = None
        if bias is not None:
            mask = bias.to(q.dtype)[None]  # (1, h, t, t)
            if self.gated:
                gates = torch.sigmoid(self.grep_linear(q).unflatten(-1, (2, 4)).sum(-1))  # (b, h, t, 2)
                gate = gates[..., :1] * (gates[..., 1:] * self.grep_a - 1.0) + 2.0  # (b, h, t, 1)
                mask = gate * mask
        if key_padding is not None:
            blocked = key_padding[:, None, None, :]
            mask = (torch.zeros((), dtype=q.dtype, device=q.device) if mask is None else mask).masked_fill(
                blocked, float("-inf")
            )
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            scale=self.head_dim**-0.5,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out_proj(rearrange(out, "b h t e -> b t (h e)"))


class _EncoderLayer(nn.Module):
    """One transformer layer: post-LN (DeepNorm up-weights the residual by ``(2N)^(1/4)``) or pre-LN."""

    def __init__(self, cfg: BEATsConfig):
        super().__init__()
        d = cfg.encoder_embed_dim
        self.self_attn = _SelfAttention(
            d, cfg.encoder_attention_heads, dropout=cfg.attention_dropout, gated=cfg.gru_rel_pos
        )
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.pre_norm = cfg.layer_norm_first
        self.alpha = (2.0 * cfg.encoder_layers) ** 0.25 if cfg.deep_norm else 1.0
        self.activation = cfg.activation_fn
        self.dropout, self.activation_dropout = cfg.dropout, cfg.activation_dropout

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation == "gelu":
            return F.gelu(x.float()).type_as(x)  # the official code runs GELU in float32
        if self.activation in ("gelu_accurate", "gelu_fast"):
            return F.gelu(x, approximate="tanh")
        if self.activation == "relu":
            return F.relu(x)
        if self.activation == "tanh":
            return torch.tanh(x)
        return x

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        x = F.dropout(self._act(self.fc1(x)), p=self.activation_dropout, training=self.training)
        return F.dropout(self.fc2(x), p=self.dropout, training=self.training)

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor | None, key_padding: torch.Tensor | None
    ) -> torch.Tensor:
        def attn(y: torch.Tensor) -> torch.Tensor:
            return F.dropout(self.self_attn(y, bias, key_padding), p=self.dropout, training=self.training)

        if self.pre_norm:
            x = x + attn(self.self_attn_layer_norm(x))
            return x + self._ffn(self.final_layer_norm(x))
        x = self.self_attn_layer_norm(x * self.alpha + attn(x))
        return self.final_layer_norm(x * self.alpha + self._ffn(x))


class _TransformerEncoder(nn.Module):
    """Conv positional embedding + layers; module names follow the official ``TransformerEncoder``."""

    def __init__(self, cfg: BEATsConfig):
        super().__init__()
        d = cfg.encoder_embed_dim
        self.pos_conv = nn.Sequential(
            _WeightNormConv1d(d, cfg.conv_pos, cfg.conv_pos_groups),
            _DropLastForEvenKernel(cfg.conv_pos),
            nn.GELU(),
        )
        self.layers = nn.ModuleList(_EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.rel_pos = cfg.relative_position_embedding
        self.num_buckets, self.max_distance = cfg.num_buckets, cfg.max_distance
        if self.rel_pos:
            table = nn.Embedding(cfg.num_buckets, cfg.encoder_attention_heads)
            for layer in self.layers:  # one module registered under every layer, as the official model does
                layer.self_attn.relative_attention_bias = table
        self.layer_norm = nn.LayerNorm(d)
        self.pre_norm = cfg.layer_norm_first
        self.dropout = cfg.dropout

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, output_hidden_states: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        # Zero padded tokens so the positional conv sees the same zeros a lone clip's conv padding gives.
        x = x.masked_fill(~valid[..., None], 0.0)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.pre_norm:
            x = self.layer_norm(x)
        x = F.dropout(x, p=self.dropout, training=self.training)
        bias = None
        if self.rel_pos:
            table = self.layers[0].self_attn.relative_attention_bias
            buckets = _relative_buckets(x.shape[1], self.num_buckets, self.max_distance, x.device)
            bias = rearrange(table(buckets), "q k h -> h q k")
        key_padding = None if bool(valid.all()) else ~valid
        states = [x] if output_hidden_states else None
        for layer in self.layers:
            x = layer(x, bias, key_padding)
            if states is not None:
                states.append(x)
        if self.pre_norm:
            x = self.layer_norm(x)
            if states is not None:
                states[-1] = x
        return x, states


def _init_weights(model: BEATsEncoder, cfg: BEATsConfig) -> None:
    """BERT-style init of the transformer (N(0, 0.02), zero biases), DeepNorm's scaled Xavier for the
    value/output/FFN projections (gain ``(8N)^(-1/4)``), as the official model is initialised."""
    for module in model.encoder.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
    if cfg.deep_norm:
        beta = (8.0 * cfg.encoder_layers) ** -0.25
        for layer in model.encoder.layers:
            a = layer.self_attn
            nn.init.xavier_normal_(a.k_proj.weight, gain=1.0)
            nn.init.xavier_normal_(a.q_proj.weight, gain=1.0)
            for w in (a.v_proj.weight, a.out_proj.weight, layer.fc1.weight, layer.fc2.weight):
                nn.init.xavier_normal_(w, gain=beta)


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
        if self.config.relative_position_embedding:
            # Every layer's key names the same shared table; accept files that kept only layer 0's copy.
            keys = [
                f"encoder.layers.{i}.self_attn.relative_attention_bias.weight"
                for i in range(self.config.encoder_layers)
            ]
            if keys[0] in state and isinstance(state[keys[0]], torch.Tensor):
                for k in keys[1:]:
                    if k not in state:
                        state[k] = state[keys[0]]
                    elif isinstance(state[k], torch.Tensor) and not torch.equal(state[k], state[keys[0]]):
                        raise CheckpointError(
                            f"BEATs checkpoint {path}: {k} differs from layer 0's copy, but the "
                            f"relative position table is shared by all layers"
                        )
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

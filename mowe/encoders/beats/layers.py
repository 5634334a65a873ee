"""BEATs backbone layers: conv positional embedding, gated relative-position self-attention, post-LN
encoder."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mowe.encoders.beats.config import BEATsConfig

if TYPE_CHECKING:
    from mowe.encoders.beats.model import BEATsEncoder


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

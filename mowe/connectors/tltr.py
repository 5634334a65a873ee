"""LTU-AS's time-and-layer-wise transformer (TLTR) connector (arXiv 2309.14405 sec. 3; TLTR from Whisper-AT,
arXiv 2307.03183 sec. 3).

Shape legend: ``b`` batch, ``l`` encoder layers, ``t`` frames, ``p`` frames per pooled step, ``n`` pooled
steps (= audio tokens), ``m`` valid steps across the batch, ``d`` feature width, ``h`` TLTR width.

LTU-AS feeds the LLM with *every* Whisper layer, not only the last: different layers carry different
information (the last ones are tuned for speech content, the middle ones keep more of the general sound
events). TLTR mean-pools each layer 20x in time (50 Hz -> 2.5 Hz, 25 tokens per 10 s), runs one
transformer block over time within each layer, one over the layers at each time step, averages over
layers, and LayerNorm + Linear projects to the LLM width.

Differences from the reference code, on purpose:

* The reference pads every clip to 10 s and attends over the padding; here the pooled steps beyond a
  clip are masked out of the time attention and dropped from the layer attention, so a clip's tokens do
  not depend on what it is batched with. A partial last pool window is averaged over its valid frames.
* ``hidden_dim`` adds Whisper-AT's optional bottleneck (``tl_down_tr`` mode: LayerNorm + Linear down to
  a low width before the transformers); LTU-AS itself runs TLTR at the full Whisper width (the default).
"""

from __future__ import annotations

import torch
from einops import rearrange, reduce, repeat
from torch import nn

from mowe.connectors.base import ConnectorOutput, check_features
from mowe.errors import MoWEInputError
from mowe.tensors import lengths_to_mask

__all__ = ["TLTRConnector"]


class _PreNormBlock(nn.Module):
    """Whisper-style residual block (pre-norm attention + 4x GELU MLP), the block Whisper-AT's TLTR uses."""

    def __init__(self, *, dim: int, num_heads: int, dropout: float, key_bias: bool = True) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        if not key_bias:
            # Whisper-style attention (the official TLTR) has no key bias: hold that slice of the packed q/k/v
            # bias at zero, its gradient too. (A key bias shifts every score of a query equally, so the
            # softmax ignores it anyway; zeroing it keeps the weights a faithful copy of the official ones.)
            with torch.no_grad():
                self.attn.in_proj_bias[dim : 2 * dim].zero_()
            keep = torch.ones(3 * dim)
            keep[dim : 2 * dim] = 0
            self.attn.in_proj_bias.register_hook(lambda g: g * keep.to(g))
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(batch, seq, dim)``; ``pad`` ``(batch, seq)`` bool, True on keys to ignore."""
        y = self.attn_norm(x)
        x = x + self.dropout(self.attn(y, y, y, key_padding_mask=pad, need_weights=False)[0])
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


class TLTRConnector(nn.Module):
    """Time-and-layer-wise transformer over all encoder layers (LTU-AS / Whisper-AT) to LLM tokens.

    ``(b, l, t, in_dim) -> mean-pool time by time_pool -> [LayerNorm + Linear to hidden_dim] ->
    block over time per layer -> block over layers per step -> mean over layers -> LayerNorm +
    Linear(out_dim)``. A clip of ``len`` frames gives ``ceil(len / time_pool)`` tokens.

    Args:
        in_dim: width ``d`` of every layer's hidden states (Whisper-large: 1280).
        out_dim: LLM embedding width.
        num_layers_in: layers ``l`` expected in the input (Whisper-large: 33 hidden states including the
            embedding output; LTU-AS used the 32 block outputs). A mismatch is an error, since TLTR's
            layer attention has no notion of which layer is which beyond its position.
        hidden_dim: TLTR width ``h``; None (LTU-AS) keeps ``in_dim`` with no projection; otherwise a
            LayerNorm + Linear bottleneck to ``hidden_dim`` (Whisper-AT's ``tl_down_tr_512`` uses 512).
        time_pool: frames averaged into one step (LTU-AS: 20, 50 Hz -> 2.5 Hz).
        time_heads: heads of the attention over time (TLTR: 1).
        layer_heads: heads of the attention over layers (TLTR: 8).
        dropout: dropout in both blocks (TLTR: none).
        key_bias: a bias on the attention key projections (False: the official LTU-AS TLTR, Whisper-style).

    Example:
        >>> tltr = TLTRConnector(in_dim=384, out_dim=4096, num_layers_in=5)
        >>> out = tltr(torch.randn(2, 5, 1500, 384), torch.tensor([1500, 230]))
        >>> out.embeds.shape, out.lengths.tolist()
        (torch.Size([2, 75, 4096]), [75, 12])
    """

    needs_all_layers = True

    def __init__(
        self,
        *,
        in_dim: int,
        out_dim: int,
        num_layers_in: int,
        hidden_dim: int | None = None,
        time_pool: int = 20,
        time_heads: int = 1,
        layer_heads: int = 8,
        dropout: float = 0.0,
        key_bias: bool = True,
    ) -> None:
        super().__init__()
        hidden = in_dim if hidden_dim is None else hidden_dim
        for name, value in [
            ("in_dim", in_dim), ("out_dim", out_dim), ("num_layers_in", num_layers_in),
            ("hidden_dim", hidden),
            ("time_pool", time_pool), ("time_heads", time_heads), ("layer_heads", layer_heads),
        ]:  # fmt: skip
            if not isinstance(value, int) or value < 1:
                raise MoWEInputError(f"{name} must be a positive int, got {value!r}")
        for name, heads in [("time_heads", time_heads), ("layer_heads", layer_heads)]:
            if hidden % heads:
                raise MoWEInputError(f"TLTR width {hidden} must be divisible by {name} ({heads})")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.num_layers_in = num_layers_in
        self.time_pool = time_pool

        self.down = (
            nn.Identity()
            if hidden == in_dim
            else nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden))
        )
        self.time_block = _PreNormBlock(dim=hidden, num_heads=time_heads, dropout=dropout, key_bias=key_bias)
        self.layer_block = _PreNormBlock(
            dim=hidden, num_heads=layer_heads, dropout=dropout, key_bias=key_bias
        )
        # LTU-AS's audio projection: LayerNorm without affine parameters, then Linear to the LLM width.
        self.out_norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.proj = nn.Linear(hidden, out_dim)

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Audio tokens per clip for ``lengths`` frames: ``ceil(lengths / time_pool)``."""
        lengths = torch.as_tensor(lengths).long()
        return torch.div(lengths.clamp(min=0) + self.time_pool - 1, self.time_pool, rounding_mode="floor")

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ConnectorOutput:
        """Turn every layer's hidden states into LLM tokens, one per ``time_pool`` frames.

        Args:
            features: ``(b, l, t, in_dim)`` hidden states of all ``num_layers_in`` layers; frames at or beyond
                ``lengths[i]`` are ignored.
            lengths: ``(b,)`` valid frames per clip, in ``[1, t]``.

        Returns:
            :class:`ConnectorOutput` with ``embeds`` ``(b, n, out_dim)`` (zeros on padding tokens), ``n``
            the most tokens of any clip, and ``lengths`` ``(b,)`` = :meth:`out_lengths`.

        Raises:
            MoWEInputError: ``features`` or ``lengths`` malformed, or the wrong number of layers (names
            which).
        """
        lengths = check_features(
            features, lengths, in_dim=self.in_dim, num_layers=self.num_layers_in, who="TLTRConnector"
        )
        b, num_layers = features.shape[:2]
        n_steps = self.out_lengths(lengths)  # (b,)
        n_max = int(n_steps.max())  # one host sync; trims batch padding beyond the longest clip
        span = n_max * self.time_pool

        # Sec. 3 (LTU-AS): mean-pool 20x in time; a partial last window averages its valid frames only.
        x = features[:, :, :span]
        if x.shape[2] < span:
            x = nn.functional.pad(x, (0, 0, 0, span - x.shape[2]))
        frame_valid = lengths_to_mask(lengths, span)  # (b, t)
        # where(), not a product: padding frames may hold NaN/Inf, and 0 * NaN = NaN.
        x = torch.where(frame_valid[:, None, :, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
        sums = reduce(x, "b l (n p) d -> b l n d", "sum", p=self.time_pool)
        counts = reduce(frame_valid.to(x.dtype), "b (n p) -> b n", "sum", p=self.time_pool).clamp(min=1)
        x = self.down(sums / rearrange(counts, "b n -> b 1 n 1"))

        # TLTR time transformer: attend over the pooled steps of each layer separately.
        step_valid = torch.arange(n_max, device=lengths.device)[None, :] < n_steps[:, None]  # (b, n)
        x = self.time_block(
            rearrange(x, "b l n d -> (b l) n d"), pad=repeat(~step_valid, "b n -> (b l) n", l=num_layers)
        )
        # TLTR layer transformer: attend over the layers at each step; steps beyond a clip are dropped.
        x = rearrange(x, "(b l) n d -> b n l d", b=b)[step_valid]  # (m, l, h)
        x = reduce(self.layer_block(x), "m l h -> m h", "mean")
        tokens = self.proj(self.out_norm(x))  # (m, out_dim)

        embeds = tokens.new_zeros(b, n_max, self.out_dim)
        embeds[step_valid] = tokens  # valid steps are a prefix per clip: padding tokens stay zero
        return ConnectorOutput(embeds=embeds, lengths=n_steps)

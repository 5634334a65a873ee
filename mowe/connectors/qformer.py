"""SALMONN's window-level Q-Former connector (arXiv 2310.13289, sec. 3.1).

Shape legend: ``b`` batch, ``t`` frames, ``w`` frames per window, ``n`` windows, ``q`` queries per window,
``m`` windows kept across the batch, ``d`` feature width, ``h`` Q-Former width.

SALMONN concatenates Whisper and BEATs frames (50 Hz), cuts time into windows of 17 frames (~0.33 s),
and runs a small BLIP-2 style Q-Former on every window independently: a fixed number of learned queries
cross-attend to that window's frames, and each query becomes one LLM token after a Linear projection.
The number of audio tokens thus grows with the clip length instead of being fixed.

Two ways to cut windows (``partial_window``):

* ``"drop"`` (SALMONN's own): windows slide over all frames and a trailing partial window is dropped, as the
  reference's ``F.unfold(padding=0)`` does. With Whisper's full 30 s window (1500 frames, see
  ``WhisperEncoder(full_window=True)``) every clip gives 88 windows, the last 4 frames unseen.
* ``"keep"`` (mowe's default): windows are cut per clip from ``lengths``; the last partial window is kept with
  its missing frames masked out of cross-attention, and a window holding only padding is dropped, so every
  valid frame reaches the LLM and a clip's tokens do not depend on its batch.

Input normalisation: one LayerNorm over the whole concatenation (mowe's default), or one per stream
(``stream_dims``, SALMONN's ``ln_speech`` / ``ln_audio``, :class:`~mowe.connectors.norm.PerStreamNorm`).
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import nn

from mowe.connectors.base import ConnectorOutput, check_features
from mowe.connectors.norm import PerStreamNorm
from mowe.errors import MoWEInputError
from mowe.tensors import lengths_to_mask

__all__ = ["WindowQFormerConnector", "window_count"]

# BERT (and so the BLIP-2 Q-Former SALMONN starts from) uses eps=1e-12 and N(0, 0.02) initialisation.
_BERT_LN_EPS = 1e-12
_BERT_INIT_STD = 0.02


def window_count(lengths: torch.Tensor, *, window: int, stride: int, partial: str = "keep") -> torch.Tensor:
    """Number of windows cut from clips of ``lengths`` frames.

    ``partial="drop"``: only whole windows, ``n = (len - window) // stride + 1`` (0 when ``len < window``),
    as ``F.unfold`` without padding. ``partial="keep"`` (below) also keeps a trailing partial window.

    Windows start at frames ``0, stride, 2*stride, ...`` and span ``window`` frames. They slide until one
    reaches the end of the clip (like a ceil-mode pooling window); the last one may hold fewer than
    ``window`` valid frames and is masked, never dropped. With ``overlap = max(window - stride, 0)``::

        n = ceil(max(len - overlap, 1) / stride)        (0 for len <= 0)

    * ``window == stride`` (SALMONN): ``n = ceil(len / stride)``.
    * ``window > stride`` (overlap): ``n = 1 + ceil(max(len - window, 0) / stride)``; a window whose
      valid frames all lie in the previous window is not emitted.
    * ``window < stride`` (gaps): ``n = ceil(len / stride)``, every window that starts inside the clip;
      frames in the gaps are never seen.

    Args:
        lengths: ``(b,)`` integer frame counts.
        window: frames per window.
        stride: frames between window starts.
        partial: ``"keep"`` or ``"drop"`` a trailing partial window.

    Returns:
        ``(b,)`` int64 window counts.
    """
    lengths = torch.as_tensor(lengths).long()
    if partial == "drop":
        return torch.div(lengths - window, stride, rounding_mode="floor").add(1).clamp(min=0)
    overlap = max(window - stride, 0)
    n = torch.div((lengths - overlap).clamp(min=1) + stride - 1, stride, rounding_mode="floor")
    return torch.where(lengths > 0, n, torch.zeros_like(n))


class _QFormerLayer(nn.Module):
    """One BERT-style Q-Former layer: self-attention over the queries, cross-attention to the frames, FFN.

    Post-norm (``x = LN(x + sublayer(x))``) as in BERT / BLIP-2, with cross-attention in every layer
    (SALMONN builds its Q-Former with ``cross_attention_freq=1``). Keys and values of the
    cross-attention are projected from the frame width ``kv_dim`` straight to ``dim``, as BERT does
    with ``encoder_width``.
    """

    def __init__(self, *, dim: int, kv_dim: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.self_norm = nn.LayerNorm(dim, eps=_BERT_LN_EPS)
        self.cross_attn = nn.MultiheadAttention(
            dim, num_heads, dropout=dropout, batch_first=True, kdim=kv_dim, vdim=kv_dim
        )
        self.cross_norm = nn.LayerNorm(dim, eps=_BERT_LN_EPS)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.ffn_norm = nn.LayerNorm(dim, eps=_BERT_LN_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries: torch.Tensor, frames: torch.Tensor, frame_pad: torch.Tensor) -> torch.Tensor:
        """Update the queries of every window.

        Args:
            queries: ``(m, q, h)``.
            frames: ``(m, w, d)`` the window's frames.
            frame_pad: ``(m, w)`` bool, True on frames to ignore (beyond the clip).

        Returns:
            ``(m, q, h)``.
        """
        x = queries
        x = self.self_norm(x + self.dropout(self.self_attn(x, x, x, need_weights=False)[0]))
        attended = self.cross_attn(x, frames, frames, key_padding_mask=frame_pad, need_weights=False)[0]
        x = self.cross_norm(x + self.dropout(attended))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


class WindowQFormerConnector(nn.Module):
    """Window-level Q-Former (SALMONN, arXiv 2310.13289 sec. 3.1) from frames to LLM tokens.

    ``features -> LayerNorm(s) -> windows of `window` frames every `stride` frames -> per window,
    `num_queries` learned queries through a `num_layers` Q-Former cross-attending to the window ->
    Linear(hidden_dim, out_dim)``. Every window is processed independently (windows are folded into
    the batch), so a clip gives ``window_count(len) * num_queries`` tokens (see :func:`window_count`;
    ``ceil(len / 17)`` for SALMONN's defaults).

    Args:
        in_dim: width ``d`` of the input frames (SALMONN: Whisper 1280 + BEATs 768 = 2048).
        out_dim: LLM embedding width.
        hidden_dim: Q-Former width ``h`` (BERT-base: 768).
        num_layers: Q-Former layers (SALMONN: 2).
        num_heads: attention heads; must divide ``hidden_dim``.
        num_queries: learned queries per window ``q`` (SALMONN: 1).
        window: frames per window (SALMONN: 17, ~0.33 s at 50 Hz).
        stride: frames between window starts (SALMONN: 17, no overlap).
        ffn_dim: Q-Former FFN width; None means ``4 * hidden_dim``.
        dropout: dropout in the Q-Former (BERT: 0.1).
        stream_dims: widths of the concatenated streams (SALMONN: ``(1280, 768)``) to normalise each stream
            with its own LayerNorm; None: one LayerNorm over all ``in_dim`` features.
        partial_window: ``"keep"`` (mowe) or ``"drop"`` (SALMONN) a trailing partial window; see the module
            docstring.

    Example:
        >>> qf = WindowQFormerConnector(in_dim=2048, out_dim=4096)
        >>> out = qf(torch.randn(2, 100, 2048), torch.tensor([100, 40]))
        >>> out.embeds.shape, out.lengths.tolist()
        (torch.Size([2, 6, 4096]), [6, 3])
    """

    needs_all_layers = False

    def __init__(
        self,
        *,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 768,
        num_layers: int = 2,
        num_heads: int = 12,
        num_queries: int = 1,
        window: int = 17,
        stride: int = 17,
        ffn_dim: int | None = None,
        dropout: float = 0.1,
        stream_dims: tuple[int, ...] | None = None,
        partial_window: str = "keep",
    ) -> None:
        super().__init__()
        for name, value in [
            ("in_dim", in_dim), ("out_dim", out_dim), ("hidden_dim", hidden_dim), ("num_layers", num_layers),
            ("num_heads", num_heads), ("num_queries", num_queries), ("window", window), ("stride", stride),
        ]:  # fmt: skip
            if not isinstance(value, int) or value < 1:
                raise MoWEInputError(f"{name} must be a positive int, got {value!r}")
        if hidden_dim % num_heads:
            raise MoWEInputError(f"hidden_dim ({hidden_dim}) must be divisible by num_heads ({num_heads})")
        if partial_window not in ("keep", "drop"):
            raise MoWEInputError(f"partial_window must be 'keep' or 'drop', got {partial_window!r}")
        if stream_dims is not None and sum(stream_dims) != in_dim:
            raise MoWEInputError(f"stream_dims {tuple(stream_dims)} must add up to in_dim {in_dim}")
        self.partial_window = partial_window
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.num_queries = num_queries
        self.window = window
        self.stride = stride

        # SALMONN normalises each encoder's features (``ln_speech``, ``ln_audio``) before the Q-Former.
        self.input_norm = nn.LayerNorm(in_dim) if stream_dims is None else PerStreamNorm(stream_dims)
        self.queries = nn.Parameter(torch.randn(num_queries, hidden_dim) * _BERT_INIT_STD)
        # BLIP-2's BertEmbeddings applies LayerNorm + dropout to the query embeddings.
        self.query_norm = nn.LayerNorm(hidden_dim, eps=_BERT_LN_EPS)
        self.query_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            _QFormerLayer(
                dim=hidden_dim,
                kv_dim=in_dim,
                num_heads=num_heads,
                ffn_dim=ffn_dim or 4 * hidden_dim,
                dropout=dropout,
            )
            for _ in range(num_layers)
        )
        # ``speech_llama_proj`` in SALMONN.
        self.proj = nn.Linear(hidden_dim, out_dim)

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Audio tokens per clip for ``lengths`` frames: ``window_count(lengths) * num_queries``."""
        return self._windows(lengths) * self.num_queries

    def _windows(self, lengths: torch.Tensor) -> torch.Tensor:
        return window_count(lengths, window=self.window, stride=self.stride, partial=self.partial_window)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ConnectorOutput:
        """Turn frames into LLM tokens, one group of ``num_queries`` tokens per window.

        Args:
            features: ``(b, t, in_dim)`` frames; frames at or beyond ``lengths[i]`` are ignored.
            lengths: ``(b,)`` valid frames per clip, in ``[1, t]``.

        Returns:
            :class:`ConnectorOutput` with ``embeds`` ``(b, n * q, out_dim)`` (zeros on padding tokens),
            ``n`` the most windows of any clip, and ``lengths`` ``(b,)`` = :meth:`out_lengths`.

        Raises:
            MoWEInputError: ``features`` or ``lengths`` malformed (names which).
        """
        lengths = check_features(features, lengths, in_dim=self.in_dim, who="WindowQFormerConnector")
        n_windows = self._windows(lengths)  # (b,)
        n_max = int(n_windows.max())  # one host sync; trims batch padding beyond the longest clip
        if int(n_windows.min()) == 0:
            i = int((n_windows == 0).nonzero()[0])
            raise MoWEInputError(
                f"clip {i} has {int(lengths[i])} frames, fewer than one window ({self.window}); "
                f"partial_window='drop' gives it no audio token"
            )
        span = (n_max - 1) * self.stride + self.window  # frames covered by n_max windows

        x = self.input_norm(features[:, :span])
        # Zero padding frames so that NaN/Inf there cannot leak through 0-weight attention (0 * NaN = NaN).
        frame_valid = lengths_to_mask(lengths, x.shape[1])
        x = torch.where(frame_valid[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
        if x.shape[1] < span:  # the last window runs past the tensor: pad, the mask hides it
            x = nn.functional.pad(x, (0, 0, 0, span - x.shape[1]))
            frame_valid = lengths_to_mask(lengths, span)

        # Sec. 3.1: windows are independent, so fold them into the batch dimension.
        frames = rearrange(x.unfold(1, self.window, self.stride), "b n d w -> b n w d")
        frame_valid = frame_valid.unfold(1, self.window, self.stride)  # (b, n, w)
        keep = torch.arange(n_max, device=lengths.device)[None, :] < n_windows[:, None]  # (b, n)
        frames, frame_valid = frames[keep], frame_valid[keep]  # (m, w, d), (m, w): only windows that exist

        q = self.query_dropout(self.query_norm(repeat(self.queries, "q h -> m q h", m=frames.shape[0])))
        for layer in self.layers:
            q = layer(q, frames, ~frame_valid)
        tokens = self.proj(q)  # (m, q, out_dim)

        embeds = tokens.new_zeros(features.shape[0], n_max, self.num_queries, self.out_dim)
        embeds[keep] = tokens  # kept windows are a prefix per clip, so padding tokens stay zero at the end
        return ConnectorOutput(
            embeds=rearrange(embeds, "b n q d -> b (n q) d"), lengths=n_windows * self.num_queries
        )

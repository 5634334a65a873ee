"""Whisper over a fixed log-mel window, returning the raw output of every block (LTU-AS's features).

Shape legend: ``b`` batch, ``s`` samples, ``m`` mel bins, ``f`` mel frames, ``t`` encoder frames (50 Hz),
``d`` width, ``l`` blocks.

:class:`WindowedWhisperEncoder` computes what openai-whisper's own pipeline computes for a clip cut to a
window (LTU-AS, arXiv 2309.14405, sec. 3, feeds its TLTR with these features from Whisper-large; read from the
official pipeline, YuanGongND/ltu and its Whisper fork). They differ from
:class:`mowe.encoders.WhisperEncoder`'s:

* the log-mel is computed over the *whole* clip (STFT reflect-padded at the clip's own ends, Whisper's
  ``max - 8`` floor taken over every frame of the clip), and only then cut to 10 s (1000 mel frames) or, for a
  shorter clip, padded to 10 s with zeros in the normalised log-mel domain (not with silent audio);
* the encoder runs on those 1000 frames with no attention mask (500 output frames for every clip), adding the
  first 500 rows of the positional table *as stored in the checkpoint* (fp16 in openai's ``.pt`` files);
* the features are the raw outputs of the 32 blocks: not the embedding output, not the final LayerNorm.

Every clip is computed on its own (nothing crosses the batch), so a batch gives each clip's lone result.

:func:`mowe.encoders.whisper_formats.load_openai_whisper` reads openai-whisper ``.pt`` files (what LTU-AS
used: ``large-v1.pt``) into a transformers ``WhisperForConditionalGeneration``; its decoder fills LTU-AS's
transcript (see :mod:`mowe.ltu_as.transcribe`).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFWhisperEncoder

from mowe.encoders.base import SAMPLE_RATE, EncoderOutput, check_waveforms, set_trainable
from mowe.encoders.whisper import HOP, N_FFT, WHISPER_PRESETS, LogMelFrontend, load_hf_whisper_encoder
from mowe.errors import MoWEInputError
from mowe.tensors import lengths_to_mask

__all__ = ["DEFAULT_WINDOW_SECONDS", "WindowedWhisperEncoder", "clip_log_mel"]

DEFAULT_WINDOW_SECONDS = 10  # LTU-AS's window: 1000 mel frames -> 500 encoder frames -> 25 audio tokens
_EDGE = N_FFT // 2  # torch.stft(center=True) reflect-pads each side by this many samples


def clip_log_mel(
    waveforms: torch.Tensor,
    lengths: torch.Tensor,
    *,
    filters: torch.Tensor,
    window: torch.Tensor,
    num_frames: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """openai-whisper's ``log_mel_spectrogram`` of each clip alone, then ``pad_or_trim`` to ``num_frames``.

    Args:
        waveforms: ``(b, s)`` 16 kHz clips, right-padded (padding is never read).
        lengths: ``(b,)`` valid samples per clip, each > ``N_FFT // 2`` (reflect padding needs it).
        filters: ``(m, N_FFT // 2 + 1)`` mel filterbank; window: ``(N_FFT,)`` Hann window.
        num_frames: frames to return (LTU-AS features: 1000; Whisper transcription: 3000).

    Returns:
        ``(mel (b, m, num_frames), frames (b,))``: the normalised log-mel, zero beyond each clip's own frames
        (``frames = lengths // HOP``, openai drops the STFT's last frame), and those frame counts.
    """
    b, s = waveforms.shape
    n_clip = torch.div(lengths, HOP, rounding_mode="floor")  # (b,)
    width = int(lengths.max()) + 2 * _EDGE
    # Reflect-pad every clip at its own ends, as torch.stft(center=True) does for a lone clip.
    j = torch.arange(width, device=waveforms.device)[None, :] - _EDGE  # (1, w) source index before reflection
    last = (lengths - 1)[:, None]
    src = torch.where(j < 0, -j, torch.where(j > last, 2 * last - j, j)).clamp(0, s - 1)
    padded = torch.gather(waveforms.float(), 1, src)
    padded = padded * lengths_to_mask(lengths + 2 * _EDGE, width).to(padded.dtype)
    spec = torch.stft(padded, N_FFT, HOP, window=window, center=False, return_complex=True)  # (b, k, f_all)
    power = spec.abs() ** 2
    log_spec = torch.clamp(filters @ power, min=1e-10).log10()  # (b, m, f_all)
    f_all = log_spec.shape[-1]
    valid = lengths_to_mask(n_clip, f_all)[:, None, :]
    # Whisper's dynamic range floor over the whole clip, before any trimming (a clip over 10 s included).
    peak = log_spec.masked_fill(~valid, float("-inf")).amax(dim=(1, 2), keepdim=True)
    log_spec = (torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0
    log_spec = log_spec.masked_fill(~valid, 0.0)  # pad_or_trim pads the normalised log-mel with zeros
    if f_all >= num_frames:
        return log_spec[..., :num_frames], n_clip
    return nn.functional.pad(log_spec, (0, num_frames - f_all)), n_clip


class WindowedWhisperEncoder(nn.Module):
    """Whisper encoder over a fixed window, all blocks' raw outputs (see the module docstring); mowe's encoder
    protocol.

    The family ``"whisper_window"`` in configs (LTU-AS's ``faithful=True`` strong encoder).

    Args:
        encoder: a transformers ``WhisperEncoder`` (its modules and its stored positional table are used as
        is).
        clip_seconds: the window every clip is padded or cut to (LTU-AS: 10).
        freeze: freeze all parameters (LTU-AS keeps Whisper frozen).
        source: where the weights came from (hub id, folder or ``.pt`` file); None for random weights.

    Returns from ``forward``: :class:`EncoderOutput` with ``features`` ``(b, t, d)`` (the last block's raw
    output), ``lengths`` ``t`` for every clip (the whole window is attended, as in LTU-AS) and
    ``hidden_states`` ``(b, l, t, d)``, the raw outputs of all ``l`` blocks.

    Example:
        >>> sizes = dict(d_model=64, encoder_layers=2, encoder_attention_heads=2)
        >>> enc = WindowedWhisperEncoder.from_preset("tiny", **sizes)
        >>> out = enc(torch.zeros(2, 16000), torch.tensor([16000, 8000]))
        >>> out.hidden_states.shape, out.lengths.tolist()
        (torch.Size([2, 2, 500, 64]), [500, 500])
    """

    frame_rate: float = SAMPLE_RATE / (2 * HOP)
    min_samples: int = _EDGE + 1

    def __init__(
        self,
        encoder: HFWhisperEncoder,
        *,
        clip_seconds: int = DEFAULT_WINDOW_SECONDS,
        freeze: bool = True,
        source: str | None = None,
    ):
        super().__init__()
        self.encoder = encoder
        self.config: WhisperConfig = encoder.config
        self.frontend = LogMelFrontend(self.config.num_mel_bins)  # only its filterbank and window are used
        self.out_dim = self.config.d_model
        self.num_layers = self.config.encoder_layers
        self.mel_frames = int(clip_seconds * SAMPLE_RATE) // HOP
        if self.mel_frames > 2 * self.config.max_source_positions or self.mel_frames % 2:
            raise MoWEInputError(
                f"clip_seconds={clip_seconds} gives {self.mel_frames} mel frames; this Whisper takes "
                f"an even number up to {2 * self.config.max_source_positions}"
            )
        self.source = source
        set_trainable(self, not freeze)

    @classmethod
    def from_preset(cls, size: str = "tiny", *, freeze: bool = True, **overrides) -> WindowedWhisperEncoder:
        """Random weights at a published size; ``overrides`` change config fields."""
        if size not in WHISPER_PRESETS:
            raise MoWEInputError(f"unknown Whisper size {size!r}; choose one of {sorted(WHISPER_PRESETS)}")
        return cls(HFWhisperEncoder(WhisperConfig(**{**WHISPER_PRESETS[size], **overrides})), freeze=freeze)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str, *, freeze: bool = True, dtype: torch.dtype | None = None
    ) -> WindowedWhisperEncoder:
        """The encoder of an openai-whisper ``.pt`` file or a transformers checkpoint (hub id or folder).

        The positional table is the one the file stores (LTU-AS computed with it), never recomputed.
        """
        hf = load_hf_whisper_encoder(name_or_path, dtype=dtype, stored_positions=True)
        return cls(hf, freeze=freeze, source=str(name_or_path))

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Encoder frames per clip: always the whole window (500 for 10 s)."""
        return torch.full_like(torch.as_tensor(lengths), self.mel_frames // 2)

    def log_mel(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(b, s)`` clips -> ``(b, m, mel_frames)`` LTU-AS log-mel (see :func:`clip_log_mel`)."""
        return clip_log_mel(
            waveforms,
            lengths,
            filters=self.frontend.filters,
            window=self.frontend.window,
            num_frames=self.mel_frames,
        )[0]

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """Encode ``(b, s)`` 16 kHz clips (any length; beyond ``clip_seconds`` is dropped after the
        log-mel)."""
        lengths = check_waveforms(waveforms, lengths, min_samples=self.min_samples)
        enc = self.encoder
        dtype = enc.conv1.weight.dtype
        mel = self.log_mel(waveforms, lengths).to(dtype)
        x = nn.functional.gelu(enc.conv1(mel))
        x = nn.functional.gelu(enc.conv2(x)).transpose(1, 2)  # (b, t, d)
        x = x + enc.embed_positions.weight[: x.shape[1]].to(dtype)
        x = nn.functional.dropout(x, p=enc.dropout, training=self.training)
        states = []
        for layer in enc.layers:
            x = layer(x, None)
            x = x[0] if isinstance(x, tuple) else x
            states.append(x)  # raw block output: LTU-AS skips the embedding output and the final LayerNorm
        hidden = torch.stack(states, dim=1)  # (b, l, t, d)
        return EncoderOutput(
            features=x, lengths=self.out_lengths(lengths).to(lengths.device), hidden_states=hidden
        )

"""Whisper encoder with its own batched log-mel frontend.

Shape legend: ``b`` batch, ``s`` samples, ``m`` mel bins, ``f`` mel frames, ``t`` encoder frames (50 Hz),
``d`` width, ``l`` layers (+1 for the embedding output).

Two ways to run it:

* ``pad_to_30s=True`` (default, faithful): every clip is padded to 30 s, as Whisper was trained; outputs are
  then cut to each clip's real frames. Right for a *frozen pretrained* Whisper, whose attention has only ever
  seen 30 s windows.
* ``pad_to_30s=False`` (real length): position embeddings are sliced to the clip length and padded frames
  are masked out of attention, so a clip's features do not depend on its batch. Clips are encoded in groups
  of similar length (``bucket_padding``), each padded only to its own longest clip. 4-8x cheaper on short
  clips; right when the encoder is trained (or was trained this way) and for weak encoders whose features
  are re-learnt by the connector anyway.

Clips longer than 30 s are split into 30 s windows, encoded in one batch and the features concatenated. The
encoder declares that limit as ``max_input_seconds`` (:mod:`mowe.encoders.windows`), so the model and the weak
pool cut long clips into windows themselves (the routing windows, where routing is per window).

``full_window=True`` (with ``pad_to_30s``) returns every frame of the 30 s window (1500 frames, all counted
valid) instead of cutting each clip to its own frames: SALMONN's encoder output, which its window Q-Former
cuts
into 88 windows whatever the clip's length. Whisper's own decoder reads the whole window too: measured with
the real tiny.en (``benchmarks/whisper_real_weights.py``), cutting to the clip's frames costs it WER, which
``full_window`` gives back at the price of 1500 frames per 30 s window.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import WhisperConfig
from transformers.audio_utils import mel_filter_bank
from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFWhisperEncoder

from mowe.encoders.base import (
    SAMPLE_RATE,
    EncoderOutput,
    check_waveforms,
    encode_in_length_groups,
    set_trainable,
)
from mowe.encoders.whisper_formats import is_ctranslate2_dir, is_openai_whisper_file, load_whisper_checkpoint
from mowe.errors import CheckpointError, MoWEInputError
from mowe.hub import load_prefixed_state_dict
from mowe.tensors import check_bucket_padding, lengths_to_mask, resolve_bucket_padding

__all__ = ["WHISPER_PRESETS", "LogMelFrontend", "WhisperEncoder", "load_hf_whisper_encoder"]

N_FFT = 400
HOP = 160
CHUNK_SAMPLES = 30 * SAMPLE_RATE  # 480_000
CHUNK_FRAMES = CHUNK_SAMPLES // HOP  # 3000 mel frames -> 1500 encoder frames

# Published sizes (Radford et al. 2022, Table 1; large-v3 uses 128 mel bins).
WHISPER_PRESETS: dict[str, dict] = {
    "tiny": dict(
        d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536, num_mel_bins=80
    ),
    "base": dict(
        d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048, num_mel_bins=80
    ),
    "small": dict(
        d_model=768, encoder_layers=12, encoder_attention_heads=12, encoder_ffn_dim=3072, num_mel_bins=80
    ),
    "medium": dict(
        d_model=1024, encoder_layers=24, encoder_attention_heads=16, encoder_ffn_dim=4096, num_mel_bins=80
    ),
    "large-v2": dict(
        d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120, num_mel_bins=80
    ),
    "large-v3": dict(
        d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120, num_mel_bins=128
    ),
}


class LogMelFrontend(nn.Module):
    """Whisper's log-mel spectrogram, batched in torch (matches ``WhisperFeatureExtractor``).

    The mel filterbank and window are computed once and kept as non-persistent buffers.

    Args:
        n_mels: 80 (Whisper v1/v2 and smaller) or 128 (large-v3).
    """

    def __init__(self, n_mels: int = 80):
        super().__init__()
        self.n_mels = n_mels
        filters = mel_filter_bank(
            num_frequency_bins=N_FFT // 2 + 1,
            num_mel_filters=n_mels,
            min_frequency=0.0,
            max_frequency=8000.0,
            sampling_rate=SAMPLE_RATE,
            norm="slaney",
            mel_scale="slaney",
        )
        self.register_buffer(
            "filters", torch.from_numpy(np.ascontiguousarray(filters.T)).float(), persistent=False
        )
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    @staticmethod
    def num_frames(lengths: torch.Tensor) -> torch.Tensor:
        """Valid mel frames for clips of ``lengths`` samples: frames whose centre lies inside the clip."""
        return torch.div(lengths + HOP - 1, HOP, rounding_mode="floor")

    def forward(
        self, waveforms: torch.Tensor, lengths: torch.Tensor, *, num_frames: int, pad_with_silence: bool
    ) -> torch.Tensor:
        """Waveforms ``(b, s)`` -> log-mel ``(b, m, num_frames)`` in float32.

        Args:
            waveforms: right-zero-padded batch; samples at or beyond ``lengths`` must be zero.
            lengths: ``(b,)`` valid samples.
            num_frames: frames to return (3000 for the 30 s path).
            pad_with_silence: True keeps Whisper's log-mel of silence in padded frames (the 30 s path);
                False zeroes them, so a clip's features do not depend on what it was batched with.
        """
        wav = waveforms.float()
        # Pad far enough that every frame's window (and the reflect padding at the right edge) sees only
        # zeros beyond the batch: a clip's frames are then the same whatever it was batched with.
        need = num_frames * HOP + N_FFT // 2 + 1
        if wav.shape[1] < need:
            wav = F.pad(wav, (0, need - wav.shape[1]))
        spec = torch.stft(wav, N_FFT, HOP, window=self.window, return_complex=True)[..., :num_frames]
        power = spec.real.square() + spec.imag.square()
        log_spec = torch.clamp(self.filters @ power, min=1e-10).log10()  # (b, m, f)
        valid = lengths_to_mask(self.num_frames(lengths).clamp(max=num_frames), num_frames)  # (b, f)
        # Dynamic range clamp relative to each clip's loudest valid frame (Whisper: max - 8).
        peak = log_spec.masked_fill(~valid[:, None, :], -1e4).amax(dim=(1, 2), keepdim=True)
        if pad_with_silence:
            peak = torch.maximum(peak, log_spec.amax(dim=(1, 2), keepdim=True))
        log_spec = (torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0
        if not pad_with_silence:
            log_spec = log_spec * valid[:, None, :]
        return log_spec


def load_hf_whisper_encoder(
    name_or_path: str | os.PathLike, *, dtype: torch.dtype | None = None, stored_positions: bool = False
) -> HFWhisperEncoder:
    """transformers' Whisper encoder with the encoder weights of a checkpoint; the decoder's are never read.

    Args:
        name_or_path: a transformers hub id or folder, a CTranslate2 Whisper folder (``model.bin``) or an
            openai-whisper ``.pt`` file (``{"dims", "model_state_dict"}``).
        dtype: parameter dtype; float32 when None (a float16 checkpoint is upcast, exactly).
        stored_positions: the positional table must come from the file (LTU-AS computed with the stored
            table); otherwise a missing table keeps Whisper's sinusoid, which some exports leave out.

    Raises:
        CheckpointError: unreadable, truncated or incomplete weights, or weights that do not fit the config
            (names the file and the keys).
    """
    name_or_path = os.fspath(name_or_path)
    if is_ctranslate2_dir(name_or_path) or is_openai_whisper_file(name_or_path):
        ckpt = load_whisper_checkpoint(name_or_path, encoder_only=True)
        config = ckpt.config
        state = {
            k[len("model.encoder.") :]: v
            for k, v in ckpt.state_dict.items()
            if k.startswith("model.encoder.")
        }
    else:
        config = WhisperConfig.from_pretrained(name_or_path)
        state = load_prefixed_state_dict(name_or_path, ("model.encoder.", "encoder."))
    hf = HFWhisperEncoder(config)
    try:
        missing, unexpected = hf.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise CheckpointError(f"{name_or_path}: encoder weights do not fit its config ({e})") from e
    if not stored_positions:
        missing = [k for k in missing if not k.startswith("embed_positions")]
    if missing or unexpected:
        raise CheckpointError(
            f"{name_or_path}: encoder weights do not match its config "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return hf.to(dtype) if dtype is not None else hf


class WhisperEncoder(nn.Module):
    """The transformers Whisper encoder behind mowe's encoder protocol.

    Args:
        encoder: a ``transformers`` ``WhisperEncoder`` (its modules are used as they are).
        pad_to_30s: faithful 30 s path (True) or real-length path (False); see the module docstring.
        output_all_layers: also return every layer's hidden states ``(b, l+1, t, d)`` (LTU-AS's TLTR).
        freeze: freeze all parameters (the default: SALMONN, LTU-AS and MoWE keep Whisper frozen).
        bucket_padding: real-length path only: encode the batch in groups of similar length, each group
            wasting at most this fraction of its real frames on padding (see
            :func:`mowe.encoders.base.length_groups`). None pads the whole batch to its longest clip;
            ``"auto"`` (default): 0.05 on CPU, 0.25 on accelerators (``AUTO_BUCKET_PADDING``).
            The features are the same either way (up to float rounding); only the cost changes.
        source: hub id or folder the weights came from (None for random weights); checkpoints reference
            a frozen encoder by it instead of copying its weights.
        full_window: with ``pad_to_30s``, return all ``max_source_positions`` frames of each 30 s window (the
            padding's frames included, counted valid) rather than the clip's own frames (SALMONN).

    Raises:
        MoWEInputError: ``full_window=True`` with ``pad_to_30s=False``.

    Example:
        >>> enc = WhisperEncoder.from_preset("tiny", d_model=64, encoder_layers=2, encoder_attention_heads=2)
        >>> out = enc(torch.zeros(2, 16000), torch.tensor([16000, 8000]))
        >>> out.features.shape, out.lengths.tolist()
        (torch.Size([2, 50, 64]), [50, 25])
    """

    frame_rate: float = SAMPLE_RATE / (2 * HOP)  # 50 Hz: conv2 has stride 2 over 100 Hz mel frames
    min_samples: int = 1

    def __init__(
        self,
        encoder: HFWhisperEncoder,
        *,
        pad_to_30s: bool = True,
        output_all_layers: bool = False,
        freeze: bool = True,
        bucket_padding: float | str | None = "auto",
        source: str | None = None,
        full_window: bool = False,
    ):
        super().__init__()
        if full_window and not pad_to_30s:
            raise MoWEInputError(
                "full_window=True needs pad_to_30s=True: the full window is the padded 30 s input"
            )
        self.full_window = full_window
        self.bucket_padding = check_bucket_padding(bucket_padding)
        self.encoder = encoder
        self.config: WhisperConfig = encoder.config
        self.frontend = LogMelFrontend(self.config.num_mel_bins)
        self.out_dim = self.config.d_model
        self.pad_to_30s = pad_to_30s
        self.output_all_layers = output_all_layers
        self.source = source
        self.max_frames = self.config.max_source_positions  # 1500 for real checkpoints
        self.window_samples = self.max_frames * 2 * HOP
        # The longest input one call takes (mowe.encoders.windows): mowe cuts longer clips into windows of it.
        self.max_input_seconds = self.window_samples / SAMPLE_RATE
        set_trainable(self, not freeze)

    # ----------------------------------------------------------------------------------------- building
    @classmethod
    def from_config(cls, config: WhisperConfig, **kwargs) -> WhisperEncoder:
        return cls(HFWhisperEncoder(config), **kwargs)

    @classmethod
    def from_preset(
        cls,
        size: str = "tiny",
        *,
        pad_to_30s: bool = True,
        output_all_layers: bool = False,
        freeze: bool = True,
        bucket_padding: float | str | None = "auto",
        full_window: bool = False,
        **overrides,
    ) -> WhisperEncoder:
        """Random weights at a published size (``tiny`` ... ``large-v3``); ``overrides`` change config
        fields."""
        if size not in WHISPER_PRESETS:
            raise MoWEInputError(f"unknown Whisper size {size!r}; choose one of {sorted(WHISPER_PRESETS)}")
        cfg = WhisperConfig(**{**WHISPER_PRESETS[size], **overrides})
        return cls.from_config(
            cfg,
            pad_to_30s=pad_to_30s,
            output_all_layers=output_all_layers,
            freeze=freeze,
            bucket_padding=bucket_padding,
            full_window=full_window,
        )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        pad_to_30s: bool = True,
        output_all_layers: bool = False,
        freeze: bool = True,
        bucket_padding: float | str | None = "auto",
        dtype: torch.dtype | None = None,
        full_window: bool = False,
    ) -> WhisperEncoder:
        """Load the encoder half of a Whisper checkpoint; the decoder's weights are never read.

        Args:
            name_or_path: a transformers hub id or folder, a CTranslate2 Whisper folder (``model.bin``, the
                faster-whisper format; int8/int16 weights are dequantised) or an openai-whisper ``.pt`` file
                (``{"dims", "model_state_dict"}``). It becomes ``source``, so checkpoints reference it.
            dtype: parameter dtype; float32 when None (a float16 CTranslate2 model is upcast).
            pad_to_30s, output_all_layers, freeze, bucket_padding, full_window: as in the constructor.

        Raises:
            CheckpointError: unreadable, truncated or incomplete weights (names the file and variable).
        """
        name_or_path = os.fspath(name_or_path)
        hf = load_hf_whisper_encoder(name_or_path, dtype=dtype)
        return cls(
            hf,
            pad_to_30s=pad_to_30s,
            output_all_layers=output_all_layers,
            freeze=freeze,
            bucket_padding=bucket_padding,
            source=name_or_path,
            full_window=full_window,
        )

    # ----------------------------------------------------------------------------------------- running
    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Encoder frames per clip for ``lengths`` samples (conv2 halves the mel frame count, rounding up);
        with ``full_window``, the whole window's ``max_frames`` per 30 s window a clip spans."""
        if self.full_window:
            windows = torch.div(lengths + self.window_samples - 1, self.window_samples, rounding_mode="floor")
            return windows * self.max_frames
        mel = LogMelFrontend.num_frames(lengths)
        return torch.div(mel + 1, 2, rounding_mode="floor")

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """Encode ``(b, s)`` 16 kHz waveforms; returns features ``(b, t, d)`` at 50 Hz and frame lengths."""
        lengths = check_waveforms(waveforms, lengths, min_samples=self.min_samples)
        waveforms = waveforms * lengths_to_mask(lengths, waveforms.shape[1])  # padding must be silence
        if waveforms.shape[1] > self.window_samples:
            return self._forward_long(waveforms, lengths)
        return self._encode_grouped(waveforms, lengths)

    def _encode_grouped(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        """Windows of at most 30 s: real-length clips in length groups, else one padded batch."""
        if self.pad_to_30s or self.bucket_padding is None or waveforms.shape[0] == 1:
            return self._encode_window(waveforms, lengths)
        return encode_in_length_groups(
            self._encode_window,
            waveforms,
            lengths,
            max_padding=resolve_bucket_padding(self.bucket_padding, waveforms.device),
        )

    def _encode_window(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        out_len = self.out_lengths(lengths)
        if self.pad_to_30s:
            n_mel = self.max_frames * 2
        else:
            n_mel = int(LogMelFrontend.num_frames(lengths.max()))
        mel = self.frontend(waveforms, lengths, num_frames=n_mel, pad_with_silence=self.pad_to_30s)
        enc = self.encoder
        dtype = enc.conv1.weight.dtype
        x = F.gelu(enc.conv1(mel.to(dtype)))
        if not self.pad_to_30s:
            # conv2 looks one frame past a clip's end: that frame must be the zero padding a lone clip sees.
            x = x * lengths_to_mask(LogMelFrontend.num_frames(lengths), x.shape[-1])[:, None, :].to(dtype)
        x = F.gelu(enc.conv2(x)).transpose(1, 2)  # (b, t, d)
        t = x.shape[1]
        x = x + enc.embed_positions.weight[:t].to(dtype)
        x = F.dropout(x, p=enc.dropout, training=self.training)
        mask = None
        if not self.pad_to_30s:
            keep = lengths_to_mask(out_len, t)
            mask = torch.zeros(keep.shape, dtype=x.dtype, device=x.device).masked_fill(
                ~keep, torch.finfo(x.dtype).min
            )
            mask = mask[:, None, None, :]  # (b, 1, 1, t): additive, broadcast over heads and queries
        states = [x] if self.output_all_layers else None
        for layer in enc.layers:
            if self.training and enc.layerdrop > 0 and torch.rand(()) < enc.layerdrop:
                continue
            x = layer(x, mask)
            x = x[0] if isinstance(x, tuple) else x
            if states is not None:
                states.append(x)
        x = enc.layer_norm(x)
        t_out = int(out_len.max())
        hidden = None
        if states is not None:
            states[-1] = x  # the last entry is the normed output, as transformers reports it
            hidden = torch.stack([h[:, :t_out] for h in states], dim=1)
        return EncoderOutput(features=x[:, :t_out], lengths=out_len, hidden_states=hidden)

    def _forward_long(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        """Clips over 30 s: cut into 30 s windows, encode all windows in one batch, concatenate in time."""
        b, s = waveforms.shape
        w = self.window_samples
        n_win = math.ceil(s / w)
        wav = F.pad(waveforms, (0, n_win * w - s)).reshape(b * n_win, w)
        starts = torch.arange(n_win, device=lengths.device) * w
        win_len = (lengths[:, None] - starts[None, :]).clamp(min=0, max=w).reshape(-1)
        used = win_len > 0
        # Windows wholly past a clip's end are not encoded.
        out = self._encode_grouped(wav[used], win_len[used])
        t_win = self.max_frames
        feats = out.features.new_zeros(b * n_win, t_win, self.out_dim)
        feats[used, : out.features.shape[1]] = out.features
        feats = feats.reshape(b, n_win * t_win, self.out_dim)
        frame_len = torch.zeros(b * n_win, dtype=torch.long, device=lengths.device)
        frame_len[used] = out.lengths
        frame_len = frame_len.reshape(b, n_win)
        # Every window but a clip's last is full, so valid frames are contiguous after concatenation.
        total = frame_len.sum(1)
        hidden = None
        if out.hidden_states is not None:
            nl = out.hidden_states.shape[1]
            h = out.hidden_states.new_zeros(b * n_win, nl, t_win, self.out_dim)
            h[used, :, : out.hidden_states.shape[2]] = out.hidden_states
            hidden = (
                h.reshape(b, n_win, nl, t_win, self.out_dim)
                .permute(0, 2, 1, 3, 4)
                .reshape(b, nl, n_win * t_win, self.out_dim)[:, :, : int(total.max())]
            )
        keep = lengths_to_mask(total, int(total.max()))[..., None].to(feats.dtype)
        return EncoderOutput(
            features=feats[:, : int(total.max())] * keep, lengths=total, hidden_states=hidden
        )

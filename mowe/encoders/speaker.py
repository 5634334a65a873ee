"""A GE2E speaker encoder (Wan et al. 2018) with the pretrained weights that ship in ``resemblyzer``.

Shape legend: ``b`` batch, ``s`` samples, ``f`` mel frames (100 Hz), ``m`` mel bins (40), ``t`` output
frames, ``w`` partial windows, ``d`` width (256).

The network is resemblyzer's ``VoiceEncoder``: a 40-bin mel *power* spectrogram (25 ms Hann window, 10 ms
hop, Slaney mel scale, no log), a 3-layer LSTM of width 256 over a 1.6 s partial (160 mel frames), a Linear
256 -> 256 on the last layer's final state, ReLU and L2 normalisation: one d-vector per partial. The frontend
here is our own torch code; :func:`slaney_mel_filters` follows librosa's default filterbank.

What one output frame is: the d-vector of the 1.6 s partial *centred on that frame*, one frame every
``hop_ms`` (frame ``j`` is centred at ``(j + 0.5) * hop_ms``, the convention of
:func:`mowe.align.align_to_grid`). Partials are shifted to lie inside the clip (at its edges several frames
share one partial), and a clip shorter than 1.6 s is zero-padded to one partial, as resemblyzer pads its last
partial. A frame thus describes who is speaking around that time from 1.6 s of context, which is what GE2E was
trained to summarise; speaker changes show up with about 0.8 s of blur. Identical partials are run once.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mowe.encoders.base import SAMPLE_RATE, EncoderOutput, check_waveforms, set_trainable
from mowe.errors import CheckpointError, MoWEInputError
from mowe.hub import load_torch_file
from mowe.tensors import lengths_to_mask

__all__ = ["GE2EMelFrontend", "SpeakerEncoder", "slaney_mel_filters"]

N_FFT = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms
PARTIAL_FRAMES = 160  # 1.6 s partials (GE2E's training utterances were 140-180 frames)
TARGET_DBFS = -30.0  # resemblyzer raises quiet audio to this level before embedding


def slaney_mel_filters(
    *, n_mels: int, n_fft: int, sample_rate: int, fmin: float = 0.0, fmax: float | None = None
) -> torch.Tensor:
    """Triangular mel filters on the Slaney (Auditory Toolbox) scale with area normalisation.

    This is the filterbank librosa builds by default (``htk=False, norm="slaney"``): linear below 1 kHz,
    logarithmic above, each triangle scaled to unit area so wide high-frequency bands do not dominate.

    Returns:
        ``(m, n_fft // 2 + 1)`` float32 weights.
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0

    def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
        return torch.where(
            hz >= min_log_hz, min_log_mel + torch.log(hz.clamp(min=1e-10) / min_log_hz) / logstep, hz / f_sp
        )

    def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
        return torch.where(
            mel >= min_log_mel, min_log_hz * torch.exp(logstep * (mel - min_log_mel)), mel * f_sp
        )

    edges = torch.tensor([fmin, fmax], dtype=torch.float64)
    lo, hi = hz_to_mel(edges).tolist()
    hz = mel_to_hz(torch.linspace(lo, hi, n_mels + 2, dtype=torch.float64))  # band edges and centres
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    width = hz.diff()  # (m + 1,)
    dist = hz[:, None] - bins[None, :]  # (m + 2, n_fft // 2 + 1)
    rising = -dist[:-2] / width[:-1, None]
    falling = dist[2:] / width[1:, None]
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights = weights * (2.0 / (hz[2:] - hz[:-2]))[:, None]
    return weights.float()


class GE2EMelFrontend(nn.Module):
    """GE2E's input: a mel power spectrogram (no log), 25 ms Hann window, 10 ms hop, frames centred on
    multiples of 10 ms with zeros beyond the signal (librosa's ``melspectrogram`` defaults).

    Args:
        n_mels: mel bins (40 for the pretrained model).
    """

    def __init__(self, n_mels: int = 40):
        super().__init__()
        self.n_mels = n_mels
        self.register_buffer(
            "filters",
            slaney_mel_filters(n_mels=n_mels, n_fft=N_FFT, sample_rate=SAMPLE_RATE),
            persistent=False,
        )
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``(b, s)`` zero-padded waveforms -> ``(b, 1 + s // 160, m)`` mel power."""
        spec = torch.stft(
            waveforms.float(),
            N_FFT,
            HOP,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # (b, n_fft // 2 + 1, f)
        return torch.einsum("mk,bkf->bfm", self.filters, power)


def normalize_volume(
    waveforms: torch.Tensor, lengths: torch.Tensor, *, target_dbfs: float = TARGET_DBFS
) -> torch.Tensor:
    """Raise each clip whose RMS (over its valid samples) is below ``target_dbfs`` to that level; louder clips
    and silent ones are left as they are (resemblyzer's increase-only normalisation). ``(b, s)`` -> ``(b,
       s)``."""
    valid = lengths_to_mask(lengths, waveforms.shape[1])
    x = waveforms.float() * valid
    rms = (x.square().sum(1) / lengths.clamp(min=1)).sqrt()  # (b,)
    target = 10.0 ** (target_dbfs / 20.0)
    gain = torch.where(rms > 0, target / rms.clamp(min=1e-30), torch.ones_like(rms)).clamp(min=1.0)
    return x * gain[:, None]


class SpeakerEncoder(nn.Module):
    """GE2E speaker d-vectors as a frame-level weak encoder (see the module docstring for what a frame is).

    Args:
        lstm: the ``nn.LSTM`` over mel frames (``batch_first=True``; ``input_size`` is the mel bin count).
        linear: the projection of the last layer's final state to the embedding (``out_dim`` is its width).
        hop_ms: time between output frames, a multiple of 10 ms; ``frame_rate = 1000 / hop_ms``. The cost
            grows with the number of distinct partials, about ``duration / hop`` per clip.
        normalize_volume: raise clips quieter than -30 dBFS to -30 dBFS first, as resemblyzer's
            ``preprocess_wav`` does (its voice-activity trimming is not applied).
        freeze: freeze all parameters (default True).
        source: the weight file the parameters came from (None for random weights); a saved MoWE checkpoint
            refers to a frozen encoder by it instead of copying its weights.

    Example:
        >>> lstm = nn.LSTM(40, 32, 3, batch_first=True)
        >>> enc = SpeakerEncoder(lstm=lstm, linear=nn.Linear(32, 16), hop_ms=500)
        >>> out = enc(torch.randn(2, 32000) * 0.1, torch.tensor([32000, 8000]))
        >>> out.features.shape, out.lengths.tolist()
        (torch.Size([2, 4, 16]), [4, 1])
    """

    def __init__(
        self,
        *,
        lstm: nn.LSTM,
        linear: nn.Linear,
        hop_ms: int = 500,
        normalize_volume: bool = True,
        freeze: bool = True,
        source: str | None = None,
    ):
        super().__init__()
        if not lstm.batch_first or lstm.bidirectional:
            raise MoWEInputError("SpeakerEncoder needs a unidirectional nn.LSTM with batch_first=True")
        if linear.in_features != lstm.hidden_size:
            raise MoWEInputError(
                f"linear.in_features ({linear.in_features}) must equal lstm.hidden_size ({lstm.hidden_size})"
            )
        if isinstance(hop_ms, bool) or not isinstance(hop_ms, int) or hop_ms < 10 or hop_ms % 10:
            raise MoWEInputError(f"hop_ms must be a positive multiple of 10 (ms), got {hop_ms!r}")
        self.frontend = GE2EMelFrontend(n_mels=lstm.input_size)
        self.lstm = lstm
        self.linear = linear
        self.hop_ms = hop_ms
        self.normalize_volume = normalize_volume
        self.out_dim = linear.out_features
        self.frame_rate = 1000.0 / hop_ms
        self.min_samples = 0
        self.source = source
        set_trainable(self, not freeze)

    # ------------------------------------------------------------------------------------------ loading
    @staticmethod
    def default_weights() -> Path:
        """The ``pretrained.pt`` of an installed resemblyzer, found without importing it (its import pulls
        librosa and webrtcvad).

        Raises:
            CheckpointError: resemblyzer is not installed or its wheel lacks the file.
        """
        spec = importlib.util.find_spec("resemblyzer")
        if spec is None or not spec.submodule_search_locations:
            raise CheckpointError(
                "SpeakerEncoder.from_pretrained() without a path looks for resemblyzer's "
                "pretrained.pt, but resemblyzer is not installed: `pip install --no-deps "
                "resemblyzer`, or pass the path of a GE2E weight file"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
        if not path.is_file():
            raise CheckpointError(f"resemblyzer is installed but {path} is missing")
        return path

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike | None = None,
        *,
        hop_ms: int = 500,
        normalize_volume: bool = True,
        freeze: bool = True,
    ) -> SpeakerEncoder:
        """Load a GE2E checkpoint in resemblyzer's format (``{"model_state": {"lstm.*", "linear.*", ...}}``
        or the bare state dict); ``path=None`` takes the one shipped with an installed resemblyzer.

        Raises:
            CheckpointError: the file is missing, not a torch checkpoint, or lacks LSTM / Linear weights
                (the message names the file and the key).
        """
        path = cls.default_weights() if path is None else Path(path)
        ckpt = load_torch_file(path, what="GE2E weight")
        state = ckpt.get("model_state", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict):
            raise CheckpointError(f"{path} holds {type(ckpt).__name__}, not a state dict")
        for key in ("lstm.weight_ih_l0", "linear.weight"):
            if key not in state:
                raise CheckpointError(f"{path} lacks {key!r}: not a GE2E speaker encoder checkpoint")
        w_ih, lin = state["lstm.weight_ih_l0"], state["linear.weight"]
        hidden, n_mels = w_ih.shape[0] // 4, w_ih.shape[1]
        layers = sum(1 for k in state if k.startswith("lstm.weight_ih_l"))
        lstm = nn.LSTM(n_mels, hidden, layers, batch_first=True)
        linear = nn.Linear(lin.shape[1], lin.shape[0])
        try:
            lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
            linear.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("linear.")})
        except RuntimeError as e:
            raise CheckpointError(f"{path}: the LSTM / Linear weights do not fit a GE2E encoder: {e}") from e
        return cls(
            lstm=lstm,
            linear=linear,
            hop_ms=hop_ms,
            normalize_volume=normalize_volume,
            freeze=freeze,
            source=str(path),
        )

    # ------------------------------------------------------------------------------------------ encoding
    def embed_partials(self, mels: torch.Tensor) -> torch.Tensor:
        """``(w, 160, m)`` mel partials -> ``(w, d)`` L2-normalised d-vectors (ReLU, so entries are >= 0)."""
        _, (h, _) = self.lstm(mels)
        e = F.relu(self.linear(h[-1]))
        return e / e.norm(dim=-1, keepdim=True).clamp(min=1e-12)

    def _mels(self, waveforms: torch.Tensor, lengths: torch.Tensor, min_frames: int) -> torch.Tensor:
        """Mel frames of the zero-padded (and optionally volume-normalised) batch, at least ``min_frames``."""
        x = (
            normalize_volume(waveforms, lengths)
            if self.normalize_volume
            else waveforms.float() * lengths_to_mask(lengths, waveforms.shape[1])
        )
        need = (min_frames - 1) * HOP
        if x.shape[1] < need:
            x = F.pad(x, (0, need - x.shape[1]))
        return self.frontend(x)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """Waveforms ``(b, s)`` at 16 kHz -> one d-vector per ``hop_ms``: features ``(b, t, d)``.

        Clip ``i`` has ``ceil(lengths[i] / hop)`` frames (at least one); each is the d-vector of the 1.6 s
        partial centred on it, shifted inside the clip. The result for a clip does not depend on the batch.
        """
        lengths = check_waveforms(waveforms, lengths, min_samples=self.min_samples)
        hop = self.hop_ms * SAMPLE_RATE // 1000
        n_out = torch.div(lengths + hop - 1, hop, rounding_mode="floor")  # (b,)
        t = int(n_out.max())
        mel = self._mels(waveforms, lengths, PARTIAL_FRAMES)  # (b, f, m)
        n_mel = torch.div(lengths, HOP, rounding_mode="floor") + 1  # frames centred inside the clip
        step = self.hop_ms // 10  # output hop in mel frames
        centre = (torch.arange(t, device=mel.device) * step + step / 2)[None, :]  # (1, t) in mel frames
        last = (n_mel - PARTIAL_FRAMES).clamp(min=0)[:, None]  # (b, 1) latest start inside the clip
        start = torch.minimum((centre - PARTIAL_FRAMES / 2).round().clamp(min=0).long(), last)  # (b, t)
        valid = lengths_to_mask(n_out, t)
        # Run each distinct (clip, start) partial once: edge frames and short clips share partials.
        key = torch.arange(len(lengths), device=mel.device)[:, None] * mel.shape[1] + start  # (b, t)
        uniq, inverse = torch.unique(key[valid], return_inverse=True)
        clip, first = torch.div(uniq, mel.shape[1], rounding_mode="floor"), uniq % mel.shape[1]
        frames = first[:, None] + torch.arange(PARTIAL_FRAMES, device=mel.device)[None, :]  # (w, 160)
        vecs = self.embed_partials(mel[clip[:, None], frames])  # (w, d)
        feats = vecs.new_zeros(len(lengths), t, self.out_dim)
        feats[valid] = vecs[inverse]
        return EncoderOutput(features=feats, lengths=n_out)

    @torch.no_grad()
    def embed_utterance(
        self, waveform: torch.Tensor, *, rate: float = 1.3, min_coverage: float = 0.75
    ) -> torch.Tensor:
        """The 256-d utterance embedding as resemblyzer's ``embed_utterance`` computes it.

        Partials of 1.6 s start every ``round(16000 / rate / 160)`` mel frames (77 at the default 1.3 per
        second) until they cover the clip; the last is kept only if the clip fills ``min_coverage`` of it
        (always when it is the only one); the audio is zero-padded to the last partial. The partials'
        d-vectors are averaged and L2-normalised. With ``normalize_volume`` the clip is first raised to
        -30 dBFS as resemblyzer's ``preprocess_wav`` does; voice-activity trimming is not applied.

        Args:
            waveform: ``(s,)`` 16 kHz mono samples.

        Returns:
            ``(d,)`` float32, unit norm.
        """
        if not isinstance(waveform, torch.Tensor) or waveform.dim() != 1:
            raise MoWEInputError(
                "embed_utterance takes one clip as a 1-D tensor of samples, got "
                f"{getattr(waveform, 'shape', type(waveform).__name__)}"
            )
        if not 0 < min_coverage <= 1:
            raise MoWEInputError(f"min_coverage must be in (0, 1], got {min_coverage}")
        n = waveform.shape[0]
        frame_step = round(SAMPLE_RATE / rate / HOP)
        if not 0 < frame_step <= PARTIAL_FRAMES:
            raise MoWEInputError(
                f"rate {rate} gives partials every {frame_step} frames; it must lie in "
                f"[{SAMPLE_RATE / (HOP * PARTIAL_FRAMES)}, {SAMPLE_RATE / HOP}] per second"
            )
        lengths = check_waveforms(waveform[None], None)
        n_frames = math.ceil((n + 1) / HOP)
        starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + frame_step + 1), frame_step))
        coverage = (n - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
        if coverage < min_coverage and len(starts) > 1:
            starts.pop()
        mel = self._mels(waveform[None], lengths, starts[-1] + PARTIAL_FRAMES)[0]  # (f, m)
        parts = torch.stack([mel[s : s + PARTIAL_FRAMES] for s in starts])  # (w, 160, m)
        mean = self.embed_partials(parts).mean(0)
        return mean / mean.norm()

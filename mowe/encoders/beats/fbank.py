"""The Kaldi-compatible log-mel filterbank frontend of BEATs (128 bins, 25 ms / 10 ms, as the official
code)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mowe.constants import SAMPLE_RATE
from mowe.encoders.beats.config import FRAME_LENGTH, FRAME_SHIFT, LOW_FREQ, N_FFT, N_MELS, PREEMPHASIS

__all__ = ["KaldiFbank", "kaldi_mel_matrix"]


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

"""A real 16-bit PCM WAV file of one sine tone, written with the standard library (shared by the CLI
tests)."""

from __future__ import annotations

import math
import os
import struct
import wave


def write_tone_wav(
    path: str | os.PathLike, freq: float, seconds: float, *, sr: int = 16000, amplitude: int = 12000
) -> None:
    """Write ``seconds`` of a ``freq`` Hz sine at ``sr`` Hz, mono, 16-bit, peak ``amplitude``."""
    n = int(seconds * sr)
    frames = b"".join(
        struct.pack("<h", int(amplitude * math.sin(2 * math.pi * freq * i / sr))) for i in range(n)
    )
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(frames)


def write_long_wav(
    path: str | os.PathLike,
    seconds: float,
    *,
    sr: int = 16000,
    channels: int = 1,
    freq: float = 220.0,
    seed: int = 0,
    block_seconds: float = 30.0,
) -> str:
    """A long 16-bit WAV written block by block (never whole in memory): a tone whose pitch drifts slowly (a
    cycle every 7 s) plus noise, the same in every channel but for the noise. Returns the path."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    total, block, done = int(seconds * sr), int(block_seconds * sr), 0
    with sf.SoundFile(os.fspath(path), "w", samplerate=sr, channels=channels, subtype="PCM_16") as f:
        while done < total:
            n = min(block, total - done)
            t = (done + np.arange(n)) / sr
            f0 = freq * (1 + 0.2 * np.sin(2 * np.pi * t / 7.0))
            tone = 0.3 * np.sin(2 * np.pi * np.cumsum(f0) / sr + 2 * np.pi * freq * done / sr)
            f.write((tone[:, None] + 0.03 * rng.standard_normal((n, channels))).astype(np.float32))
            done += n
    return os.fspath(path)

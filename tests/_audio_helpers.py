"""A real 16-bit PCM WAV file of one sine tone, written with the standard library (shared by the CLI tests)."""

from __future__ import annotations

import math
import os
import struct
import wave


def write_tone_wav(path: str | os.PathLike, freq: float, seconds: float, *, sr: int = 16000,
                   amplitude: int = 12000) -> None:
    """Write ``seconds`` of a ``freq`` Hz sine at ``sr`` Hz, mono, 16-bit, peak ``amplitude``."""
    n = int(seconds * sr)
    frames = b"".join(struct.pack("<h", int(amplitude * math.sin(2 * math.pi * freq * i / sr))) for i in range(n))
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(frames)

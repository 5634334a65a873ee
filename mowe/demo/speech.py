"""Speech for the demo corpus: the ``espeak-ng`` formant synthesiser, called as a subprocess, resampled to 16
kHz."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import soxr

from mowe.constants import SAMPLE_RATE

__all__ = ["ESPEAK_RATE", "available_voices"]

ESPEAK_RATE = 22_050

_INSTALL_HINT = (
    "espeak-ng is required to build the corpus (it synthesises the speech) but was not found on PATH. "
    "Install it with `apt-get install espeak-ng` (Debian/Ubuntu; the package pulls in espeak-ng-data), "
    "`brew install espeak-ng` (macOS) or `dnf install espeak-ng` (Fedora)."
)


def _espeak_exe() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError(_INSTALL_HINT)
    return exe


def available_voices() -> list[str]:
    """English espeak-ng voices (language ids such as ``"en-gb-scotland"``) installed on this machine.

    Raises:
        RuntimeError: espeak-ng is not installed (the message says how to install it), or it
            does not run.
    """
    exe = _espeak_exe()
    try:
        out = subprocess.run([exe, "--voices=en"], capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        raise RuntimeError(
            f"espeak-ng is installed at {exe} but `espeak-ng --voices=en` failed: {err}. " + _INSTALL_HINT
        ) from err
    voices = set()
    for line in out.stdout.splitlines()[1:]:
        cols = line.split()
        # columns: Pty Language Age/Gender VoiceName File [Other languages]; skip mbrola voices (need mbrola).
        if len(cols) >= 5 and not cols[4].startswith("mb/"):
            voices.add(cols[1])
    return sorted(voices)


def _parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Parse the WAV espeak-ng writes to stdout (its RIFF/data sizes are placeholders)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RuntimeError("espeak-ng did not produce WAV audio")
    pos, sr = 12, ESPEAK_RATE
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if cid == b"fmt ":
            sr = int.from_bytes(data[pos + 12 : pos + 16], "little")
        elif cid == b"data":
            pcm = data[pos + 8 :]
            pcm = pcm[: len(pcm) // 2 * 2]
            return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0, sr
        pos += 8 + size
    raise RuntimeError("espeak-ng WAV output has no data chunk")


def _speak(text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
    """Synthesise ``text`` with espeak-ng; returns float32 audio at 16 kHz, silence trimmed."""
    cmd = [_espeak_exe(), "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout", text]
    proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    if proc.returncode != 0 or len(proc.stdout) <= 44:
        raise RuntimeError(f"espeak-ng failed for {cmd!r}: {proc.stderr.decode(errors='replace').strip()}")
    x, sr = _parse_wav(proc.stdout)
    x = soxr.resample(x, sr, SAMPLE_RATE, quality="HQ").astype(np.float32)
    loud = np.flatnonzero(np.abs(x) > 1e-3)
    if len(loud) == 0:
        raise RuntimeError(f"espeak-ng produced silence for {cmd!r}")
    return x[loud[0] : loud[-1] + 1]


def check_voices(voices) -> None:
    """Raise a RuntimeError naming those of ``voices`` (espeak-ng language ids) that are not installed."""
    missing = sorted(set(voices) - set(available_voices()))
    if missing:
        raise RuntimeError(f"espeak-ng lacks the voices {missing}; reinstall espeak-ng and espeak-ng-data")

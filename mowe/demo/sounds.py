"""Non-speech sounds for the demo corpus, synthesised with numpy: sound events, chords and click tracks."""

from __future__ import annotations

from typing import Any

import numpy as np

from mowe.constants import SAMPLE_RATE

__all__ = ["CHORD_QUALITIES", "SOUND_EVENTS", "TEMPO_BINS", "synthesize_sound_event"]

#: tempo label -> beats-per-minute range (inclusive).
TEMPO_BINS: dict[str, tuple[int, int]] = {"slow": (60, 80), "medium": (100, 120), "fast": (140, 170)}
SOUND_EVENTS = ("tone", "chirp", "noise", "clicks", "siren", "tremolo")
CHORD_QUALITIES: dict[str, tuple[int, int, int]] = {
    "major": (0, 4, 7),
    "minor": (0, 3, 7),
    "diminished": (0, 3, 6),
}


def _fade(x: np.ndarray, ms: float = 10.0) -> np.ndarray:
    n = min(int(SAMPLE_RATE * ms / 1000), len(x) // 2)
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _click(rng: np.random.Generator, kind: str) -> np.ndarray:
    """One short percussive click: a decaying noise burst, a 'wood block' or a beep."""
    if kind == "noise":
        n = int(0.012 * SAMPLE_RATE)
        return (rng.standard_normal(n) * np.exp(-np.arange(n) / (0.002 * SAMPLE_RATE))).astype(np.float32)
    n = int(0.04 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f = rng.uniform(800, 2000) if kind == "wood" else rng.uniform(1000, 3000)
    tau = 0.008 if kind == "wood" else 0.015
    return (np.sin(2 * np.pi * f * t) * np.exp(-t / tau)).astype(np.float32)


def synthesize_sound_event(
    kind: str, rng: np.random.Generator, duration: float | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Synthesise one non-speech sound event at 16 kHz.

    Args:
        kind: one of :data:`SOUND_EVENTS`.
        rng: the random generator (all parameters are drawn from it).
        duration: seconds; drawn from the class's range if None.

    Returns:
        ``(audio, params)``: float32 audio (peak 1) and the parameters, e.g. ``{"freq": 440.0}`` for a
        tone, ``{"f_start", "f_end"}`` for a chirp, ``{"rate"}`` (clicks/s) for clicks,
        ``{"f_low", "f_high", "mod_rate"}`` for a siren, ``{"freq", "am_rate", "am_depth"}`` for tremolo.
    """
    if kind not in SOUND_EVENTS:
        raise ValueError(f"unknown sound event {kind!r}; expected one of {SOUND_EVENTS}")
    if duration is None:
        duration = float(rng.uniform(2.0, 4.0) if kind == "siren" else rng.uniform(1.0, 4.0))
    n = round(duration * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    params: dict[str, Any]
    if kind == "tone":
        f = _loguniform(rng, 200, 3000)
        x = np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        params = {"freq": f}
    elif kind == "chirp":
        f0 = _loguniform(rng, 200, 4000)
        ratio = _loguniform(rng, 2.0, 6.0)
        f1 = f0 * ratio if f0 * ratio <= 6000 else f0 / ratio
        shape = "exponential" if rng.random() < 0.5 else "linear"
        frac = t / max(duration, 1e-9)
        inst = f0 * (f1 / f0) ** frac if shape == "exponential" else f0 + (f1 - f0) * frac
        x = np.sin(2 * np.pi * np.cumsum(inst) / SAMPLE_RATE)
        params = {"f_start": f0, "f_end": f1, "sweep": shape}
    elif kind == "noise":
        x = rng.standard_normal(n)
        params = {"color": "white"}
    elif kind == "clicks":
        rate = rng.uniform(5.0, 20.0)
        x = np.zeros(n)
        click = _click(rng, "noise")
        for start in np.arange(rng.uniform(0, 1 / rate), duration, 1 / rate):
            i = int(start * SAMPLE_RATE)
            seg = click[: n - i]
            x[i : i + len(seg)] += seg
        params = {"rate": rate}
    elif kind == "siren":
        fc = rng.uniform(600, 1500)
        depth = rng.uniform(0.2, 0.4)
        fm = rng.uniform(0.5, 2.0)
        inst = fc * (1 + depth * np.sin(2 * np.pi * fm * t + rng.uniform(0, 2 * np.pi)))
        x = np.sin(2 * np.pi * np.cumsum(inst) / SAMPLE_RATE)
        params = {"f_low": fc * (1 - depth), "f_high": fc * (1 + depth), "mod_rate": fm}
    else:  # tremolo: amplitude-modulated tone
        f = _loguniform(rng, 200, 2000)
        fm = rng.uniform(4.0, 12.0)
        depth = rng.uniform(0.7, 1.0)
        env = 1 - depth * 0.5 * (1 - np.cos(2 * np.pi * fm * t))
        x = env * np.sin(2 * np.pi * f * t)
        params = {"freq": f, "am_rate": fm, "am_depth": depth}
    x = _fade(np.asarray(x, dtype=np.float32))
    x /= max(float(np.max(np.abs(x))), 1e-9)
    return x, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in params.items()}


def _chord(quality: str, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """A triad of harmonic-rich tones with random root, inversion and timbre."""
    root = int(rng.integers(48, 68))  # C3 .. G4 (MIDI)
    notes = [root + iv for iv in CHORD_QUALITIES[quality]]
    inversion = int(rng.integers(0, 3))
    for k in range(inversion):
        notes[k] += 12
    notes.sort()
    duration = float(rng.uniform(1.0, 3.0))
    n_harm = int(rng.integers(3, 11))
    rolloff = float(rng.uniform(0.5, 2.0))
    odd_only = bool(rng.random() < 0.3)
    attack = float(rng.uniform(0.005, 0.05))
    decay = float(rng.uniform(0.5, 3.0))
    t = np.arange(int(duration * SAMPLE_RATE)) / SAMPLE_RATE
    x = np.zeros_like(t)
    for m in notes:
        f0 = 440.0 * 2 ** ((m - 69) / 12) * (1 + rng.uniform(-0.002, 0.002))
        for h in range(1, n_harm + 1):
            if (odd_only and h % 2 == 0) or f0 * h >= SAMPLE_RATE / 2 - 500:
                continue
            x += np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h**rolloff
    env = np.minimum(t / attack, 1.0) * np.exp(-t / decay)
    x = _fade((x * env).astype(np.float32))
    x /= max(float(np.max(np.abs(x))), 1e-9)
    meta = {
        "notes": notes,
        "root": root,
        "inversion": inversion,
        "harmonics": n_harm,
        "odd_only": odd_only,
        "rolloff": round(rolloff, 3),
    }
    return x, meta


def _click_track(label: str, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    lo, hi = TEMPO_BINS[label]
    bpm = int(rng.integers(lo, hi + 1))
    duration = float(rng.uniform(3.5, 5.2))  # >= 3 beats even at 60 BPM; <= 6 s after padding
    kind = ("noise", "wood", "beep")[int(rng.integers(0, 3))]
    accent = bool(rng.random() < 0.5)
    click = _click(rng, kind)
    n = int(duration * SAMPLE_RATE)
    x = np.zeros(n, dtype=np.float32)
    onsets = np.arange(rng.uniform(0.0, 0.3), duration - len(click) / SAMPLE_RATE, 60.0 / bpm)
    for k, start in enumerate(onsets):
        i = int(start * SAMPLE_RATE)
        gain = 1.0 if (not accent or k % 4 == 0) else 0.6
        x[i : i + len(click)] += gain * click[: n - i]
    x /= max(float(np.max(np.abs(x))), 1e-9)
    return x, {"bpm": bpm, "beats": len(onsets), "click": kind, "accented": accent}

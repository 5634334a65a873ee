"""A local, synthetic, multi-task audio instruction corpus.

Nothing can be downloaded where this library is developed, so the corpus is *generated*: speech comes
from the ``espeak-ng`` formant synthesiser (many accents, gender variants, rates and pitches), the
non-speech clips are synthesised with numpy. Every label is a generation parameter, so every answer is
exactly checkable.

Tasks (the ``"task"`` field of a manifest line):

==================  ================================================  ====================================
task                audio                                             answer
==================  ================================================  ====================================
``asr``             a digit string (3-6 digits) or a 3-6 word         the spoken words, lowercase
                    sentence from a ~200 word list                    (``"three one four"``)
``gender``          speech                                            ``male`` / ``female`` (voice variant)
``accent``          speech                                            ``american`` / ``british`` /
                                                                      ``scottish`` / ``caribbean``
``speaking_rate``   speech at 120-145 / 160-180 / 195-220 wpm         ``slow`` / ``normal`` / ``fast``
``sound_event``     tone, chirp, noise burst, click train, siren      ``tone`` ``chirp`` ``noise``
                    (FM), amplitude-modulated tone                    ``clicks`` ``siren`` ``tremolo``
``chord``           a major / minor / diminished triad                ``major`` / ``minor`` / ``diminished``
``tempo``           a click track at 60-80 / 100-120 / 140-170 BPM    ``slow`` / ``medium`` / ``fast``
``co_reasoning``    speech over a background sound event              ``"<sound>, <word>"``, e.g.
                    (SALMONN's speech-audio co-reasoning)             ``"siren, seven"``
==================  ================================================  ====================================

Held-out voices: an espeak voice is ``<accent voice>+<variant>``. The train split uses the variants
:data:`TRAIN_VARIANTS` (``m1 m2 m3 m5 m7`` and ``f1 f2 f3 f5``); the dev and test splits use only
:data:`HELD_OUT_VARIANTS` (``m4 m6 f4``), so no dev/test voice is ever heard in training. All accent
voices appear in every split (otherwise the accent task could not be learned).

Layout written by :func:`build_corpus`::

    out_dir/
      train.jsonl  dev.jsonl  test.jsonl   one JSON object per line (see below)
      corpus_info.json                     the :class:`CorpusInfo`
      audio/<split>/<id>.wav               16 kHz mono 16-bit PCM

A manifest line::

    {"id": "train-asr-000003", "audio": "audio/train/train-asr-000003.wav",
     "instruction": "Transcribe the speech.", "answer": "three one four", "task": "asr",
     "meta": {"duration": 1.9375, "voice": "en-gb+m3", "rate": 161, "pitch": 44, ...}}

``audio`` is relative to the manifest's folder. The build is deterministic: the same ``seed`` (and
espeak-ng version) gives byte-identical manifests, and each example's randomness depends only on
``(seed, split, task, index)``, so adding a task does not change the others.

Example::

    from mowe.demo.corpus import build_corpus
    info = build_corpus("corpus_out", size=2000, seed=0)
    print(info.counts["test"])
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

__all__ = [
    "ACCENTS",
    "CHORD_QUALITIES",
    "HELD_OUT_VARIANTS",
    "INSTRUCTIONS",
    "RATE_BINS",
    "SAMPLE_RATE",
    "SOUND_EVENTS",
    "TASKS",
    "TEMPO_BINS",
    "TRAIN_VARIANTS",
    "CorpusInfo",
    "add_corpus_cli",
    "available_voices",
    "build_corpus",
    "synthesize_sound_event",
]

SAMPLE_RATE = 16_000
SPLITS = ("train", "dev", "test")
TASKS = ("asr", "gender", "accent", "speaking_rate", "sound_event", "chord", "tempo", "co_reasoning")

#: accent label -> espeak-ng voices (language ids) that speak it.
ACCENTS: dict[str, tuple[str, ...]] = {
    "american": ("en-us", "en-us-nyc"),
    "british": ("en-gb", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd"),
    "scottish": ("en-gb-scotland",),
    "caribbean": ("en-029",),
}
#: espeak-ng voice variants (``+m3``) used in train, by gender.
TRAIN_VARIANTS: dict[str, tuple[str, ...]] = {"male": ("m1", "m2", "m3", "m5", "m7"), "female": ("f1", "f2", "f3", "f5")}
#: variants used only in the dev and test splits (unseen speakers).
HELD_OUT_VARIANTS: dict[str, tuple[str, ...]] = {"male": ("m4", "m6"), "female": ("f4",)}
#: speaking-rate label -> espeak words-per-minute range (inclusive); the gaps keep labels unambiguous.
RATE_BINS: dict[str, tuple[int, int]] = {"slow": (120, 145), "normal": (160, 180), "fast": (195, 220)}
#: tempo label -> beats-per-minute range (inclusive).
TEMPO_BINS: dict[str, tuple[int, int]] = {"slow": (60, 80), "medium": (100, 120), "fast": (140, 170)}
SOUND_EVENTS = ("tone", "chirp", "noise", "clicks", "siren", "tremolo")
CHORD_QUALITIES: dict[str, tuple[int, int, int]] = {"major": (0, 4, 7), "minor": (0, 3, 7), "diminished": (0, 3, 6)}
PITCH_RANGE = (30, 70)  # espeak -p
RATE_RANGE = (120, 220)  # espeak -s, for tasks that do not ask about the rate
ESPEAK_RATE = 22_050
MIN_SECONDS = 1  # clips are 1-6 s long

_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# ~200 common words, split by role so that templates make (mostly) grammatical sentences and a
# co-reasoning sentence names exactly one colour / animal.
_WORDS: dict[str, tuple[str, ...]] = {
    "det": ("the", "my", "your", "our", "this", "that", "every", "his", "her", "one"),
    "adj": ("big", "small", "old", "new", "happy", "quiet", "loud", "warm", "cold", "bright", "dark", "quick",
            "slow", "tall", "short", "soft", "young", "busy", "clean", "heavy", "little", "good", "long", "nice"),
    "colour": ("red", "blue", "green", "yellow", "black", "white", "brown", "orange", "purple", "pink"),
    "animal": ("dog", "cat", "horse", "bird", "fish", "cow", "sheep", "goat", "mouse", "rabbit", "duck", "lion",
               "tiger", "bear", "fox", "frog"),
    "thing": ("car", "house", "book", "tree", "door", "table", "chair", "phone", "river", "garden", "window",
              "road", "train", "boat", "city", "school", "kitchen", "letter", "bread", "coffee", "water",
              "music", "paper", "ship", "bridge", "island", "market", "forest", "mountain", "lamp", "clock",
              "shoe", "bottle", "cup", "ball", "box", "key", "bed", "cake", "radio"),
    "person": ("man", "woman", "child", "teacher", "doctor", "farmer", "friend", "student", "driver", "baker",
               "mother", "father", "sister", "brother"),
    "vi": ("runs", "sleeps", "waits", "sings", "falls", "stops", "moves", "shines", "works", "plays", "jumps",
           "swims", "smiles", "turns", "rests", "stays", "starts", "shakes"),
    "vt": ("sees", "likes", "finds", "opens", "holds", "carries", "buys", "paints", "cleans", "brings", "wants",
           "needs", "watches", "follows", "keeps", "pulls"),
    "adv": ("today", "now", "again", "slowly", "quickly", "here", "there", "often", "outside", "early", "late",
            "always", "tonight", "inside", "together", "sometimes"),
    "prep": ("near", "behind", "under", "over", "by", "beside"),
}

# Sentence templates, 3-6 words. Keys refer to _WORDS, "noun" = thing | animal | person,
# "adjc" = adj | colour.
_ASR_TEMPLATES = (
    ("det", "noun", "vi"),
    ("det", "adjc", "noun", "vi"),
    ("det", "noun", "vi", "adv"),
    ("det", "adjc", "noun", "vi", "adv"),
    ("det", "person", "vt", "det", "noun"),
    ("det", "person", "vt", "det", "adjc", "noun"),
    ("det", "noun", "vi", "prep", "det", "noun"),
)

# ≥5 paraphrases per task, one picked at random per example. Closed-ended tasks name their options.
INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "asr": (
        "Transcribe the speech.",
        "What does the speaker say?",
        "Write down exactly what is spoken in this clip.",
        "Please transcribe this audio.",
        "Give a verbatim transcript of the recording.",
        "Convert the spoken words to text.",
    ),
    "gender": (
        "Is the speaker male or female?",
        "What is the gender of the speaker? Answer male or female.",
        "Does this voice belong to a male or a female speaker?",
        "Classify the speaker's gender as male or female.",
        "Male or female: who is speaking?",
        "Tell me whether the speaker is male or female.",
    ),
    "accent": (
        "Which accent does the speaker have: american, british, scottish or caribbean?",
        "What accent is this? Choose american, british, scottish or caribbean.",
        "Identify the speaker's accent (american, british, scottish, caribbean).",
        "Where is this English accent from: american, british, scottish or caribbean?",
        "Classify the accent of the speech as american, british, scottish or caribbean.",
    ),
    "speaking_rate": (
        "Is the speaker talking slowly, at a normal pace, or fast? Answer slow, normal or fast.",
        "How fast is the speech: slow, normal or fast?",
        "Rate the speaking rate as slow, normal or fast.",
        "Describe the pace of the speaker: slow, normal or fast?",
        "Is this speech slow, normal or fast?",
    ),
    "sound_event": (
        "What kind of sound is this? Choose from tone, chirp, noise, clicks, siren, tremolo.",
        "Classify this sound as tone, chirp, noise, clicks, siren or tremolo.",
        "Which sound do you hear: tone, chirp, noise, clicks, siren or tremolo?",
        "Identify the sound event (tone, chirp, noise, clicks, siren, tremolo).",
        "Name the type of this sound: tone, chirp, noise, clicks, siren or tremolo.",
    ),
    "chord": (
        "Is this chord major, minor or diminished?",
        "What is the quality of the chord: major, minor or diminished?",
        "Classify the triad as major, minor or diminished.",
        "Which chord quality do you hear: major, minor or diminished?",
        "Tell me if the chord is major, minor or diminished.",
    ),
    "tempo": (
        "Is the tempo of this click track slow, medium or fast?",
        "How fast is the beat: slow, medium or fast?",
        "Classify the tempo as slow, medium or fast.",
        "What is the tempo of the clicks: slow, medium or fast?",
        "Rate the speed of the beat as slow, medium or fast.",
    ),
}
# Co-reasoning needs both the background sound and the speech; answers are "<sound>, <item>".
_CO_QUESTIONS: dict[str, tuple[str, ...]] = {
    "first_digit": (
        "What sound plays behind the speaker, and what digit does the speaker say first?",
        "Name the background sound and the first digit spoken, separated by a comma.",
        "Which sound is in the background, and which digit comes first in the speech?",
        "Tell me the background sound, then the first number the speaker says.",
        "What is the background sound, and what is the first digit the speaker says?",
    ),
    "last_digit": (
        "What sound plays behind the speaker, and what digit does the speaker say last?",
        "Name the background sound and the last digit spoken, separated by a comma.",
        "Which sound is in the background, and which digit comes last in the speech?",
        "Tell me the background sound, then the last number the speaker says.",
        "What is the background sound, and what is the final digit the speaker says?",
    ),
    "colour": (
        "What sound plays behind the speaker, and what colour does the speaker mention?",
        "Name the background sound and the colour that is spoken, separated by a comma.",
        "Which sound is in the background, and which colour is mentioned in the speech?",
        "Tell me the background sound, then the colour the speaker names.",
        "What is the background sound, and what colour does the speaker say?",
    ),
    "animal": (
        "What sound plays behind the speaker, and what animal does the speaker mention?",
        "Name the background sound and the animal that is spoken, separated by a comma.",
        "Which sound is in the background, and which animal is mentioned in the speech?",
        "Tell me the background sound, then the animal the speaker names.",
        "What is the background sound, and what animal does the speaker talk about?",
    ),
}
INSTRUCTIONS["co_reasoning"] = tuple(q for qs in _CO_QUESTIONS.values() for q in qs)

_INSTALL_HINT = (
    "espeak-ng is required to build the corpus (it synthesises the speech) but was not found on PATH. "
    "Install it with `apt-get install espeak-ng` (Debian/Ubuntu; the package pulls in espeak-ng-data), "
    "`brew install espeak-ng` (macOS) or `dnf install espeak-ng` (Fedora)."
)


# ---------------------------------------------------------------------------------------------------
# Public data types
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class CorpusInfo:
    """What :func:`build_corpus` wrote (also saved as ``corpus_info.json`` in ``out_dir``).

    Attributes:
        out_dir: the corpus folder.
        counts: ``counts[split][task]`` = number of examples.
        train_voices: espeak voices (``"en-gb+m3"``) the train split may use.
        test_voices: espeak voices the dev and test splits may use; disjoint from ``train_voices``.
        seed: the seed the corpus was built with.
        size: requested number of training examples.
        tasks: the tasks in the corpus.
        sample_rate: audio sample rate (16 kHz).
        held_out: a sentence saying what is held out.
    """

    out_dir: str
    counts: dict[str, dict[str, int]]
    train_voices: list[str]
    test_voices: list[str]
    seed: int = 0
    size: int = 0
    tasks: list[str] = dataclasses.field(default_factory=list)
    sample_rate: int = SAMPLE_RATE
    held_out: str = ""

    def manifest(self, split: str) -> Path:
        """Path of the JSONL manifest of ``split`` (``"train"``, ``"dev"`` or ``"test"``)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return Path(self.out_dir) / f"{split}.jsonl"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, path: str | os.PathLike) -> CorpusInfo:
        """Read ``corpus_info.json`` (``path`` may be the file or the corpus folder)."""
        p = Path(path)
        if p.is_dir():
            p = p / "corpus_info.json"
        return cls(**json.loads(p.read_text()))


# ---------------------------------------------------------------------------------------------------
# espeak-ng
# ---------------------------------------------------------------------------------------------------


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
        raise RuntimeError(f"espeak-ng is installed at {exe} but `espeak-ng --voices=en` failed: {err}. "
                           + _INSTALL_HINT) from err
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
        cid, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if cid == b"fmt ":
            sr = int.from_bytes(data[pos + 12:pos + 16], "little")
        elif cid == b"data":
            pcm = data[pos + 8:]
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
    return x[loud[0]: loud[-1] + 1]


# ---------------------------------------------------------------------------------------------------
# Non-speech synthesis
# ---------------------------------------------------------------------------------------------------


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


def synthesize_sound_event(kind: str, rng: np.random.Generator, duration: float | None = None
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
            x[i: i + len(seg)] += seg
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
            x += np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h ** rolloff
    env = np.minimum(t / attack, 1.0) * np.exp(-t / decay)
    x = _fade((x * env).astype(np.float32))
    x /= max(float(np.max(np.abs(x))), 1e-9)
    meta = {"notes": notes, "root": root, "inversion": inversion, "harmonics": n_harm,
            "odd_only": odd_only, "rolloff": round(rolloff, 3)}
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
        x[i: i + len(click)] += gain * click[: n - i]
    x /= max(float(np.max(np.abs(x))), 1e-9)
    return x, {"bpm": bpm, "beats": len(onsets), "click": kind, "accented": accent}


# ---------------------------------------------------------------------------------------------------
# Planning and rendering examples
# ---------------------------------------------------------------------------------------------------


def _voice_pool(variants: dict[str, tuple[str, ...]]) -> list[str]:
    return sorted(f"{b}+{v}" for bases in ACCENTS.values() for b in bases for vs in variants.values() for v in vs)


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    return seq[int(rng.integers(0, len(seq)))]


def _sentence(rng: np.random.Generator, template: Sequence[str]) -> str:
    words = []
    for slot in template:
        if slot == "noun":
            slot = _pick(rng, ("thing", "thing", "animal", "person"))
        elif slot == "adjc":
            slot = _pick(rng, ("adj", "adj", "colour"))
        words.append(_pick(rng, _WORDS[slot]))
    return " ".join(words)


def _digits(rng: np.random.Generator) -> list[str]:
    return [_DIGITS[int(d)] for d in rng.integers(0, 10, size=int(rng.integers(3, 7)))]


def _voice(rng: np.random.Generator, variants: dict[str, tuple[str, ...]], *, gender: str | None = None,
           accent: str | None = None) -> dict[str, Any]:
    gender = gender or _pick(rng, ("male", "female"))
    accent = accent or _pick(rng, tuple(ACCENTS))
    base, variant = _pick(rng, ACCENTS[accent]), _pick(rng, variants[gender])
    return {"voice": f"{base}+{variant}", "accent": accent, "gender": gender}


def _labels(task: str) -> tuple[str, ...]:
    return {
        "asr": ("digits", "sentence"),
        "gender": ("male", "female"),
        "accent": tuple(ACCENTS),
        "speaking_rate": tuple(RATE_BINS),
        "sound_event": SOUND_EVENTS,
        "chord": tuple(CHORD_QUALITIES),
        "tempo": tuple(TEMPO_BINS),
        "co_reasoning": SOUND_EVENTS,
    }[task]


def _render(task: str, label: str, seed: Sequence[int], variants: dict[str, tuple[str, ...]]
            ) -> tuple[np.ndarray, str, str, dict[str, Any]]:
    """Make one example: (audio at 16 kHz, instruction, answer, meta). Pure function of its arguments."""
    rng = np.random.default_rng(list(seed))
    meta: dict[str, Any] = {}
    if task in ("asr", "gender", "accent", "speaking_rate"):
        kw = {"gender": label} if task == "gender" else {"accent": label} if task == "accent" else {}
        meta.update(_voice(rng, variants, **kw))
        if task == "speaking_rate":
            lo, hi = RATE_BINS[label]
            meta["rate"] = int(rng.integers(lo, hi + 1))
        else:
            meta["rate"] = int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1))
        meta["pitch"] = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
        if task == "asr" and label == "digits":
            text = " ".join(_digits(rng))
        elif task == "speaking_rate":  # 5-6 words so the rate is audible
            text = _sentence(rng, _pick(rng, _ASR_TEMPLATES[3:]))
        elif task == "gender" and rng.random() < 0.3:
            text = " ".join(_digits(rng))
        else:
            text = _sentence(rng, _pick(rng, _ASR_TEMPLATES))
        meta["text"] = text
        x = _speak(text, meta["voice"], meta["rate"], meta["pitch"])
        answer = {"asr": text, "gender": meta["gender"], "accent": meta["accent"],
                  "speaking_rate": label}[task]
    elif task == "sound_event":
        x, params = synthesize_sound_event(label, rng)
        meta.update(event=label, **params)
        answer = label
    elif task == "chord":
        x, params = _chord(label, rng)
        meta.update(quality=label, **params)
        answer = label
    elif task == "tempo":
        x, params = _click_track(label, rng)
        meta.update(**params)
        answer = label
    elif task == "co_reasoning":
        meta.update(_voice(rng, variants))
        meta["rate"] = int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1))
        meta["pitch"] = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
        question = _pick(rng, tuple(_CO_QUESTIONS))
        if question in ("first_digit", "last_digit"):
            words = _digits(rng)
            target = words[0] if question == "first_digit" else words[-1]
            text = " ".join(words)
        else:
            target = _pick(rng, _WORDS[question])
            other = ("animal", "thing", "person") if question == "colour" else ("adj",)
            if question == "colour":
                head = [target, _pick(rng, _WORDS[_pick(rng, other)])]
            else:
                head = [_pick(rng, _WORDS["adj"]), target] if rng.random() < 0.5 else [target]
            text = " ".join([_pick(rng, _WORDS["det"]), *head, _pick(rng, _WORDS["vi"]), _pick(rng, _WORDS["adv"])])
        speech = _speak(text, meta["voice"], meta["rate"], meta["pitch"])
        speech = np.concatenate([np.zeros(int(rng.uniform(0.2, 0.5) * SAMPLE_RATE), np.float32), speech,
                                 np.zeros(int(rng.uniform(0.2, 0.5) * SAMPLE_RATE), np.float32)])
        bg, params = synthesize_sound_event(label, rng, duration=len(speech) / SAMPLE_RATE)
        snr = float(rng.uniform(0.0, 10.0))
        bg *= _rms(speech) / max(_rms(bg), 1e-9) / 10 ** (snr / 20)
        x = speech + bg
        meta.update(text=text, question=question, target=target, sound=label, snr_db=round(snr, 2),
                    **{f"sound_{k}": v for k, v in params.items()})
        answer = f"{label}, {target}"
        instruction = _pick(rng, _CO_QUESTIONS[question])
        return _finish(x, rng, meta), instruction, answer, meta
    else:  # pragma: no cover - validated by build_corpus
        raise ValueError(task)
    instruction = _pick(rng, INSTRUCTIONS[task])
    return _finish(x, rng, meta), instruction, answer, meta


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def _finish(x: np.ndarray, rng: np.random.Generator, meta: dict[str, Any]) -> np.ndarray:
    """Pad with silence, set a random loudness, add a little noise; records level and duration in meta."""
    pads = [int(rng.uniform(0.05, 0.3) * SAMPLE_RATE) for _ in range(2)]
    short = MIN_SECONDS * SAMPLE_RATE - (len(x) + sum(pads))
    if short > 0:  # very fast, very short speech: pad up to the minimum clip length
        pads[0] += short // 2
        pads[1] += short - short // 2
    x = np.concatenate([np.zeros(pads[0], np.float32), np.asarray(x, np.float32), np.zeros(pads[1], np.float32)])
    level_db = float(rng.uniform(-32.0, -14.0))
    x *= 10 ** (level_db / 20) / max(_rms(x), 1e-9)
    peak = float(np.max(np.abs(x)))
    if peak > 0.9:  # sparse signals (clicks) would clip at the target RMS; keep them clean
        x *= 0.9 / peak
    noise_snr = float(rng.uniform(25.0, 45.0))
    x = x + rng.standard_normal(len(x)).astype(np.float32) * (_rms(x) / 10 ** (noise_snr / 20))
    x = np.clip(x, -1.0, 1.0).astype(np.float32)
    meta["level_db"] = round(level_db, 2)
    meta["noise_snr_db"] = round(noise_snr, 2)
    meta["duration"] = round(len(x) / SAMPLE_RATE, 4)
    return x


def _split_counts(size: int, tasks: Sequence[str]) -> dict[str, dict[str, int]]:
    """Train: ``size`` spread evenly over tasks. Dev / test: ~size/8 each, at least 2 per task."""
    n = len(tasks)
    train = {t: size // n + (1 if i < size % n else 0) for i, t in enumerate(tasks)}
    per_task_eval = max(2, math.ceil(size / 8 / n))
    return {"train": train, "dev": {t: per_task_eval for t in tasks}, "test": {t: per_task_eval for t in tasks}}


def _parse_tasks(tasks: str | Iterable[str] | None) -> list[str]:
    if tasks is None:
        return list(TASKS)
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    tasks = list(dict.fromkeys(tasks))
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown or empty tasks {unknown or tasks!r}; choose from {', '.join(TASKS)}")
    return [t for t in TASKS if t in tasks]  # canonical order, so the output does not depend on it


def build_corpus(out_dir: str | os.PathLike, *, size: int, seed: int = 0, tasks: str | Iterable[str] | None = None,
                 progress: bool = True, workers: int | None = None) -> CorpusInfo:
    """Generate the corpus: audio files, ``{train,dev,test}.jsonl`` and ``corpus_info.json`` in ``out_dir``.

    Args:
        out_dir: target folder. Created if missing; if it already holds a corpus (``corpus_info.json``)
            that corpus is replaced; any other non-empty folder is refused.
        size: number of training examples over all tasks (spread evenly). Dev and test get about
            ``size / 8`` each, at least 2 per task.
        seed: the seed; the same seed gives byte-identical manifests.
        tasks: task names (a list or a comma-separated string); default all of :data:`TASKS`.
        progress: show a tqdm progress bar.
        workers: parallel synthesis threads (espeak-ng runs as a subprocess); default
            ``min(4, max(2, cpu_count))``.

    Returns:
        The :class:`CorpusInfo`.

    Raises:
        RuntimeError: espeak-ng is not installed, or lacks a voice the corpus needs.
        ValueError: bad ``size`` or ``tasks``.
        FileExistsError: ``out_dir`` is a non-empty folder that is not a corpus.
    """
    tasks = _parse_tasks(tasks)
    if not isinstance(size, int) or size < len(tasks):
        raise ValueError(f"size must be an int >= the number of tasks ({len(tasks)}), got {size!r}")
    needs_speech = any(t in ("asr", "gender", "accent", "speaking_rate", "co_reasoning") for t in tasks)
    if needs_speech:
        have = set(available_voices())
        missing = sorted({b for bases in ACCENTS.values() for b in bases} - have)
        if missing:
            raise RuntimeError(f"espeak-ng lacks the voices {missing}; reinstall espeak-ng and espeak-ng-data")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not (out / "corpus_info.json").exists():
            raise FileExistsError(f"{out} is not empty and holds no corpus_info.json; refusing to write into it")
        for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "corpus_info.json"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "audio", ignore_errors=True)
    counts = _split_counts(size, tasks)

    # Plan: (split, task, label, per-example seed) in manifest order. Labels are balanced per split/task:
    # a rotation through the classes from a seeded offset.
    jobs = []
    for si, split in enumerate(SPLITS):
        (out / "audio" / split).mkdir(parents=True, exist_ok=True)
        for task in tasks:
            ti = TASKS.index(task)
            classes = _labels(task)
            offset = int(np.random.default_rng([seed, si, ti]).integers(0, len(classes)))
            for j in range(counts[split][task]):
                jobs.append((split, task, classes[(offset + j) % len(classes)], (seed, si, ti, j),
                             f"{split}-{task}-{j:06d}"))

    def run(job):
        split, task, label, ex_seed, ex_id = job
        variants = TRAIN_VARIANTS if split == "train" else HELD_OUT_VARIANTS
        x, instruction, answer, meta = _render(task, label, ex_seed, variants)
        rel = f"audio/{split}/{ex_id}.wav"
        sf.write(out / rel, x, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        return {"id": ex_id, "audio": rel, "instruction": instruction, "answer": answer, "task": task, "meta": meta}

    workers = workers or min(4, max(2, os.cpu_count() or 2))
    rows: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="building corpus", unit="clip")
    try:
        with cf.ThreadPoolExecutor(max_workers=workers) as pool:
            for row in pool.map(run, jobs):  # map keeps the planned order
                rows.append(row)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    # Train lines are shuffled (mixed tasks); dev/test stay grouped by task.
    by_split = {s: [r for r in rows if r["id"].startswith(s + "-")] for s in SPLITS}
    order = np.random.default_rng([seed, 99]).permutation(len(by_split["train"]))
    by_split["train"] = [by_split["train"][i] for i in order]
    for split, split_rows in by_split.items():
        with open(out / f"{split}.jsonl", "w", encoding="utf-8", newline="\n") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in split_rows)

    info = CorpusInfo(
        out_dir=str(out),
        counts=counts,
        train_voices=_voice_pool(TRAIN_VARIANTS),
        test_voices=_voice_pool(HELD_OUT_VARIANTS),
        seed=seed,
        size=size,
        tasks=list(tasks),
        held_out=(
            "dev and test use only the espeak voice variants "
            + " ".join("+" + v for vs in HELD_OUT_VARIANTS.values() for v in vs)
            + ", never used in train (train uses "
            + " ".join("+" + v for vs in TRAIN_VARIANTS.values() for v in vs)
            + "); all accent voices appear in every split."
        ),
    )
    (out / "corpus_info.json").write_text(info.to_json())
    return info


# ---------------------------------------------------------------------------------------------------
# CLI: `mowe corpus build --out DIR --size N --seed S [--tasks asr,gender]`
# ---------------------------------------------------------------------------------------------------


def _cmd_build(args: argparse.Namespace) -> int:
    """Handler of ``mowe corpus build``: 0 on success, 2 (with a one-line message) on a user error."""
    try:
        info = build_corpus(args.out, size=args.size, seed=args.seed, tasks=args.tasks,
                            progress=not args.no_progress, workers=args.workers)
    except (ValueError, RuntimeError, FileExistsError) as err:
        print(f"mowe corpus build: error: {err}", file=sys.stderr)
        return 2
    for split in SPLITS:
        total = sum(info.counts[split].values())
        print(f"{split}: {total} examples -> {info.manifest(split)}")
    return 0


def add_corpus_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``corpus build`` on an argparse ``subparsers`` object; returns the ``corpus`` parser.

    The ``build`` handler is set with ``set_defaults(func=...)``; it takes the parsed namespace and
    returns the exit code 0.
    """
    corpus = subparsers.add_parser("corpus", help="build the local synthetic multi-task audio corpus")
    sub = corpus.add_subparsers(dest="corpus_command", metavar="{build}")
    sub.required = True
    build = sub.add_parser("build", help="synthesise audio and write train/dev/test JSONL manifests")
    build.add_argument("--out", required=True, help="output folder")
    build.add_argument("--size", type=int, required=True, help="number of training examples (all tasks)")
    build.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    build.add_argument("--tasks", default=None,
                       help=f"comma-separated subset of: {','.join(TASKS)} (default: all)")
    build.add_argument("--workers", type=int, default=None, help="parallel synthesis threads")
    build.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    build.set_defaults(func=_cmd_build)
    return corpus

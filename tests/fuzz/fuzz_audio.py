"""Coverage-guided fuzz harness for mowe.data.audio (atheris / libFuzzer); not collected by pytest.

Any input must either load as finite 1-D float32 audio or raise exactly ``AudioLoadError`` naming the
file. Any other exception is reported by libFuzzer as a crash and the input saved as ``crash-*``; an input
that takes longer than ``-timeout`` seconds is saved as ``timeout-*``.

Usage (see tests/fuzz/README.md)::

    pip install atheris
    python tests/fuzz/fuzz_audio.py make-corpus fuzz_corpus     # seed files: WAV/FLAC/OGG/MP3
    python tests/fuzz/fuzz_audio.py fuzz_corpus -max_total_time=600 -timeout=10 -rss_limit_mb=4096

Only Python code (mowe, soundfile's wrapper) is instrumented; libsndfile itself is not, so coverage feedback
is coarse and the mutator does most of the work.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["mowe", "soundfile"]):
    import soundfile as sf

    from mowe.data.audio import audio_info, load_audio
    from mowe.errors import AudioLoadError

import numpy as np  # not instrumented on purpose: large, and not the target

_DIR = tempfile.mkdtemp(prefix="mowe fuzz ")
_PATH = os.path.join(_DIR, "input.wav")


def _check(fn) -> object:
    try:
        return fn(_PATH)
    except AudioLoadError as e:
        if type(e) is not AudioLoadError or _PATH not in str(e):
            raise AssertionError(f"bad AudioLoadError: {e!r}") from e
        return None


def test_one_input(data: bytes) -> None:
    with open(_PATH, "wb") as f:
        f.write(data)
    clip = _check(load_audio)
    if clip is not None:
        w = clip.waveform
        assert w.dtype.is_floating_point and w.dim() == 1 and w.shape[0] > 0, (w.dtype, w.shape)
        assert bool(w.isfinite().all()), "non-finite samples escaped load_audio"
    info = _check(audio_info)
    assert clip is None or info is not None, "load_audio accepted a file audio_info rejects"
    _check(lambda p: load_audio(p, max_seconds=0.01, length_policy="chunk"))


def make_corpus(out: Path) -> None:
    """Write small valid seed files in every format this libsndfile can encode."""
    out.mkdir(parents=True, exist_ok=True)
    seeds = [
        ("pcm16_mono.wav", "WAV", "PCM_16", 1, 16_000),
        ("u8_stereo.wav", "WAV", "PCM_U8", 2, 8_000),
        ("pcm24_3ch.wav", "WAV", "PCM_24", 3, 22_050),
        ("float_stereo.wav", "WAV", "FLOAT", 2, 44_100),
        ("double.wav", "WAV", "DOUBLE", 1, 48_000),
        ("stereo.flac", "FLAC", "PCM_16", 2, 16_000),
        ("mono.ogg", "OGG", "VORBIS", 1, 16_000),
        ("mono.opus", "OGG", "OPUS", 1, 48_000),
        ("mono.mp3", "MP3", "MPEG_LAYER_III", 1, 16_000),
    ]
    for name, fmt, subtype, channels, rate in seeds:
        n = rate // 10
        x = 0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)
        x = np.stack([x] * channels, axis=1)
        buf = io.BytesIO()
        try:
            sf.write(buf, x, rate, format=fmt, subtype=subtype)
        except Exception as e:  # noqa: BLE001  (a codec missing from this build is not an error here)
            print(f"skip {name}: {e}")
            continue
        (out / name).write_bytes(buf.getvalue())
        print(f"wrote {out / name}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "make-corpus":
        make_corpus(Path(sys.argv[2]))
        return
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

"""Property fuzz of load_audio / audio_info: any bytes either load as finite mono float32 or raise
exactly AudioLoadError naming the file, never another exception, a crash or a hang.

Inputs are random byte strings, well-formed float WAVs holding arbitrary float32 values (NaN, Inf, near
float32's max) and, mostly, mutations of small valid files (WAV int/float, multi-channel, FLAC, Ogg/Vorbis,
MP3): bytes flipped, header fields overwritten, tails cut. The budget is fixed
(``max_examples=60``); raise it for a long run with ``MOWE_FUZZ_EXAMPLES=20000`` (see tests/fuzz/README.md).
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mowe.data.audio import AudioClip, audio_info, load_audio
from mowe.errors import AudioLoadError

MAX_EXAMPLES = int(os.environ.get("MOWE_FUZZ_EXAMPLES", "60"))


def _seed(fmt: str, subtype: str, channels: int, rate: int, seconds: float = 0.05) -> bytes | None:
    n = int(rate * seconds)
    x = 0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)
    x = np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)
    buf = io.BytesIO()
    try:
        sf.write(buf, x, rate, format=fmt, subtype=subtype)
    except (sf.LibsndfileError, ValueError, TypeError):  # codec missing from this libsndfile build
        return None
    return buf.getvalue()


SEEDS = [
    s
    for s in (
        _seed("WAV", "PCM_16", 1, 16_000),
        _seed("WAV", "PCM_U8", 2, 8_000),
        _seed("WAV", "PCM_24", 3, 22_050),
        _seed("WAV", "FLOAT", 2, 44_100),
        _seed("WAV", "DOUBLE", 1, 48_000),
        _seed("FLAC", "PCM_16", 2, 16_000),
        _seed("OGG", "VORBIS", 1, 16_000, seconds=0.2),
        _seed("MP3", "MPEG_LAYER_III", 1, 16_000, seconds=0.2),
    )
    if s is not None
]


@st.composite
def mutated_seed(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    # Flip bytes, biased toward the header where the parser's decisions are made.
    for _ in range(draw(st.integers(0, 8))):
        hi = len(data) - 1 if draw(st.booleans()) else min(len(data) - 1, 63)
        data[draw(st.integers(0, hi))] = draw(st.integers(0, 255))
    # Overwrite a 4-byte little-endian field with an extreme value (sizes, rates, channel counts).
    if draw(st.booleans()):
        off = draw(st.integers(0, min(len(data), 64) - 4))
        val = draw(st.sampled_from([0, 1, 2, 3, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 65535, 8000, 44100]))
        data[off : off + 4] = val.to_bytes(4, "little")
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@st.composite
def float_wav(draw: st.DrawFn) -> bytes:
    """A well-formed float WAV holding arbitrary float32 values: NaN, Inf, near-max, subnormal."""
    channels = draw(st.integers(1, 3))
    rate = draw(st.sampled_from([1_000, 8_000, 16_000, 44_100, 96_000, 192_000]))
    values = draw(
        st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=0, max_size=64 * channels)
    )
    x = np.asarray(values[: len(values) // channels * channels], dtype=np.float32).reshape(-1, channels)
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="WAV", subtype=draw(st.sampled_from(["FLOAT", "DOUBLE"])))
    return buf.getvalue()


audio_bytes = st.one_of(
    st.binary(min_size=0, max_size=512),
    st.builds(
        lambda head, tail: head + tail,
        st.sampled_from([b"RIFF", b"fLaC", b"OggS", b"ID3", b"FORM"]),
        st.binary(max_size=512),
    ),
    float_wav(),
    mutated_seed(),
    mutated_seed(),
    mutated_seed(),
)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz audio ü")


def check_outcome(path, fn) -> object:
    """Run ``fn(path)``; it must return or raise exactly AudioLoadError naming ``path``."""
    try:
        return fn(path)
    except AudioLoadError as e:
        assert type(e) is AudioLoadError
        assert str(path) in str(e), str(e)
        return None


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,  # keep the run self-contained: no .hypothesis/ directory in the repo
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=audio_bytes)
def test_any_bytes_load_or_raise_audio_load_error(fuzz_dir, data):
    path = fuzz_dir / "clip.wav"
    path.write_bytes(data)

    clip = check_outcome(path, load_audio)
    if clip is not None:
        assert isinstance(clip, AudioClip)
        w = clip.waveform
        assert w.dtype.is_floating_point and str(w.dtype) == "torch.float32"
        assert w.dim() == 1 and w.shape[0] > 0
        assert bool(w.isfinite().all())
        assert clip.sample_rate == 16_000 and clip.original_channels >= 1

    info = check_outcome(path, audio_info)
    if info is not None:
        duration, rate, channels = info
        assert duration > 0 and rate > 0 and channels >= 1
    # A file load_audio accepts must have a header audio_info accepts.
    if clip is not None:
        assert info is not None

    truncated = check_outcome(path, lambda p: load_audio(p, max_seconds=0.01, length_policy="chunk"))
    if truncated is not None:
        assert all(c.shape[0] <= 160 for c in truncated.chunks)

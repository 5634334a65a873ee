"""Tests for mowe.data.audio on good inputs: formats, rates, channels, length policies, batching.

Bad files are in test_audio_zoo.py and random bytes in test_fuzz_audio.py. Every file is written at test
time into ``tmp_path``.
"""

from __future__ import annotations

import struct
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import mowe.data.audio as mowe_audio
from mowe.data.audio import (
    AudioClip,
    AudioInfo,
    AudioTruncatedWarning,
    audio_info,
    load_audio,
    pad_batch,
    validate_waveform,
)
from mowe.encoders.base import check_waveforms
from mowe.errors import AudioLoadError, MoWEInputError


def sine(seconds: float, rate: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    """``(s,)`` float64 sine."""
    return amp * np.sin(2 * np.pi * freq * np.arange(round(seconds * rate)) / rate)


def peak_hz(wave: torch.Tensor, rate: int) -> float:
    """Frequency of the largest FFT bin."""
    spec = np.abs(np.fft.rfft(wave.numpy().astype(np.float64)))
    return float(np.argmax(spec)) * rate / wave.shape[0]


# --------------------------------------------------------------------------------------------------
# Sample formats, rates, channels


# (subtype, largest quantisation error for a value in [-1, 1))
SUBTYPES = [
    ("PCM_U8", 1 / 128),  # 8-bit WAV is unsigned
    ("PCM_16", 1 / 2**15),
    ("PCM_24", 1 / 2**23),
    ("PCM_32", 1 / 2**31 + 1e-7),  # float32 output can't hold 32-bit precision
    ("FLOAT", 6e-8),  # the float64 reference rounded to float32
    ("DOUBLE", 1e-7),  # read back as float32
]


@pytest.mark.parametrize("subtype,tol", SUBTYPES, ids=[s for s, _ in SUBTYPES])
def test_wav_sample_formats_load_with_correct_values(tmp_path, subtype, tol):
    x = sine(0.25, 16_000)
    p = tmp_path / f"{subtype}.wav"
    sf.write(p, x, 16_000, subtype=subtype)
    clip = load_audio(p)
    assert isinstance(clip, AudioClip)
    assert clip.waveform.dtype == torch.float32 and clip.waveform.shape == (4000,)
    assert (clip.original_sample_rate, clip.original_channels) == (16_000, 1)
    # Same rate, so no resampling: only quantisation error (plus rounding, hence 1.01).
    assert np.max(np.abs(clip.waveform.numpy() - x)) <= tol * 1.01 + 1e-9


def test_int16_scaling_is_divide_by_32768(tmp_path):
    p = tmp_path / "ints.wav"
    sf.write(p, np.array([0, 16384, -16384, -32768, 32767], dtype=np.int16), 16_000)
    got = load_audio(p).waveform
    assert torch.equal(got, torch.tensor([0.0, 0.5, -0.5, -1.0, 32767 / 32768]))


def test_float_wav_is_not_clipped(tmp_path):
    p = tmp_path / "loud.wav"
    sf.write(p, np.array([2.0, -3.5, 0.25], dtype=np.float32), 16_000, subtype="FLOAT")
    assert load_audio(p).waveform.tolist() == [2.0, -3.5, 0.25]


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100, 48_000])
def test_stereo_sine_resampled_to_16k_mono(tmp_path, rate):
    x = sine(1.5, rate)
    p = tmp_path / f"sine_{rate}.wav"
    sf.write(p, np.stack([x, 0.5 * x], axis=1), rate, subtype="PCM_16")
    clip = load_audio(p)
    w = clip.waveform
    assert clip.sample_rate == 16_000 and clip.original_sample_rate == rate and clip.original_channels == 2
    assert w.dtype == torch.float32 and w.dim() == 1
    assert abs(w.shape[0] - 24_000) <= 1  # 1.5 s at 16 kHz, within a sample
    assert peak_hz(w, 16_000) == pytest.approx(440.0, abs=1.0)
    # Downmix is the channel mean: amplitude (0.5 + 0.25) / 2.
    assert float(w[2000:-2000].abs().max()) == pytest.approx(0.375, abs=0.01)


def test_resample_to_other_target_rate(tmp_path):
    p = tmp_path / "a.wav"
    sf.write(p, sine(1.0, 44_100, freq=1000.0), 44_100)
    clip = load_audio(p, sample_rate=8_000)
    assert clip.sample_rate == 8_000 and clip.waveform.shape == (8_000,)
    assert peak_hz(clip.waveform, 8_000) == pytest.approx(1000.0, abs=1.0)


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5, 6])
def test_any_channel_count_is_averaged(tmp_path, channels):
    rng = np.random.default_rng(channels)
    x = rng.uniform(-0.9, 0.9, size=(1000, channels)).astype(np.float32)
    p = tmp_path / f"ch{channels}.wav"
    sf.write(p, x, 16_000, subtype="FLOAT")
    clip = load_audio(p)
    assert clip.original_channels == channels
    np.testing.assert_allclose(clip.waveform.numpy(), x.mean(axis=1), rtol=0, atol=1e-6)
    assert audio_info(p) == (1000 / 16_000, 16_000, channels)


def test_silence_is_valid_audio(tmp_path):
    p = tmp_path / "silence.wav"
    sf.write(p, np.zeros(8000, dtype=np.int16), 8_000)
    w = load_audio(p).waveform
    assert w.shape == (16_000,) and torch.count_nonzero(w) == 0


@pytest.mark.parametrize(
    "ext,fmt,subtype,tol_samples",
    [
        ("flac", "FLAC", "PCM_16", 0),
        ("flac", "FLAC", "PCM_24", 0),
        ("ogg", "OGG", "VORBIS", 0),
        ("opus", "OGG", "OPUS", 0),
        ("mp3", "MP3", "MPEG_LAYER_III", 0),
    ],
)
def test_compressed_formats(tmp_path, ext, fmt, subtype, tol_samples):
    if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"this libsndfile lacks {fmt}/{subtype}")
    p = tmp_path / f"c.{ext}"
    try:
        sf.write(p, np.stack([sine(1.0, 48_000)] * 2, axis=1), 48_000, format=fmt, subtype=subtype)
    except sf.LibsndfileError as e:  # e.g. libsndfile built without an encoder
        pytest.skip(f"cannot write {fmt}/{subtype}: {e}")
    clip = load_audio(p)
    assert clip.original_sample_rate == 48_000 and clip.original_channels == 2
    assert abs(clip.waveform.shape[0] - 16_000) <= tol_samples + 1
    assert peak_hz(clip.waveform, 16_000) == pytest.approx(440.0, abs=1.0)
    assert torch.isfinite(clip.waveform).all()


def test_flac_is_lossless(tmp_path):
    x = np.round(sine(0.5, 16_000) * 32767) / 32768
    p = tmp_path / "x.flac"
    sf.write(p, x, 16_000, subtype="PCM_16")
    np.testing.assert_allclose(load_audio(p).waveform.numpy(), x, atol=1e-7)


@pytest.mark.parametrize(
    "relpath",
    ["with space/my clip.wav", "ünï cødé/声音 ñ.wav", "quote's dir/a'b.wav", "emoji 🎵/🎵.flac"],
)
def test_paths_with_spaces_and_non_ascii(tmp_path, relpath):
    p = tmp_path / relpath
    p.parent.mkdir(parents=True)
    sf.write(p, sine(0.1, 16_000), 16_000)
    for arg in (p, str(p)):
        clip = load_audio(arg)
        assert clip.path == str(p) and clip.waveform.shape == (1600,)
    assert audio_info(p).sample_rate == 16_000
    # and errors name such paths too
    missing = p.with_name("nö such " + p.name)
    with pytest.raises(AudioLoadError, match="nö such"):
        load_audio(missing)


def test_symlink_to_audio_loads(tmp_path):
    real = tmp_path / "real.wav"
    sf.write(real, sine(0.1, 16_000), 16_000)
    link = tmp_path / "link.wav"
    link.symlink_to(real)
    assert load_audio(link).waveform.shape == (1600,)


# --------------------------------------------------------------------------------------------------
# max_seconds and the length policies


@pytest.fixture
def long_clip(tmp_path) -> Path:
    """2.5 s stereo 44.1 kHz, 24-bit."""
    x = sine(2.5, 44_100)
    p = tmp_path / "long clip.wav"
    sf.write(p, np.stack([x, 0.5 * x], axis=1), 44_100, subtype="PCM_24")
    return p


def test_truncate_warns_naming_file_and_durations(long_clip):
    full = load_audio(long_clip).waveform
    assert full.shape == (40_000,)
    with pytest.warns(AudioTruncatedWarning) as rec:
        clip = load_audio(long_clip, max_seconds=1.0)
    msg = str(rec[0].message)
    assert str(long_clip) in msg and "2.50 s" in msg and "1.0" in msg
    assert issubclass(AudioTruncatedWarning, UserWarning)
    assert clip.waveform.shape == (16_000,) and clip.chunks is None
    # Decoding stops shortly past the cut, yet the result is the prefix of the full clip.
    torch.testing.assert_close(clip.waveform, full[:16_000], atol=1e-5, rtol=0)


@pytest.mark.parametrize("max_seconds", [0.1, 0.33, 1, 2.0])
def test_truncate_length_is_floor_of_max_seconds(long_clip, max_seconds):
    with pytest.warns(AudioTruncatedWarning):
        clip = load_audio(long_clip, max_seconds=max_seconds)
    assert clip.waveform.shape[0] == int(max_seconds * 16_000 + 1e-6)


def test_no_warning_when_clip_fits(long_clip):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for policy in ("truncate", "chunk", "error"):
            clip = load_audio(long_clip, max_seconds=2.5, length_policy=policy)
            assert clip.waveform.shape == (40_000,)
            load_audio(long_clip, max_seconds=10, length_policy=policy)


def test_chunk_policy_returns_windows(long_clip):
    full = load_audio(long_clip).waveform
    clip = load_audio(long_clip, max_seconds=1.0, length_policy="chunk")
    assert torch.equal(clip.waveform, full)  # the whole clip is kept
    assert [c.shape[0] for c in clip.chunks] == [16_000, 16_000, 8_000]
    assert clip.windows() == clip.chunks
    assert torch.equal(torch.cat(clip.chunks), full)


def test_chunk_policy_on_short_clip_gives_one_window(long_clip):
    clip = load_audio(long_clip, max_seconds=5.0, length_policy="chunk")
    assert len(clip.chunks) == 1 and torch.equal(clip.chunks[0], clip.waveform)


def test_chunks_is_none_without_chunk_policy(long_clip):
    clip = load_audio(long_clip)
    assert clip.chunks is None and len(clip.windows()) == 1 and clip.windows()[0] is clip.waveform
    assert clip.duration == pytest.approx(2.5) and clip.num_samples == 40_000


def test_error_policy_raises_naming_file_and_duration(long_clip):
    with pytest.raises(AudioLoadError) as ei:
        load_audio(long_clip, max_seconds=1.0, length_policy="error")
    assert type(ei.value) is AudioLoadError
    assert str(long_clip) in str(ei.value) and "2.50 s" in str(ei.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sample_rate": 0},
        {"sample_rate": -16000},
        {"sample_rate": 16000.0},
        {"sample_rate": True},
        {"max_seconds": 0},
        {"max_seconds": -1.0},
        {"max_seconds": float("nan")},
        {"max_seconds": float("inf")},
        {"max_seconds": "30"},
        {"max_seconds": 1e-6},  # shorter than one sample
        {"length_policy": "drop"},
        {"length_policy": None},
    ],
    ids=lambda kw: "-".join(f"{k}={v!r}" for k, v in kw.items()),
)
def test_bad_arguments_raise_input_error(long_clip, kwargs):
    name = next(iter(kwargs))
    with pytest.raises(MoWEInputError, match=name):
        load_audio(long_clip, **kwargs)


def _pcm16_header(frames: int, rate: int) -> bytes:
    data_bytes = frames * 2
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def test_two_hour_file_truncates_without_decoding_it_all(tmp_path):
    """A real 2 h WAV (8 kHz int16, 115 MB) is truncated to 30 s reading only the first ~30 s.

    The file is sparse: 31 s of tone, then the file is extended with zeros (digital silence) up to the
    length its header states, so it costs little disk and no time to write.
    """
    rate, frames = 8_000, 2 * 3600 * 8_000
    p = tmp_path / "two hours.wav"
    head = np.round(sine(31.0, rate, amp=0.8) * 32767).astype("<i2")
    with open(p, "wb") as f:
        f.write(_pcm16_header(frames, rate))
        f.write(head.tobytes())
        f.truncate(44 + 2 * frames)
    assert p.stat().st_size == 44 + 2 * frames
    assert audio_info(p) == AudioInfo(7200.0, 8_000, 1)

    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.warns(AudioTruncatedWarning, match="7200.00 s"):
            clip = load_audio(p, max_seconds=30)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - t0
    assert clip.waveform.shape == (480_000,) and clip.original_sample_rate == 8_000
    # Decoding the whole file as float32 would allocate 230 MB; 30 s at 8 kHz is ~1 MB (plus 16 kHz output).
    assert peak < 20e6, f"peak traced allocation {peak / 1e6:.1f} MB"
    assert elapsed < 5.0
    assert peak_hz(clip.waveform, 16_000) == pytest.approx(440.0, abs=1.0)

    with pytest.raises(AudioLoadError, match="7200.00 s"):
        load_audio(p, max_seconds=30, length_policy="error")


# --------------------------------------------------------------------------------------------------
# audio_info


def test_audio_info_reads_header(long_clip):
    info = audio_info(long_clip)
    assert isinstance(info, tuple) and isinstance(info, AudioInfo)
    duration, rate, channels = info
    assert (duration, rate, channels) == (2.5, 44_100, 2)
    assert info.duration_seconds == 2.5


def test_audio_info_does_not_decode_samples(tmp_path):
    """audio_info checks the header only, so NaN samples pass it (load_audio rejects them)."""
    p = tmp_path / "nan.wav"
    sf.write(p, np.array([0.0, np.nan, 0.0], dtype=np.float32), 16_000, subtype="FLOAT")
    assert audio_info(p) == (3 / 16_000, 16_000, 1)
    with pytest.raises(AudioLoadError, match="NaN or Inf"):
        load_audio(p)


# --------------------------------------------------------------------------------------------------
# validate_waveform / pad_batch


def test_validate_waveform_returns_float32_tensor():
    x = torch.randn(10)
    assert validate_waveform(x, name="x") is x
    y = validate_waveform(np.linspace(-1, 1, 7), name="y")  # numpy float64
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and y.shape == (7,)
    assert validate_waveform(torch.ones(3, dtype=torch.float16), name="h").dtype == torch.float32


@pytest.mark.parametrize(
    "x,fragment",
    [
        (torch.zeros(2, 5), "1-D"),
        (torch.zeros(()), "1-D"),
        (torch.zeros(0), "empty"),
        (torch.arange(5), "floating"),
        (np.arange(5), "floating"),
        (torch.tensor([0.0, float("nan"), 1.0]), "NaN or Inf samples (first at sample 1)"),
        (torch.tensor([0.0, 1.0, float("-inf")]), "NaN or Inf samples (first at sample 2)"),
        ([0.0, 1.0], "torch.Tensor or numpy array"),
    ],
    ids=["2d", "0d", "empty", "int", "numpy-int", "nan", "inf", "list"],
)
def test_validate_waveform_errors_name_the_argument(x, fragment):
    with pytest.raises(MoWEInputError) as ei:
        validate_waveform(x, name="clip_7")
    assert type(ei.value) is MoWEInputError
    assert "clip_7" in str(ei.value) and fragment in str(ei.value)


def test_pad_batch_pads_right_with_zeros():
    a, b, c = torch.randn(3), torch.randn(5), torch.randn(1)
    w, n = pad_batch([a, b, c])
    assert w.shape == (3, 5) and w.dtype == torch.float32
    assert n.dtype == torch.int64 and n.tolist() == [3, 5, 1]
    assert torch.equal(w[0, :3], a) and torch.equal(w[1], b) and torch.equal(w[2, :1], c)
    assert torch.count_nonzero(w[0, 3:]) == 0 and torch.count_nonzero(w[2, 1:]) == 0
    # The result is exactly what every encoder accepts.
    assert torch.equal(check_waveforms(w, n), n)


def test_pad_batch_accepts_numpy_and_other_float_dtypes():
    w, n = pad_batch([np.ones(2), torch.ones(4, dtype=torch.float64)])
    assert w.dtype == torch.float32 and w.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]] and n.tolist() == [2, 4]


def test_pad_batch_of_loaded_clips(long_clip, tmp_path):
    short = tmp_path / "short.wav"
    sf.write(short, sine(0.5, 16_000), 16_000)
    clips = [load_audio(long_clip), load_audio(short)]
    w, n = pad_batch([c.waveform for c in clips])
    assert w.shape == (2, 40_000) and n.tolist() == [40_000, 8_000]


@pytest.mark.parametrize(
    "batch,fragment",
    [
        ([], "empty list"),
        ([torch.ones(3), torch.ones(2, 3)], "waveforms[1]"),
        ([torch.ones(3), torch.ones(3), torch.zeros(0)], "waveforms[2]"),
        ([torch.tensor([1.0, float("nan")])], "waveforms[0] contains NaN"),
        (torch.ones(2, 3), "list of 1-D tensors"),
    ],
    ids=["empty", "2d", "zero-length", "nan", "tensor-not-list"],
)
def test_pad_batch_errors_name_the_index(batch, fragment):
    with pytest.raises(MoWEInputError) as ei:
        pad_batch(batch)
    assert type(ei.value) is MoWEInputError and fragment in str(ei.value)


def test_errors_are_value_errors():
    assert issubclass(AudioLoadError, ValueError) and issubclass(MoWEInputError, ValueError)


def test_truncate_warns_when_header_understates_length(tmp_path, monkeypatch):
    """Compressed formats may estimate their length; the warning follows what was actually decoded."""
    p = tmp_path / "a.wav"
    sf.write(p, sine(2.0, 16_000), 16_000)
    real_header = mowe_audio._header
    monkeypatch.setattr(mowe_audio, "_header", lambda f, name: (*real_header(f, name)[:2], 8_000))  # "0.5 s"
    with pytest.warns(AudioTruncatedWarning, match="2.00 s long"):
        clip = load_audio(p, max_seconds=1.0)
    assert clip.waveform.shape == (16_000,)


def test_nul_byte_in_path_is_an_audio_load_error():
    import pytest as _pytest

    from mowe.data.audio import audio_info, load_audio
    from mowe.errors import AudioLoadError

    for fn in (load_audio, audio_info):
        with _pytest.raises(AudioLoadError, match="cannot access audio file"):
            fn("a\x00b.wav")

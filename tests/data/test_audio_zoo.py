"""The bad-input zoo: every malformed file load_audio may meet, generated into tmp_path at test time.

Each case either raises exactly :class:`AudioLoadError` whose message contains the path (and a fragment
saying what is wrong), or loads with checked values. No binary fixtures are committed: real files are
written with soundfile and then cut, patched or replaced.

libsndfile behaviour pinned here (libsndfile 1.2):

* a WAV cut inside its header fails to open; one cut right after the ``data`` marker opens with 0 frames;
* a WAV whose header claims more data than the file holds loads the frames that are there;
* a FLAC cut short fails while decoding ("lost sync"), although its header reads fine;
* an Ogg/Vorbis cut short opens with 0 frames; a cut MP3 decodes the part that is there;
* content, not the extension, picks the decoder: a real MP3 named ``.wav`` loads.
"""

from __future__ import annotations

import io
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mowe.data.audio import AudioClip, audio_info, load_audio
from mowe.errors import AudioLoadError

RATE = 16_000
REF = np.round(0.5 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE) * 32767) / 32768  # 1 s, 16-bit exact


def encode(x: np.ndarray, fmt: str = "WAV", subtype: str = "PCM_16", rate: int = RATE) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


WAV = encode(REF)  # 44-byte header + 32000 bytes of data


def put(tmp: Path, name: str, data: bytes) -> Path:
    p = tmp / name
    p.write_bytes(data)
    return p


def patched(offset: int, fmt: str, value: int) -> Callable[[Path], Path]:
    """A builder writing WAV with one header field overwritten."""

    def build(tmp: Path) -> Path:
        b = bytearray(WAV)
        struct.pack_into(fmt, b, offset, value)
        return put(tmp, "patched.wav", bytes(b))

    return build


def with_nonfinite(values: dict[int, float], subtype: str = "FLOAT", channels: int = 1, n: int = 2000):
    def build(tmp: Path) -> Path:
        x = np.zeros((n, channels))
        for i, v in values.items():
            x[i, channels - 1] = v
        p = tmp / "nonfinite.wav"
        sf.write(p, x, RATE, subtype=subtype)
        return p

    return build


def compressed_cut(fmt: str, subtype: str, ext: str, keep: float) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
            pytest.skip(f"libsndfile without {fmt}/{subtype}")
        data = encode(np.tile(REF, 3), fmt, subtype)
        return put(tmp, f"cut.{ext}", data[: int(len(data) * keep)])

    return build


def fifo(tmp: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this platform")
    p = tmp / "pipe.wav"
    os.mkfifo(p)
    return p


def unreadable(tmp: Path) -> Path:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root can read a chmod 000 file")
    p = put(tmp, "secret.wav", WAV)
    p.chmod(0)
    return p


def dangling_link(tmp: Path) -> Path:
    p = tmp / "dangling.wav"
    p.symlink_to(tmp / "gone.wav")
    return p


def directory(tmp: Path) -> Path:
    p = tmp / "folder.wav"
    p.mkdir()
    return p


def mp3_named_wav(tmp: Path) -> Path:
    if "MP3" not in sf.available_formats() or "MPEG_LAYER_III" not in sf.available_subtypes("MP3"):
        pytest.skip("libsndfile without MP3")
    return put(tmp, "really an mp3.wav", encode(REF, "MP3", "MPEG_LAYER_III"))


# --------------------------------------------------------------------------------------------------
# Checks for the cases that load


def loads_prefix(n: int) -> Callable[[AudioClip], None]:
    def check(clip: AudioClip) -> None:
        assert clip.waveform.shape == (n,)
        np.testing.assert_array_equal(clip.waveform.numpy(), REF[:n].astype(np.float32))

    return check


def loads_silence(clip: AudioClip) -> None:
    assert clip.waveform.shape == (RATE,) and torch.count_nonzero(clip.waveform) == 0


def loads_tone(min_samples: int, max_samples: int) -> Callable[[AudioClip], None]:
    def check(clip: AudioClip) -> None:
        w = clip.waveform
        assert min_samples <= w.shape[0] <= max_samples
        assert torch.isfinite(w).all() and float(w.abs().max()) > 0.1
        spec = np.abs(np.fft.rfft(w.numpy().astype(np.float64)))
        assert np.argmax(spec) * RATE / w.shape[0] == pytest.approx(440, abs=5)

    return check


# --------------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class Case:
    """One zoo entry.

    Attributes:
        id: test id, and the name in the README table.
        build: writes the file into a tmp dir, returns its path.
        error: regex the AudioLoadError message must match (``re.search``), or None if the file must load.
        check: for loading cases, asserts on the clip.
        info_error: whether :func:`audio_info` (header only) rejects it too.
        libsndfile: the error comes from libsndfile and must be chained as ``__cause__`` with its message
        kept.
    """

    id: str
    build: Callable[[Path], Path]
    error: str | None = None
    check: Callable[[AudioClip], None] | None = None
    info_error: bool = True
    libsndfile: bool = False


ZOO = [
    # -- not a readable regular file (checked before libsndfile sees it; a FIFO would block it forever)
    Case("missing-file", lambda t: t / "nope.wav", error="does not exist"),
    Case("dangling-symlink", dangling_link, error="does not exist"),
    Case("directory", directory, error="is a directory"),
    Case("named-pipe", fifo, error="not a regular file"),
    Case("zero-bytes", lambda t: put(t, "empty.wav", b""), error=r"empty \(0 bytes\)"),
    Case("unreadable", unreadable, error="not readable"),
    # -- not audio
    Case(
        "text-file",
        lambda t: put(t, "notes.wav", b"hello, this is text\n" * 20),
        error="Format not recognised",
        libsndfile=True,
    ),
    Case(
        "random-bytes",
        lambda t: put(t, "noise.wav", np.random.default_rng(0).bytes(4096)),
        error="Format not recognised",
        libsndfile=True,
    ),
    Case(
        "fake-mp3-id3",
        lambda t: put(t, "fake.wav", b"ID3" + np.random.default_rng(1).bytes(4096)),
        error="cannot read audio file",
        libsndfile=True,
    ),
    Case(
        "riff-then-garbage",
        lambda t: put(t, "riff.wav", b"RIFF\x10\x00\x00\x00WAVE" + b"\xff" * 64),
        error="cannot read audio file",
        libsndfile=True,
    ),
    # -- WAV cut inside the header
    *[
        Case(
            f"header-cut-at-{n}",
            lambda t, n=n: put(t, "cut.wav", WAV[:n]),
            error="cannot read audio file",
            libsndfile=True,
        )
        for n in (4, 12, 20, 36, 40)
    ],
    Case("header-only-no-data", lambda t: put(t, "hdr.wav", WAV[:44]), error="no audio frames"),
    Case("zero-frames", lambda t: put(t, "zero.wav", encode(np.zeros(0))), error="no audio frames"),
    # found by the atheris harness: resampling 1 frame at 96 kHz gives 0 samples at 16 kHz
    Case(
        "one-frame-at-96k",
        lambda t: put(t, "one.wav", encode(np.ones(1) * 0.5, rate=96_000)),
        error=r"too short: 1 frame\(s\) at 96000 Hz",
        info_error=False,
    ),
    # -- corrupt header fields
    Case("sample-rate-1hz", patched(24, "<I", 1), error="sample rate of 1 Hz"),
    Case("sample-rate-0", patched(24, "<I", 0), error="cannot read audio file", libsndfile=True),
    Case("channels-0", patched(22, "<H", 0), error="cannot read audio file", libsndfile=True),
    Case("unknown-format-tag", patched(20, "<H", 0x1234), error="cannot read audio file", libsndfile=True),
    # -- header claims more data than the file holds: libsndfile clamps to the bytes present
    Case("data-cut-midway", lambda t: put(t, "short.wav", WAV[: 44 + 2 * 5000]), check=loads_prefix(5000)),
    Case(
        "data-cut-mid-sample", lambda t: put(t, "odd.wav", WAV[: 44 + 2 * 5000 + 1]), check=loads_prefix(5000)
    ),
    Case("data-size-claims-4gb", patched(40, "<I", 0xFFFFFFF0), check=loads_prefix(RATE)),
    Case("riff-size-zero", patched(4, "<I", 0), check=loads_prefix(RATE)),
    Case("trailing-junk", lambda t: put(t, "junk.wav", WAV + b"junk" * 100), check=loads_prefix(RATE)),
    # -- non-finite samples (float WAVs store them verbatim)
    Case(
        "nan-sample",
        with_nonfinite({100: np.nan}),
        error=r"NaN or Inf samples \(first at frame 100\b",
        info_error=False,
    ),
    Case(
        "all-nan",
        lambda t: (sf.write(t / "allnan.wav", np.full(500, np.nan), RATE, subtype="FLOAT"), t / "allnan.wav")[
            1
        ],
        error="NaN or Inf",
        info_error=False,
    ),
    Case("inf-float64", with_nonfinite({7: np.inf}, subtype="DOUBLE"), error="NaN or Inf", info_error=False),
    Case(
        "neg-inf-2nd-channel",
        with_nonfinite({3: -np.inf}, channels=2),
        error="first at frame 3",
        info_error=False,
    ),
    Case(
        "nan-after-first-block",
        with_nonfinite({100_000: np.nan}, n=150_000),
        error="first at frame 100000",
        info_error=False,
    ),
    # finite but near float32's max: downmixing is done in float64; the resampling filter's overshoot
    # can still overflow, which is an error rather than Inf samples in the output
    Case(
        "float-max-stereo-same-rate",
        lambda t: put(t, "max.wav", encode(np.full((100, 2), 3e38), subtype="FLOAT")),
        check=lambda clip: np.testing.assert_allclose(clip.waveform.numpy(), 3e38, rtol=1e-6),
    ),
    Case(
        "float-max-resampled",
        lambda t: put(t, "max.wav", encode(np.tile([3e38, -3e38], 500), subtype="FLOAT", rate=44_100)),
        error="too large to resample",
        info_error=False,
    ),
    # -- valid audio that looks odd
    Case("all-silence", lambda t: put(t, "quiet.wav", encode(np.zeros(RATE))), check=loads_silence),
    Case("real-mp3-named-wav", mp3_named_wav, check=loads_tone(15_000, 17_200)),
    # -- compressed streams cut short
    Case(
        "flac-cut-in-half",
        compressed_cut("FLAC", "PCM_16", "flac", 0.5),
        error="lost sync",
        info_error=False,
        libsndfile=True,
    ),
    # where the cut falls decides which of the two messages a cut Vorbis stream gets
    Case(
        "vorbis-cut-in-half", compressed_cut("OGG", "VORBIS", "ogg", 0.5), error="no audio frames|malformed"
    ),
    Case(
        "mp3-cut-in-half",
        compressed_cut("MP3", "MPEG_LAYER_III", "mp3", 0.5),
        check=loads_tone(8_000, 40_000),
        info_error=False,
    ),
]


@pytest.mark.parametrize("case", ZOO, ids=[c.id for c in ZOO])
def test_zoo_load_audio(tmp_path, case: Case):
    path = case.build(tmp_path)
    if case.error is None:
        clip = load_audio(path)
        assert clip.waveform.dtype == torch.float32 and clip.waveform.dim() == 1
        case.check(clip)
        return
    with pytest.raises(AudioLoadError) as ei:
        load_audio(path)
    err = ei.value
    assert type(err) is AudioLoadError
    assert str(path) in str(err), str(err)
    assert re.search(case.error, str(err)), str(err)
    if case.libsndfile:
        assert isinstance(err.__cause__, RuntimeError), repr(err.__cause__)  # LibsndfileError is one
        assert str(err.__cause__) in str(err)


@pytest.mark.parametrize("case", ZOO, ids=[c.id for c in ZOO])
def test_zoo_audio_info(tmp_path, case: Case):
    path = case.build(tmp_path)
    if case.error is not None and case.info_error:
        with pytest.raises(AudioLoadError) as ei:
            audio_info(path)
        assert type(ei.value) is AudioLoadError and str(path) in str(ei.value)
    else:
        duration, rate, channels = audio_info(path)
        assert duration > 0 and rate >= 1000 and channels >= 1


@pytest.mark.parametrize("policy", ["truncate", "chunk", "error"])
def test_zoo_errors_do_not_depend_on_length_policy(tmp_path, policy):
    bad = put(tmp_path, "cut.wav", WAV[:20])
    with pytest.raises(AudioLoadError, match="cut.wav"):
        load_audio(bad, max_seconds=0.5, length_policy=policy)
    nan = with_nonfinite({10: np.nan})(tmp_path)  # 0.125 s
    max_seconds = 1.0 if policy == "error" else 0.05  # "error" would reject the length before decoding
    with pytest.raises(AudioLoadError, match="NaN or Inf"):
        load_audio(nan, max_seconds=max_seconds, length_policy=policy)


def test_nan_beyond_the_truncation_point_is_not_read(tmp_path):
    """Truncation decodes only the kept frames (+50 ms), so a NaN far past the cut goes unseen."""
    path = with_nonfinite({1800: np.nan})(tmp_path)  # at 0.1125 s
    with pytest.warns(UserWarning, match="truncated"):
        clip = load_audio(path, max_seconds=0.01)
    assert clip.waveform.shape == (160,)
    with pytest.raises(AudioLoadError, match="NaN or Inf"):
        load_audio(path, max_seconds=0.01, length_policy="chunk")


def test_unreadable_file_even_as_root(tmp_path, monkeypatch):
    """The permission check, exercised where chmod cannot deny root (the ``unreadable`` case skips)."""
    path = put(tmp_path, "locked.wav", WAV)
    monkeypatch.setattr("mowe.data.audio.os.access", lambda p, mode: False)
    with pytest.raises(AudioLoadError, match="not readable") as ei:
        load_audio(path)
    assert str(path) in str(ei.value)

"""Long audio files as a stream of fixed-length windows, in bounded memory, up to a maximum duration.

:func:`stream_audio` decodes block by block (the same decoder and checks as
:func:`mowe.data.audio.load_audio`) and resamples with soxr's streaming resampler, so a 2-hour file costs one
window and one block of memory instead of the whole clip (``tests/data/test_chunk_memory.py`` measures it).
Shape legend: ``s`` samples.

Why it matters: a 60-minute clip held whole at 16 kHz float32 is 230 MB; decoding a 44.1 kHz stereo source
whole first holds the decoded float32 blocks (1.27 GB for stereo before the downmix, 635 MB after) and then
the resampler's output beside them; streamed, each stays one ``read_frames`` block and one window.

A maximum duration (``max_duration_seconds``) is checked twice: against the header before any sample is
decoded, and against the samples actually decoded (a compressed file's header only estimates its length), so a
file past the limit raises :class:`~mowe.errors.AudioTooLongError` naming the limit, the duration and the
file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np
import soundfile as sf
import soxr
import torch

from mowe.constants import SAMPLE_RATE
from mowe.data.audio import (
    _BLOCK_FRAMES,
    _check_load_args,
    _check_regular_file,
    _decoder_errors,
    _header,
    _mono_blocks,
)
from mowe.errors import AudioLoadError, AudioTooLongError, MoWEInputError

__all__ = ["audio_too_long", "check_duration", "stream_audio"]


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def audio_too_long(
    source: str,
    duration: float,
    limit: float,
    *,
    option: str = "max_duration_seconds",
    at_least: bool = False,
) -> AudioTooLongError:
    """The error for a clip past the maximum: names ``source``, its duration and the limit (and the option
    that sets it)."""
    more = "at least " if at_least else ""
    return AudioTooLongError(
        f"{source} is {more}{duration:.1f} s long ({_clock(duration)}), more than the maximum duration of "
        f"{limit:g} s ({_clock(limit)}; {option})",
        limit_seconds=float(limit),
        duration_seconds=float(duration),
        source=source,
    )


def _check_limit(max_duration_seconds: object) -> float | None:
    if max_duration_seconds is None:
        return None
    if (
        isinstance(max_duration_seconds, bool)
        or not isinstance(max_duration_seconds, (int, float))
        or not math.isfinite(max_duration_seconds)
        or max_duration_seconds <= 0
    ):
        raise MoWEInputError(
            f"max_duration_seconds must be a positive number or None, got {max_duration_seconds!r}"
        )
    return float(max_duration_seconds)


def check_duration(
    path: str | os.PathLike[str] | bytes,
    max_duration_seconds: float | None,
    *,
    option: str = "max_duration_seconds",
) -> float:
    """The file's duration by its header (no sample decoded); raises if it is past ``max_duration_seconds``
    (for formats whose header states the length exactly: not MP3, whose length is only estimated there).

    Raises:
        AudioTooLongError: the header's duration is past the limit (names the file, both durations and
            ``option``).
        AudioLoadError: as :func:`mowe.data.audio.audio_info`.
    """
    limit = _check_limit(max_duration_seconds)
    name = _check_regular_file(path)
    with _decoder_errors(name), sf.SoundFile(os.fsencode(name)) as f:
        src_rate, _, frames = _header(f, name)
        exact = _exact_length(f)
    duration = frames / src_rate
    if limit is not None and exact and duration > limit + 1e-9:
        raise audio_too_long(f"audio file '{name}'", duration, limit, option=option)
    return duration


def _exact_length(f: sf.SoundFile) -> bool:
    """Whether the header's frame count is the file's (WAV, FLAC, Ogg...); an MP3's is an estimate from its
    bit rate or Xing header, so its limit is checked on the decoded samples only (a clip just under the limit
    is not refused on a rounded-up estimate)."""
    return str(f.format).upper() not in ("MPEG", "MP3")


def stream_audio(
    path: str | os.PathLike[str] | bytes,
    *,
    window_seconds: float,
    sample_rate: int = SAMPLE_RATE,
    read_frames: int = _BLOCK_FRAMES,
    max_duration_seconds: float | None = None,
    option: str = "max_duration_seconds",
) -> Iterator[torch.Tensor]:
    """Yield a long file as consecutive mono windows of ``window_seconds``, decoding as it goes.

    The same windows as ``load_audio(path, max_seconds=window_seconds, length_policy="chunk").chunks`` (up to
    float rounding of the streaming resampler), but memory stays bounded by one window and one decoded block
    whatever the file's length: a 2-hour file never exists in memory as a whole. The windows do not depend on
    ``read_frames`` (bit for bit: ``tests/data/test_long_audio_stream.py``).

    Args:
        path: the audio file (str, bytes or path-like; non-UTF-8 names work).
        window_seconds: window length; every window but the last has exactly
            ``floor(window_seconds * sample_rate)`` samples.
        sample_rate: output rate in Hz (soxr "HQ" streaming resampler when the file's rate differs).
        read_frames: source frames decoded per read (the read-chunk size).
        max_duration_seconds: longest file accepted (None: any); checked against the header before decoding
            and against the decoded samples as they come.
        option: how the limit is named in the error (e.g. ``"--max-audio-seconds"``).

    Yields:
        ``(s_i,)`` float32 tensors (new memory each, safe to keep).

    Raises:
        AudioLoadError: as :func:`load_audio` (missing, special or corrupt file, NaN/Inf samples, no frames),
            naming the file; raised when the problem is reached.
        AudioTooLongError: the file is longer than ``max_duration_seconds`` (by its header: before the first
            window; by its decoded samples: when the limit is crossed).
        MoWEInputError: ``sample_rate``, ``window_seconds``, ``read_frames`` or ``max_duration_seconds`` is
            invalid.
    """
    window = _check_load_args(sample_rate, window_seconds, "chunk")
    assert window is not None
    if isinstance(read_frames, bool) or not isinstance(read_frames, int) or read_frames < 1:
        raise MoWEInputError(f"read_frames must be a positive int, got {read_frames!r}")
    limit = _check_limit(max_duration_seconds)
    sample_rate = int(sample_rate)
    name = _check_regular_file(path)
    # One output sample of slack: resampling may round a clip of exactly the limit up by one sample.
    max_out = None if limit is None else math.floor(limit * sample_rate + 1e-6) + 1
    with _decoder_errors(name), sf.SoundFile(os.fsencode(name)) as f:
        src_rate, _, frames = _header(f, name)
        if limit is not None and _exact_length(f) and frames / src_rate > limit + 1e-9:
            raise audio_too_long(f"audio file '{name}'", frames / src_rate, limit, option=option)
        rs = (
            None
            if src_rate == sample_rate
            else soxr.ResampleStream(src_rate, sample_rate, 1, dtype="float32", quality="HQ")
        )
        buf = np.empty(window, dtype=np.float32)
        fill = 0
        emitted = 0
        total = 0

        def pieces() -> Iterator[np.ndarray]:
            for block in _mono_blocks(f, name, None, read_frames):
                yield block if rs is None else rs.resample_chunk(block)
            if rs is not None:
                yield rs.resample_chunk(np.zeros(0, dtype=np.float32), last=True)

        for out in pieces():
            if out.size and not np.isfinite(out).all():
                raise AudioLoadError(
                    f"audio file '{name}' has samples too large to resample without overflow "
                    f"to Inf (float audio should lie in [-1, 1])"
                )
            total += out.shape[0]
            if max_out is not None and total > max_out:
                raise audio_too_long(
                    f"audio file '{name}'", total / sample_rate, limit, option=option, at_least=True
                )
            pos = 0
            while pos < out.shape[0]:
                take = min(window - fill, out.shape[0] - pos)
                buf[fill : fill + take] = out[pos : pos + take]
                fill += take
                pos += take
                if fill == window:
                    yield torch.from_numpy(buf.copy())
                    emitted += 1
                    fill = 0
        if fill:
            yield torch.from_numpy(buf[:fill].copy())
        elif emitted == 0:
            raise AudioLoadError(f"audio file '{name}' has no audio frames (header only, or data cut off)")

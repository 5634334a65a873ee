"""Long audio files as a stream of fixed-length windows, in bounded memory.

:func:`stream_audio` decodes block by block (the same decoder and checks as :func:`mowe.data.audio.load_audio`)
and resamples with soxr's streaming resampler, so a 2-hour file costs one window and one block of memory
instead of the whole clip (``tests/data/test_chunk_memory.py`` measures it). Shape legend: ``s`` samples.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import soundfile as sf
import soxr
import torch

from mowe.constants import SAMPLE_RATE
from mowe.data.audio import _check_load_args, _check_regular_file, _decoder_errors, _header, _mono_blocks
from mowe.errors import AudioLoadError

__all__ = ["stream_audio"]


def stream_audio(
    path: str | os.PathLike[str] | bytes,
    *,
    window_seconds: float,
    sample_rate: int = SAMPLE_RATE,
) -> Iterator[torch.Tensor]:
    """Yield a long file as consecutive mono windows of ``window_seconds``, decoding as it goes.

    The same windows as ``load_audio(path, max_seconds=window_seconds, length_policy="chunk").chunks`` (up to
    float rounding of the streaming resampler), but memory stays bounded by one window and one decoded block
    whatever the file's length: a 2-hour file never exists in memory as a whole.

    Args:
        path: the audio file (str, bytes or path-like; non-UTF-8 names work).
        window_seconds: window length; every window but the last has exactly
            ``floor(window_seconds * sample_rate)`` samples.
        sample_rate: output rate in Hz (soxr "HQ" streaming resampler when the file's rate differs).

    Yields:
        ``(s_i,)`` float32 tensors (new memory each, safe to keep).

    Raises:
        AudioLoadError: as :func:`load_audio` (missing, special or corrupt file, NaN/Inf samples, no frames),
            naming the file; raised when the problem is reached.
        MoWEInputError: ``sample_rate`` or ``window_seconds`` is invalid.
    """
    window = _check_load_args(sample_rate, window_seconds, "chunk")
    assert window is not None
    sample_rate = int(sample_rate)
    name = _check_regular_file(path)
    with _decoder_errors(name), sf.SoundFile(os.fsencode(name)) as f:
        src_rate, _, _ = _header(f, name)
        rs = None if src_rate == sample_rate else soxr.ResampleStream(src_rate, sample_rate, 1, dtype="float32",
                                                                      quality="HQ")
        buf = np.empty(window, dtype=np.float32)
        fill = 0
        emitted = 0

        def pieces() -> Iterator[np.ndarray]:
            for block in _mono_blocks(f, name, None):
                yield block if rs is None else rs.resample_chunk(block)
            if rs is not None:
                yield rs.resample_chunk(np.zeros(0, dtype=np.float32), last=True)

        for out in pieces():
            if out.size and not np.isfinite(out).all():
                raise AudioLoadError(f"audio file '{name}' has samples too large to resample without overflow "
                                     f"to Inf (float audio should lie in [-1, 1])")
            pos = 0
            while pos < out.shape[0]:
                take = min(window - fill, out.shape[0] - pos)
                buf[fill:fill + take] = out[pos:pos + take]
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

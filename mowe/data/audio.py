"""Load, downmix, resample and validate waveforms (soundfile + soxr; no torchaudio).

Shape legend: ``b`` batch, ``s`` samples, ``c`` channels.

Every model in mowe consumes 16 kHz mono float32 (``mowe.encoders.base.SAMPLE_RATE``). This module
turns files into that, and checks in-memory arrays before they reach an encoder:

* :func:`load_audio` reads any format libsndfile decodes (WAV 8/16/24/32-bit int and 32/64-bit float,
  FLAC, OGG/Vorbis, Opus, MP3, ...), averages all channels to mono, resamples with soxr ("HQ") and
  optionally caps the length (truncate with a warning, split into windows, or refuse).
* :func:`audio_info` reads only the header: duration, sample rate, channels.
* :func:`validate_waveform` and :func:`pad_batch` check and batch in-memory clips.

Failure contract: anything wrong with a *file* raises exactly :class:`~mowe.errors.AudioLoadError`
(a ``ValueError``) whose message contains the path; a libsndfile error is kept in the message and chained
(``raise ... from e``). Anything wrong with an *argument or in-memory tensor* raises
:class:`~mowe.errors.MoWEInputError`. Memory use follows the audio actually decoded, not what the header
claims: files are decoded block by block, so a corrupt header that claims billions of frames cannot trigger
a huge allocation, and with ``max_seconds`` + ``"truncate"`` only the needed frames (+50 ms) are decoded.
A path that is not a regular file (a FIFO, a device) is refused before libsndfile opens it, so it cannot
block.

libsndfile facts this relies on (checked by ``tests/data/test_audio_zoo.py``):

* A WAV whose data chunk is shorter than its header claims opens with the frame count clamped to the bytes
  actually present, so it loads what is there; a WAV cut inside the header (before the ``data`` chunk
  marker) fails to open; a header cut right after the ``data`` marker opens with zero frames, which is
  reported as "no audio frames".
* A FLAC cut short fails while decoding ("flac decoder lost sync") even though its header reads fine; a
  cut MP3 decodes the part that is there; a cut Ogg/Vorbis stream either fails to open or reports 0 frames.
* Files are recognised by content, not extension: a real MP3 named ``.wav`` loads.
* Float WAVs are returned unscaled (no clipping), so NaN/Inf survive decoding; they are rejected here, as is
  a finite float file whose values near float32's max overflow in the resampling filter.

Example:
    >>> clip = load_audio("speech.flac", max_seconds=30)            # doctest: +SKIP
    >>> clip.waveform.shape, clip.sample_rate                        # doctest: +SKIP
    (torch.Size([480000]), 16000)
    >>> waves, lengths = pad_batch([clip.waveform, other.waveform])  # doctest: +SKIP
"""

from __future__ import annotations

import io
import math
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import soundfile as sf
import soxr
import torch

from mowe.constants import SAMPLE_RATE
from mowe.errors import AudioLoadError, MoWEInputError

__all__ = [
    "AudioClip",
    "AudioInfo",
    "AudioTruncatedWarning",
    "LengthPolicy",
    "audio_info",
    "audio_info_bytes",
    "load_audio",
    "load_audio_bytes",
    "pad_batch",
    "validate_waveform",
]

LengthPolicy = Literal["truncate", "chunk", "error"]
_POLICIES = ("truncate", "chunk", "error")

# Frames decoded per read call. Bounds the allocation a lying header can cause and lets the NaN check
# stop at the first bad block instead of after decoding the whole file.
_BLOCK_FRAMES = 1 << 16
# Source rates outside this range are treated as a corrupt header: a 1 Hz "audio" file resampled to
# 16 kHz would multiply its size by 16000.
_MIN_SOURCE_RATE = 1_000
_MAX_SOURCE_RATE = 1_000_000
# Extra source audio decoded past a truncation point so the resampler's filter sees real signal at the
# cut instead of an artificial end; the truncated clip then matches a prefix of the full clip.
_TRUNCATE_MARGIN_SECONDS = 0.05


class AudioTruncatedWarning(UserWarning):
    """A clip was longer than ``max_seconds`` and was cut (``length_policy="truncate"``)."""


@dataclass
class AudioClip:
    """A decoded clip, ready for an encoder.

    Attributes:
        waveform: ``(s,)`` float32 mono samples at ``sample_rate`` (the whole clip, or its first
            ``max_seconds`` under the ``"truncate"`` policy).
        sample_rate: rate of ``waveform`` in Hz (the ``sample_rate`` asked of :func:`load_audio`).
        path: the file it came from, as given.
        original_sample_rate: the file's own sample rate.
        original_channels: the file's channel count before downmixing.
        chunks: under the ``"chunk"`` policy, consecutive ``(s_i,)`` windows of at most ``max_seconds``
            covering ``waveform`` (views into it, the last one possibly shorter; a single window when the
            clip already fits); None under the other policies.
    """

    waveform: torch.Tensor
    sample_rate: int
    path: str
    original_sample_rate: int
    original_channels: int
    chunks: list[torch.Tensor] | None = None

    @property
    def num_samples(self) -> int:
        """Number of samples in ``waveform``."""
        return int(self.waveform.shape[0])

    @property
    def duration(self) -> float:
        """Length of ``waveform`` in seconds."""
        return self.num_samples / self.sample_rate

    def windows(self) -> list[torch.Tensor]:
        """The clip as a list of windows: ``chunks`` if it was chunked, else ``[waveform]``."""
        return list(self.chunks) if self.chunks is not None else [self.waveform]


class AudioInfo(NamedTuple):
    """Header facts of an audio file (a plain tuple: ``duration, rate, channels = audio_info(p)``)."""

    duration_seconds: float
    sample_rate: int
    channels: int


# --------------------------------------------------------------------------------------------------
# Files


def load_audio(
    path: str | os.PathLike[str],
    *,
    sample_rate: int = SAMPLE_RATE,
    max_seconds: float | None = None,
    length_policy: LengthPolicy = "truncate",
) -> AudioClip:
    """Read an audio file as mono float32 at ``sample_rate``.

    Channels are averaged (any count), integer formats are scaled to ``[-1, 1)``, float formats are kept
    as stored, and the result is resampled with soxr at "HQ" quality when the rates differ.

    Args:
        path: file to read (any format libsndfile recognises by content; the extension is ignored).
        sample_rate: output rate in Hz.
        max_seconds: longest clip to return, or None for no limit.
        length_policy: what to do when the file is longer than ``max_seconds``:
            ``"truncate"`` keeps the first ``max_seconds`` (decoding only those frames) and warns with
            :class:`AudioTruncatedWarning`; ``"chunk"`` returns the whole clip plus ``chunks``, windows of
            ``max_seconds``; ``"error"`` raises :class:`AudioLoadError`.

    Returns:
        An :class:`AudioClip` whose ``waveform`` has shape ``(s,)``.

    Raises:
        AudioLoadError: the file is missing, a directory or other non-regular file, empty, not audio,
            corrupt, has no frames, has an implausible sample rate (outside 1 kHz to 1 MHz), contains
            NaN or Inf samples, is shorter than one output sample, overflows when resampled, or is too
            long under ``"error"``. The message names the file and keeps libsndfile's own message.
        MoWEInputError: ``sample_rate``, ``max_seconds`` or ``length_policy`` is invalid.

    Example:
        >>> clip = load_audio("call.wav", max_seconds=30, length_policy="chunk")  # doctest: +SKIP
        >>> [w.shape[0] for w in clip.windows()]                                 # doctest: +SKIP
        [480000, 480000, 123456]
    """
    max_samples = _check_load_args(sample_rate, max_seconds, length_policy)
    name = _check_regular_file(path)
    return _load(os.fsencode(name), name, int(sample_rate), max_seconds, max_samples, length_policy)


def load_audio_bytes(
    data: bytes,
    *,
    name: str,
    sample_rate: int = SAMPLE_RATE,
    max_seconds: float | None = None,
    length_policy: LengthPolicy = "truncate",
) -> AudioClip:
    """:func:`load_audio` for an encoded file held in memory (e.g. a Hugging Face ``Audio`` column's
    ``bytes``).

    The bytes go through the same decoder, downmix and resampler as a file on disk, so a clip read from a
    dataset's bytes is bit-identical to the same file read by :func:`load_audio`.

    Args:
        data: the encoded file (WAV, FLAC, OGG, MP3, ...).
        name: what error messages call it, e.g. ``"dataset 'train', row 3, column 'audio'"``.
        sample_rate, max_seconds, length_policy: as :func:`load_audio`.

    Raises:
        AudioLoadError: as :func:`load_audio` (empty bytes too); the message contains ``name``.
        MoWEInputError: an invalid argument.
    """
    max_samples = _check_load_args(sample_rate, max_seconds, length_policy)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AudioLoadError(f"audio file '{name}': expected encoded bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise AudioLoadError(f"audio file '{name}' is empty (0 bytes)")
    return _load(io.BytesIO(bytes(data)), name, int(sample_rate), max_seconds, max_samples, length_policy)


def _load(
    source: bytes | io.BytesIO,
    name: str,
    sample_rate: int,
    max_seconds: float | None,
    max_samples: int | None,
    length_policy: LengthPolicy,
) -> AudioClip:
    """Decode ``source`` (a path as bytes, or a file object); see :func:`load_audio`."""
    with _decoder_errors(name), sf.SoundFile(source) as f:
        src_rate, channels, frames = _header(f, name)
        over = max_seconds is not None and frames > max_seconds * src_rate
        limit = None
        if over and length_policy == "error":
            raise AudioLoadError(
                f"audio file '{name}' is {frames / src_rate:.2f} s long, more than "
                f"max_seconds={max_seconds} (length_policy='error')"
            )
        if over and length_policy == "truncate":
            limit = math.ceil((max_seconds + _TRUNCATE_MARGIN_SECONDS) * src_rate)
        mono = _read_mono(f, name, limit)

    if mono.shape[0] == 0:
        raise AudioLoadError(f"audio file '{name}' has no audio frames (header only, or data cut off)")
    if src_rate != sample_rate:
        src, mono = mono, soxr.resample(mono, src_rate, sample_rate, quality="HQ")
        if mono.shape[0] == 0:  # e.g. 3 frames at 96 kHz: less than one sample at 16 kHz
            raise AudioLoadError(
                f"audio file '{name}' is too short: {src.shape[0]} frame(s) at {src_rate} Hz is less than "
                f"one "
                f"sample at {sample_rate} Hz"
            )
        if not np.isfinite(mono).all():  # the filter's overshoot on samples near float32's max
            raise AudioLoadError(
                f"audio file '{name}' has samples too large to resample without overflow to Inf "
                f"(largest {float(np.abs(src).max()):.3g}; float audio should lie in [-1, 1])"
            )
        del src
    waveform = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))

    chunks = None
    if max_samples is not None and length_policy == "truncate" and waveform.shape[0] > max_samples:
        # Warn when the header said "too long", or when it under-stated the length (compressed formats
        # estimate it) and decoding found more; not for the one extra sample resampling rounding can add
        # to a clip of exactly max_seconds.
        if over or waveform.shape[0] > max_samples + 1:
            seconds = max(frames / src_rate, waveform.shape[0] / sample_rate)
            warnings.warn(
                f"audio file '{name}' is {seconds:.2f} s long; truncated to the first "
                f"{max_seconds} s (max_seconds={max_seconds})",
                AudioTruncatedWarning,
                stacklevel=2,
            )
        waveform = waveform[:max_samples].clone()  # clone: don't keep the decoded margin alive
    elif max_samples is not None and length_policy == "chunk":
        chunks = list(torch.split(waveform, max_samples))

    return AudioClip(
        waveform=waveform,
        sample_rate=sample_rate,
        path=name,
        original_sample_rate=src_rate,
        original_channels=channels,
        chunks=chunks,
    )


def audio_info(path: str | os.PathLike[str]) -> AudioInfo:
    """Read a file's header without decoding its samples.

    Catches everything :func:`load_audio` would except problems only decoding reveals (NaN/Inf samples,
    a compressed stream that is corrupt past its header).

    Args:
        path: file to inspect.

    Returns:
        ``AudioInfo(duration_seconds, sample_rate, channels)``, a tuple.

    Raises:
        AudioLoadError: as :func:`load_audio`; the message names the file.
    """
    name = _check_regular_file(path)
    return _info(os.fsencode(name), name)


def audio_info_bytes(data: bytes, *, name: str) -> AudioInfo:
    """:func:`audio_info` for an encoded file held in memory (only the header is parsed).

    Raises:
        AudioLoadError: empty or unreadable bytes; the message contains ``name``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AudioLoadError(f"audio file '{name}': expected encoded bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise AudioLoadError(f"audio file '{name}' is empty (0 bytes)")
    return _info(io.BytesIO(bytes(data)), name)


def _info(source: bytes | io.BytesIO, name: str) -> AudioInfo:
    with _decoder_errors(name), sf.SoundFile(source) as f:
        src_rate, channels, frames = _header(f, name)
    if frames <= 0:
        raise AudioLoadError(f"audio file '{name}' has no audio frames (header only, or data cut off)")
    return AudioInfo(frames / src_rate, src_rate, channels)


@contextmanager
def _decoder_errors(name: str) -> Iterator[None]:
    """Re-raise anything the decoder throws as AudioLoadError naming the file, chained to the original.

    Decoders fed hostile bytes fail in many ways (libsndfile errors, soundfile's own TypeError/ValueError
    on unexpected format codes, MemoryError); callers should have to catch only one type.
    """
    try:
        yield
    except AudioLoadError:
        raise
    except Exception as e:
        reason = str(e) or type(e).__name__
        raise AudioLoadError(f"cannot read audio file '{name}': {reason}") from e


def _check_regular_file(path: str | os.PathLike[str]) -> str:
    """Return ``path`` as str after checking it names a readable, non-empty regular file.

    Checked before libsndfile sees the path: its messages for these cases are vague ("System error.",
    "Format not recognised." for a directory), and opening a FIFO would block forever.
    """
    try:
        name = os.fspath(path)
    except TypeError as e:
        raise AudioLoadError(f"audio path must be a str or os.PathLike, got {type(path).__name__}") from e
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    try:
        st = os.stat(name)
    except FileNotFoundError as e:
        raise AudioLoadError(f"audio file '{name}' does not exist") from e
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise AudioLoadError(f"cannot access audio file {name!r}: {e}") from e
    if stat.S_ISDIR(st.st_mode):
        raise AudioLoadError(f"audio file '{name}' is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise AudioLoadError(f"audio file '{name}' is not a regular file (a pipe, socket or device?)")
    if st.st_size == 0:
        raise AudioLoadError(f"audio file '{name}' is empty (0 bytes)")
    if not os.access(name, os.R_OK):
        raise AudioLoadError(f"audio file '{name}' is not readable (permission denied)")
    return name


def _header(f: sf.SoundFile, name: str) -> tuple[int, int, int]:
    """``(sample_rate, channels, frames)`` from an open file, rejecting implausible values."""
    src_rate, channels, frames = int(f.samplerate), int(f.channels), int(f.frames)
    if not _MIN_SOURCE_RATE <= src_rate <= _MAX_SOURCE_RATE:
        raise AudioLoadError(
            f"audio file '{name}' claims a sample rate of {src_rate} Hz, outside "
            f"[{_MIN_SOURCE_RATE}, {_MAX_SOURCE_RATE}]: corrupt header?"
        )
    if channels < 1:
        raise AudioLoadError(f"audio file '{name}' claims {channels} channels: corrupt header?")
    return src_rate, channels, frames


def _mono_blocks(
    f: sf.SoundFile, name: str, limit: int | None, block_frames: int = _BLOCK_FRAMES
) -> Iterator[np.ndarray]:
    """Decode up to ``limit`` frames (all if None) ``block_frames`` at a time; yield ``(n,)`` float32 mono
    blocks.

    Reading stops when the decoder returns nothing, so a header that over-states the frame count costs
    nothing; each block is checked for NaN/Inf (naming the first bad frame) and downmixed by averaging.
    """
    done = 0
    while limit is None or done < limit:
        want = block_frames if limit is None else min(block_frames, limit - done)
        block = f.read(want, dtype="float32", always_2d=True)  # (n, c)
        if block.shape[0] == 0:
            break
        finite = np.isfinite(block)
        if not finite.all():
            bad = done + int(np.flatnonzero(~finite.all(axis=1))[0])
            raise AudioLoadError(
                f"audio file '{name}' contains NaN or Inf samples (first at frame {bad}, "
                f"{bad / f.samplerate:.3f} s)"
            )
        # Average in float64: a float32 sum of channels near float32's max would overflow to Inf.
        mono = block[:, 0].copy() if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float64)
        yield mono.astype(np.float32, copy=False)
        done += block.shape[0]


def _read_mono(f: sf.SoundFile, name: str, limit: int | None) -> np.ndarray:
    """All of :func:`_mono_blocks` as one ``(s,)`` float32 array."""
    blocks = list(_mono_blocks(f, name, limit))
    if not blocks:
        return np.zeros(0, dtype=np.float32)
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def _check_load_args(sample_rate: object, max_seconds: object, length_policy: object) -> int | None:
    """Validate load_audio's options; return ``max_seconds`` in output samples (None if unset)."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise MoWEInputError(f"sample_rate must be a positive int (Hz), got {sample_rate!r}")
    if length_policy not in _POLICIES:
        raise MoWEInputError(f"length_policy must be one of {_POLICIES}, got {length_policy!r}")
    if max_seconds is None:
        return None
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float, np.integer, np.floating)):
        raise MoWEInputError(f"max_seconds must be a positive number or None, got {max_seconds!r}")
    if not math.isfinite(max_seconds) or max_seconds <= 0:
        raise MoWEInputError(f"max_seconds must be a positive finite number or None, got {max_seconds!r}")
    # Small epsilon: 0.1 s * 16000 is 1599.9999... in floating point but means 1600 samples.
    max_samples = math.floor(max_seconds * sample_rate + 1e-6)
    if max_samples < 1:
        raise MoWEInputError(
            f"max_seconds={max_seconds} is shorter than one sample at sample_rate={sample_rate}"
        )
    return max_samples


# --------------------------------------------------------------------------------------------------
# In-memory waveforms


def validate_waveform(x: torch.Tensor | np.ndarray, *, name: str = "waveform") -> torch.Tensor:
    """Check an in-memory mono clip and return it as a float32 tensor.

    Args:
        x: ``(s,)`` floating-point samples (torch tensor on any device, or numpy array).
        name: how the clip is called in error messages (e.g. ``"waveforms[3]"``).

    Returns:
        ``(s,)`` float32 tensor on the input's device (``x`` itself when it already is one).

    Raises:
        MoWEInputError: not an array, not 1-D (downmix or squeeze first), empty, not floating point,
            or containing NaN or Inf; the message names ``name`` and, for NaN/Inf, the first bad sample.
    """
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.floating):
            raise MoWEInputError(f"{name} must hold floating-point samples, got numpy dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise MoWEInputError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.dim() != 1:
        raise MoWEInputError(
            f"{name} must be 1-D (samples,) mono audio, got shape {tuple(x.shape)}; downmix or squeeze first"
        )
    if x.shape[0] == 0:
        raise MoWEInputError(f"{name} is empty (0 samples)")
    if not x.is_floating_point():
        raise MoWEInputError(f"{name} must hold floating-point samples, got {x.dtype}")
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        i = int((~finite).nonzero()[0])
        raise MoWEInputError(f"{name} contains NaN or Inf samples (first at sample {i})")
    return x.float()


def pad_batch(waveforms: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad clips of different lengths with zeros into one batch.

    Args:
        waveforms: ``b`` clips, each ``(s_i,)`` float (checked with :func:`validate_waveform`), all on
            one device.

    Returns:
        ``(waveforms, lengths)``: ``(b, max_i s_i)`` float32 zero-padded on the right, and ``(b,)`` int64
        valid samples per clip — the input every mowe encoder takes.

    Raises:
        MoWEInputError: empty list, or a clip that is not 1-D, empty, non-finite, or on another device;
            the message names the clip's index.

    Example:
        >>> w, n = pad_batch([torch.ones(3), torch.ones(5)])
        >>> w.shape, n.tolist()
        (torch.Size([2, 5]), [3, 5])
    """
    if isinstance(waveforms, torch.Tensor) or not isinstance(waveforms, (list, tuple)):
        raise MoWEInputError(f"waveforms must be a list of 1-D tensors, got {type(waveforms).__name__}")
    if len(waveforms) == 0:
        raise MoWEInputError("waveforms is an empty list; need at least one clip")
    clips = [validate_waveform(w, name=f"waveforms[{i}]") for i, w in enumerate(waveforms)]
    device = clips[0].device
    for i, c in enumerate(clips):
        if c.device != device:
            raise MoWEInputError(f"waveforms[{i}] is on {c.device} but waveforms[0] is on {device}")
    lengths = torch.tensor([c.shape[0] for c in clips], dtype=torch.long, device=device)
    out = torch.zeros(len(clips), int(lengths.max()), dtype=torch.float32, device=device)
    for i, c in enumerate(clips):
        out[i, : c.shape[0]] = c
    return out, lengths

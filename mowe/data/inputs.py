"""What :meth:`MoWEProcessor.__call__ <mowe.data.processor.MoWEProcessor.__call__>` takes and returns, the
transformers way: raw arrays with a ``sampling_rate`` (resampled to 16 kHz as files are), a ``BatchFeature``
   out,
and prompts that already hold their placeholders (from ``apply_chat_template``) with several clips each.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mowe.constants import SAMPLE_RATE
from mowe.data.audio import AudioClip, pad_batch, validate_waveform
from mowe.errors import MoWEInputError

__all__ = ["ChatPrompt", "batch_feature", "encode_prompts", "is_raw", "split_clips", "to_16k"]


class ChatPrompt(str):
    """A prompt rendered by ``processor.apply_chat_template``: ``processor(text=...)`` tokenizes it as it is
    (its placeholders stay where the audio parts were) instead of wrapping it as an instruction."""


def is_raw(audio: Any) -> bool:
    """Whether ``audio`` is in-memory samples (not a file path)."""
    return not isinstance(audio, (str, os.PathLike))


def to_16k(audio: Any, sampling_rate: int | None, *, who: str) -> Any:
    """A path unchanged; raw samples (or an :class:`~mowe.data.audio.AudioClip`, at its own rate) as a 16 kHz
    float32 tensor, resampled (soxr "HQ", as files are) when
    ``sampling_rate`` differs.

    Raises:
        MoWEInputError: raw samples without ``sampling_rate`` (the processor cannot know their rate), a bad
            rate, or bad samples (naming ``who``).
    """
    if not is_raw(audio):
        return audio
    if isinstance(audio, AudioClip):  # it knows its rate
        if sampling_rate is not None and int(sampling_rate) != audio.sample_rate:
            raise MoWEInputError(
                f"{who} ({audio.path}) is at {audio.sample_rate} Hz but sampling_rate="
                f"{sampling_rate} was given"
            )
        audio, sampling_rate = audio.waveform, audio.sample_rate
    if sampling_rate is None:
        raise MoWEInputError(
            f"{who}: raw audio needs sampling_rate= (e.g. processor(..., sampling_rate=16000)); "
            f"the model takes {SAMPLE_RATE} Hz and resamples other rates"
        )
    if (
        isinstance(sampling_rate, bool)
        or not isinstance(sampling_rate, (int, np.integer))
        or sampling_rate <= 0
    ):
        raise MoWEInputError(f"sampling_rate must be a positive int (Hz), got {sampling_rate!r}")
    wave = validate_waveform(audio, name=who)
    if int(sampling_rate) == SAMPLE_RATE:
        return wave
    import soxr

    out = soxr.resample(
        wave.detach().cpu().numpy().astype(np.float32), int(sampling_rate), SAMPLE_RATE, quality="HQ"
    )
    if out.shape[0] == 0:
        raise MoWEInputError(
            f"{who}: {wave.shape[0]} samples at {sampling_rate} Hz is less than one sample at "
            f"{SAMPLE_RATE} Hz"
        )
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


def batch_feature(data: dict[str, torch.Tensor]):
    """``data`` as a transformers ``BatchFeature`` (a mapping with ``.to(device)``)."""
    from transformers import BatchFeature

    return BatchFeature(data=data)


def split_clips(texts: Sequence[str], audio: Any, counts: Sequence[int]) -> list[list[Any]]:
    """The clips of each sample: ``audio`` is one clip (one sample), a list with one entry per text (a clip or
    a list of clips), or a flat list of every clip in placeholder order (as Qwen2-Audio's processor takes).

    Raises:
        MoWEInputError: the clips do not match the placeholders (naming the counts).
    """
    if not isinstance(audio, (list, tuple)):
        return [[audio]] if len(texts) == 1 else _mismatch(counts, 1)
    if len(texts) == 1 and not any(isinstance(a, (list, tuple)) for a in audio):
        return [list(audio)]
    if len(audio) == len(texts) and all(
        isinstance(a, (list, tuple)) or c == 1 for a, c in zip(audio, counts)
    ):
        return [list(a) if isinstance(a, (list, tuple)) else [a] for a in audio]
    if len(audio) == sum(counts) and not any(isinstance(a, (list, tuple)) for a in audio):
        out, at = [], 0
        for c in counts:
            out.append(list(audio[at : at + c]))
            at += c
        return out
    return _mismatch(counts, len(audio))


def _mismatch(counts: Sequence[int], got: int):
    raise MoWEInputError(
        f"the prompts hold {list(counts)} audio placeholders ({sum(counts)} in all) but {got} "
        f"audio clip(s) were given; pass one clip per placeholder (one clip per text for plain instructions)"
    )


def encode_prompts(
    processor: Any,
    texts: Sequence[str],
    audio: Any,
    *,
    sampling_rate: int | None,
    padding_side: str,
    max_length: int | None = None,
    answer: Any = None,
):
    """Ready prompts (placeholders in place, e.g. from ``apply_chat_template``) and their clips -> a
    BatchFeature.

    Each placeholder takes one clip, in reading order; a clip that the length policy chunks into ``w`` windows
    takes ``w`` adjacent placeholders there.

    Raises:
        MoWEInputError: placeholders and clips disagree, a prompt longer than ``max_length``, bad audio, or an
            ``answer`` (labels are made for plain instructions only).
    """
    if answer is not None:
        raise MoWEInputError(
            "answer= takes plain instructions with one clip each; for chat prompts or several "
            "clips per prompt, put the answer in an assistant turn"
        )
    tok, aid = processor.tokenizer, processor.audio_token_id
    ids_list = [list(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    counts = [ids.count(aid) for ids in ids_list]
    per_sample = split_clips(texts, audio, counts)
    seqs, windows_all = [], []
    for i, (ids, clips) in enumerate(zip(ids_list, per_sample)):
        if len(clips) != counts[i]:
            raise MoWEInputError(
                f"text[{i}]: the prompt holds {counts[i]} audio placeholders "
                f"({processor.audio_token!r}) but {len(clips)} clip(s) were given for it"
            )
        out: list[int] = []
        k = 0
        for t in ids:
            if t != aid:
                out.append(t)
                continue
            who = f"audio[{i}][{k}]" if len(clips) > 1 else f"audio[{i}]"
            windows = processor.prepare_audio(to_16k(clips[k], sampling_rate, who=who), who=who)
            out.extend([aid] * len(windows))
            windows_all.extend(windows)
            k += 1
        if max_length is not None and len(out) > max_length:
            raise MoWEInputError(
                f"text[{i}]: the prompt is {len(out)} tokens, more than max_length={max_length}"
            )
        seqs.append(out)
    data = processor.pad(seqs, padding_side=padding_side)
    data["waveforms"], data["wave_lengths"] = pad_batch(windows_all)
    return batch_feature(data)

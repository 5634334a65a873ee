"""Prompts, tokens and padded audio for :class:`~mowe.model.MoWEAudioLLM`: the processor and the collator.

Shape legend: ``b`` the batch (text tensors: one row per sample; audio tensors: one row per clip, which is one
per sample except when a long clip is chunked), ``s`` audio
samples, ``L`` text tokens.

A prompt is built from an instruction and one audio placeholder token per clip, either with the tokenizer's
chat template (system prompt + user turn, generation prompt added) or with a ``prompt_template`` format
string that holds ``{audio}`` and ``{instruction}`` (and optionally ``{system}``), e.g. SALMONN's
:data:`SALMONN_PROMPT_TEMPLATE`. For training the answer follows, with the eos token appended; the labels
are -100 everywhere except on the answer tokens and that eos (the model shifts them, transformers style).

Example:
    >>> tok = train_bpe_tokenizer(texts)                                            # doctest: +SKIP
    >>> proc = MoWEProcessor(tok)                                                   # doctest: +SKIP
    >>> batch = proc(text="Transcribe the speech.", audio="clip.wav")               # doctest: +SKIP
    >>> ids = model.generate(**{k: batch[k] for k in MODEL_INPUT_KEYS if k in batch})  # doctest: +SKIP
    >>> proc.decode(ids)                                                            # doctest: +SKIP
    ['three one four']

Training::

    collate = MoWECollator(proc, train=True)
    sampler = StageSampler(num_examples=len(ds), task_list=None, tasks=None, seed=0, stage_index=0,
                           batch_size=8, lengths=ds.lengths)
    loader = DataLoader(ds, batch_sampler=sampler.process_batches(epoch=0), collate_fn=collate)
    for batch in loader:            # batch is None when every example in it was unreadable ("skip" mode)
        out = model(**{k: batch[k] for k in MODEL_INPUT_KEYS})
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import typing
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mowe.constants import IGNORE_INDEX, SAMPLE_RATE
from mowe.data.audio import AudioClip, AudioTruncatedWarning, load_audio, pad_batch, validate_waveform
from mowe.data.audio_stream import audio_too_long, check_duration, stream_audio
from mowe.data.chat import audio_from_messages, render_chat
from mowe.data.inputs import ChatPrompt, batch_feature, encode_prompts, to_16k
from mowe.data.processor_io import load_processor, save_processor
from mowe.data.processor_options import ProcessorOptions
from mowe.data.samplers import mix_seed
from mowe.data.templates import (
    DEFAULT_PROMPT_TEMPLATE,
)
from mowe.data.tokenizer import audio_placeholder_id
from mowe.errors import ConfigError, MoWEInputError

__all__ = ["MoWEProcessor", "pad_tokens"]


class MoWEProcessor:
    """Turns instructions (+ answers) and audio into the inputs of :class:`~mowe.model.MoWEAudioLLM`.

    Args:
        tokenizer: a transformers tokenizer that knows ``audio_token`` as one token and has an eos token
            (e.g. from :func:`mowe.data.tokenizer.train_bpe_tokenizer`).
        options: a :class:`~mowe.data.processor_options.ProcessorOptions`; keyword arguments override its
            fields.
        **kwargs: the options by name: the fields of :class:`ProcessorOptions`, the one place they are defined
            and documented, with their defaults (``help(MoWEProcessor)`` lists them too); each is also a
            read-only attribute of the processor (``processor.max_audio_seconds``).

    Raises:
        ConfigError: an unknown or invalid option (naming it), a template with a field other than
            audio/instruction/system or without audio/instruction, an audio token the tokenizer splits, or a
            tokenizer without eos.
        AudioPlaceholderError: text can produce the audio token's id (an ordinary vocabulary piece, or bos /
            eos / pad / unk): :func:`mowe.data.tokenizer.add_audio_token` gives a safe one.
    """

    def __init__(self, tokenizer: Any, *, options: ProcessorOptions | None = None, **kwargs: Any):
        if options is not None and not isinstance(options, ProcessorOptions):
            raise ConfigError(f"processor.options: expected ProcessorOptions, got {type(options).__name__}")
        if options is None:
            options = ProcessorOptions.from_kwargs(**kwargs)
        elif kwargs:
            options = options.replace(**kwargs)
        self.tokenizer = tokenizer
        self.options = options
        self._audio_token_id, self.pad_token_id = _token_ids(tokenizer, options.audio_token)

    @property
    def audio_token_id(self) -> int:
        """Id of the audio placeholder (``MoWEConfig.audio_token_id`` must equal it)."""
        return self._audio_token_id

    # ------------------------------------------------------------------------------------------- prompts
    def build_prompt(self, instruction: str) -> str:
        """The prompt text for one instruction, with exactly one audio placeholder.

        The instruction may hold the placeholder to place it; otherwise it goes at the start of the user turn.
        """
        if not isinstance(instruction, str):
            raise MoWEInputError(f"instruction must be a string, got {type(instruction).__name__}")
        explicit = self.audio_token in instruction
        template = self.prompt_template
        if template is None and getattr(self.tokenizer, "chat_template", None):
            user = instruction if explicit else f"{self.audio_token} {instruction}"
            messages = [{"role": "user", "content": user}]
            if self.system_prompt:
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        template = template or DEFAULT_PROMPT_TEMPLATE
        text = template.format(
            audio="" if explicit else self.audio_token,
            instruction=instruction,
            system=self.system_prompt or "",
        )
        bos = self.tokenizer.bos_token
        return text if not bos or text.startswith(bos) else bos + text

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """OpenAI-style chat messages -> the prompt text, one audio placeholder per audio part at its place.

        A message is ``{"role": "system" | "user" | "assistant", "content": str | [part, ...]}``; a part is
        ``{"type": "text", "text": ...}``, ``{"type": "audio", "path" | "array": ...}`` or ``{"type":
        "input_audio", ...}`` (the audio itself is not read here: :meth:`audio_from_messages` gives the clips,
        for ``processor(text=prompt, audio=clips, sampling_rate=16000)``; the returned prompt keeps its
        placeholders there, several clips per turn and several turns alike). A message's parts are joined with
        single spaces, so ``[audio, text]`` gives the same prompt as ``processor(text=text, audio=...)``. The
        tokenizer's chat template renders the turns (the processor's ``system_prompt`` is used unless a system
        message is given); with a ``prompt_template`` the messages must be one user turn (after an optional
        system message).

        Raises:
            MoWEInputError: a malformed message or part (naming it), or several turns for a
            ``prompt_template``.
        """

        return render_chat(self, messages)

    def audio_from_messages(self, messages: Sequence[Mapping[str, Any]]) -> list[Any]:
        """The messages' audio clips in placeholder order (paths, or arrays resampled to 16 kHz); see
        :func:`mowe.data.chat.audio_from_messages`."""

        return audio_from_messages(messages)

    def paraphrase(self, instruction: str, task: str | None, key: Any, *, epoch: int = 0) -> str:
        """Replace ``instruction`` by one of ``task``'s paraphrases (unchanged if the task has none).

        The choice is a pure function of ``(seed, epoch, task, key)`` (``key``: the example id), so it is the
        same in every process and DataLoader worker.
        """
        options = (self.paraphrases or {}).get(task) if task is not None else None
        if not options:
            return instruction
        return options[mix_seed(self.seed, epoch, task, key) % len(options)]

    def encode(
        self,
        instruction: str,
        *,
        answer: str | None = None,
        num_clips: int = 1,
        max_length: int | None = None,
        who: str = "example",
    ) -> tuple[list[int], list[int] | None]:
        """Token ids (and labels when ``answer`` is given) for one sample.

        Args:
            instruction: the instruction text.
            answer: the target; its tokens and an eos are appended and labelled.
            num_clips: placeholders for this sample (more than one for a chunked clip; kept adjacent).
            max_length: cut the answer so the sequence has at most this many tokens (the prompt is never cut).
            who: how the sample is named in errors.

        Returns:
            ``(ids, labels)``: ``labels`` is None without an answer, else -100 on the prompt.

        Raises:
            MoWEInputError: the prompt holds other than one placeholder, the answer holds one, or the prompt
                alone is longer than ``max_length``.
        """
        prompt = self.build_prompt(instruction)
        ids = list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        n = ids.count(self._audio_token_id)
        if n != 1:
            raise MoWEInputError(
                f"{who}: the prompt holds {n} audio placeholders ({self.audio_token!r}), expected exactly 1 "
                f"per "
                f"clip; instruction was {instruction!r}"
            )
        if num_clips != 1:
            at = ids.index(self._audio_token_id)
            ids[at : at + 1] = [self._audio_token_id] * num_clips
        if max_length is not None and len(ids) > max_length:
            raise MoWEInputError(
                f"{who}: the prompt alone is {len(ids)} tokens, more than max_length={max_length}"
            )
        if answer is None:
            return ids, None
        if not isinstance(answer, str):
            raise MoWEInputError(f"{who}: answer must be a string, got {type(answer).__name__}")
        # The answer follows the prompt after one space unless the prompt already ends in whitespace.
        text = answer if (not prompt or prompt[-1].isspace()) else " " + answer
        ans = list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + [
            int(self.tokenizer.eos_token_id)
        ]
        if self._audio_token_id in ans:
            raise MoWEInputError(f"{who}: the answer contains the audio placeholder {self.audio_token!r}")
        labels = [IGNORE_INDEX] * len(ids) + ans
        ids = ids + ans
        if max_length is not None and len(ids) > max_length:
            ids, labels = ids[:max_length], labels[:max_length]
        return ids, labels

    # ------------------------------------------------------------------------------------------- audio
    def prepare_audio(self, audio: Any, *, train: bool = False, who: str = "audio") -> list[torch.Tensor]:
        """A path, an :class:`~mowe.data.audio.AudioClip` or a 1-D array/tensor -> the clip's windows, each
        ``(s_i,)`` float32 at 16 kHz.

        One window unless ``length_policy="chunk"`` (and not ``train``) and the clip is longer than
        ``max_audio_seconds``. A path is read with :func:`mowe.data.audio.load_audio`; a clip that function
        returned is taken as its waveform (it must be at 16 kHz), under this processor's length policy.
        :meth:`stream_windows` gives the same windows one at a time.

        Raises:
            AudioLoadError: an unreadable file (names it). AudioTooLongError: a clip used whole that is longer
                than ``max_duration_seconds``. MoWEInputError: a bad array, or a clip too long under
                ``"error"``.
        """
        return list(self.stream_windows(audio, train=train, who=who))

    def stream_windows(
        self, audio: Any, *, train: bool = False, who: str = "audio", read_frames: int | None = None
    ) -> Iterator[torch.Tensor]:
        """:meth:`prepare_audio`'s windows as a generator: a file under ``"chunk"`` is decoded window by
        window (:func:`mowe.data.audio_stream.stream_audio`), so a long file is never held whole;
        ``read_frames``: its read-chunk size (the windows do not depend on it). A file's duration is checked
        on its header before the first window (see ``max_duration_seconds``)."""
        policy = self.length_policy
        if train and policy == "chunk":
            policy = "truncate"  # one clip, one answer: windows would need one answer each
        max_s = self.max_audio_seconds
        whole = policy != "truncate" or max_s is None  # the whole clip is read: the duration limit applies
        limit = self.max_duration_seconds if whole else None
        if isinstance(audio, (str, os.PathLike)):
            if policy == "chunk" and max_s is not None:  # decoded window by window: no whole-file copy first
                kw = {} if read_frames is None else {"read_frames": read_frames}
                yield from stream_audio(
                    audio, window_seconds=max_s, sample_rate=SAMPLE_RATE, max_duration_seconds=limit, **kw
                )
                return
            if limit is not None:
                check_duration(audio, limit)
            clip = load_audio(audio, sample_rate=SAMPLE_RATE, max_seconds=max_s, length_policy=policy)
            if limit is not None and clip.num_samples > math.floor(limit * SAMPLE_RATE + 1e-6) + 1:
                raise audio_too_long(f"audio file '{clip.path}'", clip.duration, limit)  # a header's estimate
            yield from clip.windows()
            return
        if isinstance(audio, AudioClip):
            if audio.sample_rate != SAMPLE_RATE:
                raise MoWEInputError(
                    f"{who} ({audio.path}) is at {audio.sample_rate} Hz; load it with "
                    f"load_audio(path, sample_rate={SAMPLE_RATE})"
                )
            audio = audio.waveform
        if isinstance(audio, np.ndarray) and not np.issubdtype(audio.dtype, np.floating):
            raise MoWEInputError(f"{who} must hold floating-point samples, got numpy dtype {audio.dtype}")
        wave = validate_waveform(audio, name=who)
        if limit is not None and wave.shape[0] > math.floor(limit * SAMPLE_RATE + 1e-6):
            raise audio_too_long(who, wave.shape[0] / SAMPLE_RATE, limit)
        if max_s is None:
            yield wave
            return
        max_n = math.floor(max_s * SAMPLE_RATE + 1e-6)
        if wave.shape[0] <= max_n:
            yield wave
            return
        if policy == "error":
            raise MoWEInputError(
                f"{who} is {wave.shape[0] / SAMPLE_RATE:.2f} s long, more than "
                f"max_audio_seconds={max_s} (length_policy='error')"
            )
        if policy == "chunk":
            yield from torch.split(wave, max_n)
            return
        warnings.warn(
            f"{who} is {wave.shape[0] / SAMPLE_RATE:.2f} s long; truncated to the first {max_s} s",
            AudioTruncatedWarning,
            stacklevel=4,
        )
        yield wave[:max_n]

    # ------------------------------------------------------------------------------------------- batching
    def pad(
        self,
        sequences: Sequence[Sequence[int]],
        labels: Sequence[Sequence[int]] | None = None,
        *,
        padding_side: str = "right",
    ) -> dict[str, torch.Tensor]:
        """Pad token lists into ``input_ids`` / ``attention_mask`` (and ``labels``, -100 on padding), ``(b,
        L)``."""
        return pad_tokens(sequences, labels, pad_token_id=self.pad_token_id, padding_side=padding_side)

    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        audio: Any = None,
        answer: str | Sequence[str] | None = None,
        *,
        sampling_rate: int | None = None,
        return_tensors: str = "pt",
        padding_side: str | None = None,
        max_length: int | None = None,
    ):
        """Encode instruction(s) with one clip each, or prompts from :meth:`apply_chat_template` with their
        clips.

        Args:
            text: an instruction or a list of them, or prompt(s) from :meth:`apply_chat_template` (tokenized
                as they are, each placeholder taking one clip in reading order).
            audio: one clip per instruction: a path, a 1-D array / tensor, an ``AudioClip`` from
                :func:`mowe.data.audio.load_audio`, or a list of those; for a prompt with
                several placeholders, a list of its clips (or one flat list of every clip, Qwen2-Audio style).
            sampling_rate: the rate (Hz) of raw arrays, required for them; other rates than 16 kHz are
                resampled as audio files are. Paths need none.
            answer: optional answer(s) (one per instruction) -> ``labels`` for a training forward.
            return_tensors: only ``"pt"``.
            padding_side: default right with answers, left without (generation).
            max_length: see :meth:`encode`.

        Returns:
            A ``BatchFeature`` (``.to(device)``) keyed by the model's ``forward`` arguments: ``input_ids`` (b,
            L), ``attention_mask`` (b, L), [``labels`` (b, L)], ``waveforms`` (b, s), ``wave_lengths`` (b,);
            the audio tensors have one row per clip (more rows than samples when clips were chunked).
        """

        if return_tensors != "pt":
            raise MoWEInputError(f"return_tensors must be 'pt', got {return_tensors!r}")
        if text is None or audio is None:
            raise MoWEInputError("both text and audio are required")
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        several = isinstance(audio, (list, tuple)) and (
            single or len(audio) != len(texts) or any(isinstance(a, (list, tuple)) for a in audio)
        )
        if several or any(isinstance(t, ChatPrompt) for t in texts):
            prompts = [t if isinstance(t, ChatPrompt) else self.build_prompt(t) for t in texts]
            return encode_prompts(
                self,
                prompts,
                audio,
                sampling_rate=sampling_rate,
                answer=answer,
                padding_side=padding_side or "left",
                max_length=max_length,
            )
        if single:
            audios = [audio]
        elif isinstance(audio, (list, tuple)):
            audios = list(audio)
        else:
            raise MoWEInputError("with a list of texts, audio must be a list with one clip per text")
        if len(audios) != len(texts) or not texts:
            raise MoWEInputError(
                f"got {len(texts)} text(s) but {len(audios)} audio clip(s); need one clip per text"
            )
        answers = None
        if answer is not None:
            answers = [answer] if isinstance(answer, str) else list(answer)
            if len(answers) != len(texts):
                raise MoWEInputError(f"got {len(texts)} text(s) but {len(answers)} answer(s)")
        seqs, labs, clips = [], [], []
        for i, (t, a) in enumerate(zip(texts, audios)):
            windows = self.prepare_audio(to_16k(a, sampling_rate, who=f"audio[{i}]"), who=f"audio[{i}]")
            ids, lab = self.encode(
                t,
                answer=None if answers is None else answers[i],
                num_clips=len(windows),
                max_length=max_length,
                who=f"text[{i}]",
            )
            seqs.append(ids)
            labs.append(lab)
            clips.extend(windows)
        side = padding_side or ("right" if answers is not None else "left")
        out = self.pad(seqs, labs if answers is not None else None, padding_side=side)
        out["waveforms"], out["wave_lengths"] = pad_batch(clips)
        return batch_feature(out)

    def decode(self, ids: Any) -> list[str]:
        """Token ids ``(b, n)`` (tensor or lists; one ``(n,)`` sequence also works) -> ``b`` stripped
        strings."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        ids = list(ids)
        if ids and not isinstance(ids[0], (list, tuple)):
            ids = [ids]
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [t.strip() for t in texts]

    # ------------------------------------------------------------------------------------------- saving
    def to_dict(self) -> dict[str, Any]:
        """What ``processor_config.json`` holds: the class name and every option."""
        return {"processor_class": type(self).__name__, **self.options.to_dict()}

    def save_pretrained(
        self,
        directory: str | os.PathLike,
        *,
        push_to_hub: bool = False,
        repo_id: str | None = None,
        **push_kwargs: Any,
    ) -> None:
        """Write the tokenizer and ``processor_config.json`` to ``directory`` (then upload it with
        ``push_to_hub``; see :func:`mowe.data.processor_io.save_processor`)."""

        save_processor(self, directory, push_to_hub=push_to_hub, repo_id=repo_id, **push_kwargs)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, *, tokenizer: Any = None, **kwargs: Any
    ) -> MoWEProcessor:
        """Load a processor saved by :meth:`save_pretrained` from a folder or hub id (``tokenizer`` replaces
        the saved one; ``revision``, ``cache_dir``, ``local_files_only``, ``token`` as in transformers).

        Raises:
            ConfigError: ``processor_config.json`` missing, not JSON, or with an unknown key or bad value
                (naming it). CheckpointError: no such folder or hub repository.
        """

        return load_processor(cls, name_or_path, tokenizer=tokenizer, **kwargs)

    def __repr__(self) -> str:
        return (
            f"MoWEProcessor(audio_token={self.audio_token!r}, audio_token_id={self.audio_token_id}, "
            f"template={'prompt_template' if self.prompt_template else 'chat'}, "
            f"paraphrases={sorted(self.paraphrases or {})}, max_audio_seconds={self.max_audio_seconds}, "
            f"length_policy={self.length_policy!r})"
        )


# The options are ProcessorOptions' fields: each is a read-only attribute (``proc.max_audio_seconds``) and
# a keyword of the constructor, with the dataclass's default (so help() and IDEs show them); nothing here
# names one option.
def _option_attribute(name: str) -> property:
    return property(
        lambda self: getattr(self.options, name),
        doc=f"The ``{name}`` option (:class:`~mowe.data.processor_options.ProcessorOptions`).",
    )


for _f in dataclasses.fields(ProcessorOptions):
    setattr(MoWEProcessor, _f.name, _option_attribute(_f.name))
_hints = typing.get_type_hints(ProcessorOptions)
MoWEProcessor.__init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("tokenizer", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Any),
        inspect.Parameter(
            "options", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ProcessorOptions | None
        ),
    ]
    + [
        inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=_hints[f.name]
        )
        for f in dataclasses.fields(ProcessorOptions)
    ]
)
del _f, _hints


def pad_tokens(
    sequences: Sequence[Sequence[int]],
    labels: Sequence[Sequence[int]] | None = None,
    *,
    pad_token_id: int,
    padding_side: str = "right",
) -> dict[str, torch.Tensor]:
    """Token lists -> ``input_ids`` / ``attention_mask`` (and ``labels``, -100 on padding), each ``(b,
    L)``."""
    if padding_side not in ("left", "right"):
        raise MoWEInputError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    b, L = len(sequences), max(len(s) for s in sequences)
    ids = torch.full((b, L), pad_token_id, dtype=torch.long)
    mask = torch.zeros((b, L), dtype=torch.long)
    lab = torch.full((b, L), IGNORE_INDEX, dtype=torch.long) if labels is not None else None
    for i, seq in enumerate(sequences):
        n = len(seq)
        sl = slice(0, n) if padding_side == "right" else slice(L - n, L)
        ids[i, sl] = torch.tensor(seq, dtype=torch.long)
        mask[i, sl] = 1
        if lab is not None:
            lab[i, sl] = torch.tensor(labels[i], dtype=torch.long)
    out = {"input_ids": ids, "attention_mask": mask}
    if lab is not None:
        out["labels"] = lab
    return out


def _token_ids(tokenizer: Any, audio_token: str) -> tuple[int, int]:
    """(audio placeholder id, pad id) of ``tokenizer``; ConfigError if the placeholder is not one token or
    there is no eos token (answers end with it; it also pads when the tokenizer has no pad token),
       AudioPlaceholderError
    if text can produce the placeholder (:func:`mowe.data.tokenizer.audio_placeholder_id`)."""

    if tokenizer.eos_token_id is None:
        raise ConfigError("the tokenizer has no eos token; answers must end with one")
    audio_id = audio_placeholder_id(tokenizer, audio_token)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return audio_id, int(pad)

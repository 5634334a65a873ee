"""LTU-AS's prompt as the released model reads it (YuanGongND/ltu, ``templates/alpaca_short.json``).

The official model puts its 25 audio tokens in front of the *whole* tokenized prompt (in front of LLaMA's BOS
too) and fills the Alpaca ``### Input`` with Whisper's transcript of the clip; with an empty transcript the
template has no input section. :func:`ltu_as_input_ids` builds exactly those ids with one audio placeholder,
which :class:`mowe.MoWEAudioLLM` replaces by the clip's audio tokens.

Example:
    >>> ltu_as_prompt("What is said?", "hello world")
    '### Instruction:\\nWhat is said?\\n\\n### Input:\\nhello world\\n\\n### Response:\\n'
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from mowe.data.tokenizer import check_audio_placeholder
from mowe.errors import AudioPlaceholderError, MoWEInputError

__all__ = [
    "FAITHFUL_PROMPT_TEMPLATE",
    "LTU_AS_PROMPT",
    "LTU_AS_PROMPT_NO_INPUT",
    "PROMPT_TEMPLATE",
    "clean_transcript",
    "ltu_as_batch",
    "ltu_as_input_ids",
    "ltu_as_prompt",
]

# The processor's form (mowe.data.templates fields): LTU-AS (arXiv 2309.14405) prompts its LLaMA in the Alpaca
# format; its code puts the audio tokens before the prompt text.
PROMPT_TEMPLATE = (
    "{audio}Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
# As released (templates/alpaca_short.json): the audio tokens before the whole prompt (before BOS too) and
# Whisper's transcript of the clip as the input; built by ltu_as_input_ids / ltu_as_batch, not the processor
# (which knows no {transcript} field).
FAITHFUL_PROMPT_TEMPLATE = (
    "{audio}### Instruction:\n{instruction}\n\n### Input:\n{transcript}\n\n### Response:\n"
)
LTU_AS_PROMPT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
LTU_AS_PROMPT_NO_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n"

# Whisper hallucinates this sign-off on quiet audio; the official demo strips it (lower, Capitalised or UPPER
# case, with an optional "." or "!") from the transcript.
_SIGN_OFF = re.compile(
    "(?:"
    + "|".join(
        re.escape(c)
        for p in ("thanks for watching", "thank you for watching")
        for c in (p, p.capitalize(), p.upper())
    )
    + ")[.!]?"
)


def clean_transcript(text: str) -> str:
    """Leading spaces and Whisper's "thank(s) (you) for watching" sign-offs removed, as the official demo
    does."""
    return _SIGN_OFF.sub("", text.lstrip())


def ltu_as_prompt(instruction: str, transcript: str | None) -> str:
    """The prompt text after the audio tokens (no BOS: the tokenizer adds it)."""
    if not isinstance(instruction, str):
        raise MoWEInputError(f"instruction must be a string, got {type(instruction).__name__}")
    if transcript:
        return LTU_AS_PROMPT.format(instruction=instruction, input=transcript)
    return LTU_AS_PROMPT_NO_INPUT.format(instruction=instruction)


def ltu_as_input_ids(
    tokenizer, instruction: str, transcript: str | None, *, audio_token_id: int
) -> list[int]:
    """``[audio_token_id] + tokenizer(prompt).input_ids``: the official order (audio, BOS, prompt).

    Raises:
        AudioPlaceholderError: the prompt's text produced ``audio_token_id`` too (a placeholder text can
            produce; :func:`mowe.data.tokenizer.check_audio_placeholder` says why).
    """
    ids = list(tokenizer(ltu_as_prompt(instruction, transcript)).input_ids)
    if int(audio_token_id) in ids:
        try:  # the full check says why text produces it (a real tokenizer; stand-ins lack its methods)
            check_audio_placeholder(tokenizer, int(audio_token_id))
        except (AttributeError, TypeError):
            pass
        raise AudioPlaceholderError(
            f"audio placeholder id {audio_token_id} occurs in the tokenized prompt text for "
            f"instruction {instruction!r}; use an added special token as the placeholder"
        )
    return [int(audio_token_id)] + ids


def ltu_as_batch(
    tokenizer,
    instructions: Sequence[str],
    *,
    audio_token_id: int,
    transcripts: Sequence[str | None] | None = None,
    transcriber=None,
    waveforms=None,
    wave_lengths=None,
    pad_token_id: int = 0,
    padding_side: str = "left",
) -> dict:
    """Prompts for a batch of clips, one clip per prompt, as the official pipeline builds each.

    Args:
        tokenizer: the LLM's tokenizer (adds BOS, as LLaMA's does).
        instructions: one question per clip.
        audio_token_id: the model's placeholder id (``model.audio_token_id``).
        transcripts: the text for ``### Input`` per clip; None runs ``transcriber`` on the clips instead
            (LTU-AS's own way: Whisper's greedy transcript,
            :class:`mowe.ltu_as.transcribe.WhisperTranscriber`).
        transcriber, waveforms, wave_lengths: used when ``transcripts`` is None.
        pad_token_id: LTU-AS pads with 0 (LLaMA's unk); padding_side: ``"left"`` for generation.

    Returns:
        ``{"input_ids": (b, L), "attention_mask": (b, L), "transcripts": list[str]}``.
    """
    if transcripts is None:
        if transcriber is None or waveforms is None:
            raise MoWEInputError("pass transcripts=, or transcriber= with waveforms= to transcribe the clips")
        transcripts = transcriber(waveforms, wave_lengths)
    if len(transcripts) != len(instructions):
        raise MoWEInputError(f"{len(instructions)} instructions but {len(transcripts)} transcripts")
    rows = [
        ltu_as_input_ids(tokenizer, q, t, audio_token_id=audio_token_id)
        for q, t in zip(instructions, transcripts)
    ]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad_token_id), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        cols = slice(width - len(r), width) if padding_side == "left" else slice(0, len(r))
        ids[i, cols] = torch.tensor(r)
        mask[i, cols] = 1
    return {"input_ids": ids, "attention_mask": mask, "transcripts": list(transcripts)}

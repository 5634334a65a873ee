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

from mowe.errors import MoWEInputError

__all__ = ["LTU_AS_PROMPT", "LTU_AS_PROMPT_NO_INPUT", "clean_transcript", "ltu_as_input_ids", "ltu_as_prompt"]

LTU_AS_PROMPT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
LTU_AS_PROMPT_NO_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n"

# Whisper hallucinates this sign-off on quiet audio; the official demo strips it (lower, Capitalised or UPPER
# case, with an optional "." or "!") from the transcript.
_SIGN_OFF = re.compile("(?:" + "|".join(re.escape(c) for p in ("thanks for watching", "thank you for watching")
                                        for c in (p, p.capitalize(), p.upper())) + ")[.!]?")


def clean_transcript(text: str) -> str:
    """Leading spaces and Whisper's "thank(s) (you) for watching" sign-offs removed, as the official demo does."""
    return _SIGN_OFF.sub("", text.lstrip())


def ltu_as_prompt(instruction: str, transcript: str | None) -> str:
    """The prompt text after the audio tokens (no BOS: the tokenizer adds it)."""
    if not isinstance(instruction, str):
        raise MoWEInputError(f"instruction must be a string, got {type(instruction).__name__}")
    if transcript:
        return LTU_AS_PROMPT.format(instruction=instruction, input=transcript)
    return LTU_AS_PROMPT_NO_INPUT.format(instruction=instruction)


def ltu_as_input_ids(tokenizer, instruction: str, transcript: str | None, *, audio_token_id: int) -> list[int]:
    """``[audio_token_id] + tokenizer(prompt).input_ids``: the official order (audio, BOS, prompt)."""
    return [int(audio_token_id)] + list(tokenizer(ltu_as_prompt(instruction, transcript)).input_ids)

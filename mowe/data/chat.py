"""Chat messages -> a prompt with one audio placeholder per audio part
(:meth:`mowe.data.processor.MoWEProcessor.apply_chat_template`), and the clips those parts hold.

A message is ``{"role": "system" | "user" | "assistant", "content": str | [part, ...]}``; a part is
``{"type": "text", "text": ...}``, an audio part ``{"type": "audio", "path": ...}`` or
``{"type": "audio", "array": ..., "sampling_rate": ...}`` (transformers' chat format), or OpenAI's
``{"type": "input_audio", ...}`` (the server decodes those). Several clips per turn and several turns are
fine::

    messages = [
        {"role": "user", "content": [{"type": "audio", "path": "a.wav"}, {"type": "audio", "path": "b.wav"},
                                     {"type": "text", "text": "Which clip is louder?"}]},
        {"role": "assistant", "content": "The second."},
        {"role": "user", "content": [{"type": "audio", "array": wave, "sampling_rate": 44100},
                                     {"type": "text", "text": "And this one?"}]},
    ]
    prompt = processor.apply_chat_template(messages)
    batch = processor(text=prompt, audio=audio_from_messages(messages), sampling_rate=16000)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mowe.data.inputs import ChatPrompt, to_16k
from mowe.data.templates import DEFAULT_PROMPT_TEMPLATE
from mowe.errors import MoWEInputError

__all__ = ["audio_from_messages", "render_chat"]

_AUDIO_KINDS = ("audio", "input_audio")


def render_chat(processor: Any, messages: Sequence[Mapping[str, Any]]) -> str:
    """The prompt text ``processor`` makes of ``messages`` (see ``MoWEProcessor.apply_chat_template``)."""
    if isinstance(messages, (str, Mapping)) or not isinstance(messages, Sequence) or not messages:
        raise MoWEInputError("messages must be a non-empty list of {'role', 'content'} objects")
    turns = []
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, Mapping) else None
        if not isinstance(m, Mapping) or m.get("role") not in ("system", "user", "assistant"):
            raise MoWEInputError(f"messages[{i}] must be an object with role system, user or assistant")
        parts = [content] if isinstance(content, str) else content
        if not isinstance(parts, list):
            raise MoWEInputError(f"messages[{i}].content must be a string or a list of parts")
        pieces = []
        for j, p in enumerate(parts):
            kind = p.get("type") if isinstance(p, Mapping) else ("text" if isinstance(p, str) else None)
            text = p if isinstance(p, str) else (p.get("text") if kind == "text" else None)
            if kind in _AUDIO_KINDS and m["role"] == "user":
                pieces.append(processor.audio_token)
            elif kind == "text" and isinstance(text, str) and processor.audio_token not in text:
                pieces.append(text)
            else:
                raise MoWEInputError(
                    f"messages[{i}].content[{j}]: expected a text part (without "
                    f"{processor.audio_token!r}) or, in a user turn, an audio part"
                )
        turns.append({"role": m["role"], "content": " ".join(x for x in pieces if x)})
    if processor.prompt_template is None and getattr(processor.tokenizer, "chat_template", None):
        if turns[0]["role"] != "system" and processor.system_prompt:
            turns.insert(0, {"role": "system", "content": processor.system_prompt})
        return ChatPrompt(
            processor.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        )
    system = turns.pop(0)["content"] if turns[0]["role"] == "system" else processor.system_prompt
    if len(turns) != 1 or turns[0]["role"] != "user":
        raise MoWEInputError(
            "this processor's prompt template holds one user turn (after an optional system "
            f"message); got roles {[m.get('role') for m in messages]}"
        )
    user = turns[0]["content"]
    lead = (
        processor.audio_token + " "
    )  # a leading clip goes where the template puts {audio}, as build_prompt does
    leading = user.count(processor.audio_token) == 1 and (user + " ").startswith(lead)
    text = (processor.prompt_template or DEFAULT_PROMPT_TEMPLATE).format(
        audio=processor.audio_token if leading else "",
        instruction=user[len(lead) :] if leading else user,
        system=system or "",
    )
    bos = processor.tokenizer.bos_token
    return ChatPrompt(text if not bos or text.startswith(bos) else bos + text)


def audio_from_messages(messages: Sequence[Mapping[str, Any]]) -> list[Any]:
    """The clips of the messages' ``{"type": "audio"}`` parts in reading order (the placeholders' order):
    paths as they are, arrays resampled to 16 kHz from their part's ``sampling_rate`` (so pass
       ``sampling_rate=16000``
    to the processor with them).

    Raises:
        MoWEInputError: an audio part with neither ``path`` nor ``array``, an array without ``sampling_rate``,
            or an ``input_audio`` part (base64 data; decode it first), naming the part.
    """
    clips = []
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, Mapping) else None
        for j, p in enumerate(content if isinstance(content, list) else []):
            kind = p.get("type") if isinstance(p, Mapping) else None
            where = f"messages[{i}].content[{j}]"
            if kind == "input_audio":
                raise MoWEInputError(
                    f"{where}: an input_audio part holds encoded data; decode it to an array first"
                )
            if kind != "audio":
                continue
            if p.get("path") is not None:
                clips.append(p["path"])
            elif p.get("array") is not None:
                if p.get("sampling_rate") is None:
                    raise MoWEInputError(f"{where}: an audio array needs its 'sampling_rate'")
                clips.append(to_16k(p["array"], p["sampling_rate"], who=where))
            else:
                raise MoWEInputError(f"{where}: an audio part needs 'path' or 'array' (+ 'sampling_rate')")
    return clips

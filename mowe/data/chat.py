"""OpenAI-style chat messages -> a prompt with one audio placeholder per audio part
(:meth:`mowe.data.processor.MoWEProcessor.apply_chat_template`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mowe.data.templates import DEFAULT_PROMPT_TEMPLATE
from mowe.errors import MoWEInputError

__all__ = ["render_chat"]


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
            if kind == "input_audio" and m["role"] == "user":
                pieces.append(processor.audio_token)
            elif kind == "text" and isinstance(text, str) and processor.audio_token not in text:
                pieces.append(text)
            else:
                raise MoWEInputError(f"messages[{i}].content[{j}]: expected a text part (without "
                                     f"{processor.audio_token!r}) or, in a user turn, an input_audio part")
        turns.append({"role": m["role"], "content": " ".join(x for x in pieces if x)})
    if processor.prompt_template is None and getattr(processor.tokenizer, "chat_template", None):
        if turns[0]["role"] != "system" and processor.system_prompt:
            turns.insert(0, {"role": "system", "content": processor.system_prompt})
        return processor.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    system = turns.pop(0)["content"] if turns[0]["role"] == "system" else processor.system_prompt
    if len(turns) != 1 or turns[0]["role"] != "user":
        raise MoWEInputError("this processor's prompt template holds one user turn (after an optional system "
                             f"message); got roles {[m.get('role') for m in messages]}")
    user = turns[0]["content"]
    lead = processor.audio_token + " "  # a leading clip goes where the template puts {audio}, as build_prompt does
    leading = user.count(processor.audio_token) == 1 and (user + " ").startswith(lead)
    text = (processor.prompt_template or DEFAULT_PROMPT_TEMPLATE).format(
        audio=processor.audio_token if leading else "", instruction=user[len(lead):] if leading else user,
        system=system or "")
    bos = processor.tokenizer.bos_token
    return text if not bos or text.startswith(bos) else bos + text

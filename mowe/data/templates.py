"""Prompt templates of mowe's own presets: ``{audio}`` is where the audio placeholder token(s) go.

Used by :class:`~mowe.data.processor.MoWEProcessor` (``prompt_template=PROMPT_TEMPLATES["mowe"]``) and by the
presets (``Preset.prompt_template``). The seed systems' own formats live in their packages and join this table
in :data:`mowe.presets.PROMPT_TEMPLATES`. A template may also hold ``{system}``.
"""

from __future__ import annotations

__all__ = ["DEFAULT_PROMPT_TEMPLATE", "PROMPT_TEMPLATES", "TEMPLATE_FIELDS"]

PROMPT_TEMPLATES = {
    # MoWE-Audio's presets: the audio tokens, then the instruction.
    "mowe": "{audio} {instruction}\n",
    # Used when the tokenizer has no chat template and no prompt_template is given.
    "default": "{system}\nuser: {audio} {instruction}\nassistant:",
}

DEFAULT_PROMPT_TEMPLATE = PROMPT_TEMPLATES["default"]

#: The fields a template may use; ``audio`` and ``instruction`` are required.
TEMPLATE_FIELDS = frozenset({"audio", "instruction", "system"})

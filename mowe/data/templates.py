"""The one table of prompt templates: ``{audio}`` is where the audio placeholder token(s) go.

Used by :class:`~mowe.data.processor.MoWEProcessor` (``prompt_template=PROMPT_TEMPLATES["salmonn"]``) and by the
presets in :mod:`mowe.presets` (``Preset.prompt_template``). A template may also hold ``{system}``.
"""

from __future__ import annotations

__all__ = ["DEFAULT_PROMPT_TEMPLATE", "LTU_AS_PROMPT_TEMPLATE", "PROMPT_TEMPLATES", "SALMONN_PROMPT_TEMPLATE",
           "TEMPLATE_FIELDS"]

PROMPT_TEMPLATES = {
    # SALMONN (arXiv 2310.13289, sec. 3): the audio tokens inside <Speech></Speech> in a Vicuna-style user turn.
    "salmonn": "USER: <Speech>{audio}</Speech> {instruction}\nASSISTANT:",
    # LTU-AS (arXiv 2309.14405) prompts its LLaMA in the Alpaca format; its code puts the audio tokens before
    # the prompt text.
    "ltu_as": ("{audio}Below is an instruction that describes a task. Write a response that appropriately "
               "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"),
    # LTU-AS as released (templates/alpaca_short.json): the audio tokens before the whole prompt (before BOS
    # too) and Whisper's transcript of the clip as the input; built by mowe.data.ltu_as_prompt, not the
    # processor (which knows no {transcript} field).
    "ltu_as_faithful": "{audio}### Instruction:\n{instruction}\n\n### Input:\n{transcript}\n\n### Response:\n",
    # MoWE-Audio's presets: the audio tokens, then the instruction.
    "mowe": "{audio} {instruction}\n",
    # Used when the tokenizer has no chat template and no prompt_template is given.
    "default": "{system}\nuser: {audio} {instruction}\nassistant:",
}

SALMONN_PROMPT_TEMPLATE = PROMPT_TEMPLATES["salmonn"]
LTU_AS_PROMPT_TEMPLATE = PROMPT_TEMPLATES["ltu_as"]
DEFAULT_PROMPT_TEMPLATE = PROMPT_TEMPLATES["default"]

#: The fields a template may use; ``audio`` and ``instruction`` are required.
TEMPLATE_FIELDS = frozenset({"audio", "instruction", "system"})

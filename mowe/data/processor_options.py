"""The options of a :class:`~mowe.data.processor.MoWEProcessor`, defined once.

:class:`ProcessorOptions` is the one place an option is spelled: its fields (names, types, defaults) are the
processor's keyword arguments (the constructor's signature is built from them), its checks run whenever
options are built (keywords in Python, ``processor_config.json``, a run file's ``processor`` section), and
:meth:`ProcessorOptions.to_dict` is what ``processor_config.json`` holds. Adding an option is one field here
(plus its line in the docstring, and the code that uses it).
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mowe.config import check_fields
from mowe.data.audio import LengthPolicy
from mowe.data.templates import TEMPLATE_FIELDS
from mowe.data.tokenizer import AUDIO_TOKEN
from mowe.errors import ConfigError

__all__ = ["DEFAULT_SYSTEM_PROMPT", "PROCESSOR_CONFIG_NAME", "ProcessorOptions"]

PROCESSOR_CONFIG_NAME = "processor_config.json"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant that listens to audio."


@dataclass(frozen=True)
class ProcessorOptions:
    """Everything a :class:`~mowe.data.processor.MoWEProcessor` is configured with, besides its tokenizer.

    Attributes:
        audio_token: the placeholder, one per clip.
        system_prompt: system turn of the chat template (or ``{system}`` of a template); None for none.
        prompt_template: a format string with ``{audio}`` and ``{instruction}`` (``{system}`` optional);
            overrides the tokenizer's chat template.
        paraphrases: task -> alternative instructions; a training collator replaces an example's instruction
            by one of its task's paraphrases (deterministic per ``(seed, epoch, example id)``).
        max_audio_seconds: longest clip (None: no limit).
        length_policy: for longer clips: ``"truncate"`` (warn and keep the start), ``"chunk"`` (inference:
            split into windows of ``max_audio_seconds``, one placeholder each; training truncates instead)
            or ``"error"``.
        seed: seed of the paraphrase choice.
        max_duration_seconds: longest audio read in full (default 3600 s, one hour; None: no limit). It
            applies whenever a clip is used whole (``"chunk"``, ``"error"`` or ``max_audio_seconds=None``;
            ``"truncate"`` reads only the first ``max_audio_seconds``): a longer one raises
            :class:`~mowe.errors.AudioTooLongError` naming the limit, the clip's duration and its file,
            checked on a file's header before any sample is decoded (an MP3's, whose header only estimates it,
            on its samples).

    Raises:
        ConfigError: a wrong type or value, naming the option (``processor.length_policy: ...``): the same
            checks and messages for keywords, ``processor_config.json`` and a run file.
    """

    audio_token: str = AUDIO_TOKEN
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    prompt_template: str | None = None
    paraphrases: dict[str, list[str]] | None = None
    max_audio_seconds: float | None = 30.0
    length_policy: LengthPolicy = "truncate"
    seed: int = 0
    max_duration_seconds: float | None = 3600.0

    def __post_init__(self) -> None:
        if isinstance(self.paraphrases, Mapping) and not isinstance(self.paraphrases, dict):
            object.__setattr__(self, "paraphrases", dict(self.paraphrases))
        # Types and Literal choices by the one config loader, then the value rules of mowe.validation
        # (max_audio_seconds, seed); then the checks that need more than one field.
        check_fields(self, where="processor")
        _check_values(self)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> ProcessorOptions:
        """The options from keyword arguments; an unknown keyword is a :class:`ConfigError` naming it."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(k for k in kwargs if k not in names)
        if unknown:
            raise ConfigError(f"processor.{unknown[0]}: unknown option {unknown[0]!r} (known: {names})")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Every option, as ``processor_config.json`` holds them (copies of the containers)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if d["paraphrases"] is not None:
            d["paraphrases"] = {t: list(v) for t, v in d["paraphrases"].items()}
        return d

    def replace(self, **changes: Any) -> ProcessorOptions:
        """A copy with some options changed (checked like new ones)."""
        return type(self).from_kwargs(**{**self.to_dict(), **changes})


def _check_values(o: ProcessorOptions) -> None:
    if not o.audio_token:
        raise ConfigError("processor.audio_token: must be a non-empty string, got ''")
    if o.system_prompt and o.audio_token in o.system_prompt:
        raise ConfigError(f"processor.system_prompt: must not contain the audio token {o.audio_token!r}")
    if o.prompt_template is not None:
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(o.prompt_template) if f is not None}
        except ValueError as e:
            raise ConfigError(f"processor.prompt_template: not a valid format string: {e}") from e
        bad = sorted(fields - TEMPLATE_FIELDS)
        if bad:
            raise ConfigError(
                f"processor.prompt_template: unknown field {{{bad[0]}}}; allowed: audio, instruction, system"
            )
        for need in ("audio", "instruction"):
            if need not in fields:
                raise ConfigError(f"processor.prompt_template: must contain {{{need}}}")
    for task, opts in (o.paraphrases or {}).items():
        if not opts:
            raise ConfigError(f"processor.paraphrases.{task}: must be a non-empty list of strings")

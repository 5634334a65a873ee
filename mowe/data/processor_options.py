"""The options of a :class:`~mowe.data.processor.MoWEProcessor`: what ``processor_config.json`` may hold, and their
checks."""

from __future__ import annotations

import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from mowe.data.templates import TEMPLATE_FIELDS
from mowe.errors import ConfigError

__all__ = ["PROCESSOR_CONFIG_NAME", "ProcessorOptions", "check_options"]

PROCESSOR_CONFIG_NAME = "processor_config.json"

_POLICIES = ("truncate", "chunk", "error")


@dataclass(frozen=True)
class ProcessorOptions:
    """What ``processor_config.json`` may hold (read with the one strict loader, :func:`mowe.config.from_dict`)."""

    audio_token: str = "<|audio|>"
    system_prompt: str | None = None
    prompt_template: str | None = None
    paraphrases: dict[str, list[str]] | None = None
    max_audio_seconds: float | None = 30.0
    length_policy: Literal["truncate", "chunk", "error"] = "truncate"
    seed: int = 0


def check_options(*, audio_token, system_prompt, prompt_template, paraphrases, max_audio_seconds, length_policy,
                   seed) -> None:
    if not isinstance(audio_token, str) or not audio_token:
        raise ConfigError(f"audio_token must be a non-empty string, got {audio_token!r}")
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise ConfigError(f"system_prompt must be a string or None, got {system_prompt!r}")
    if system_prompt and audio_token in system_prompt:
        raise ConfigError("system_prompt must not contain the audio token")
    if prompt_template is not None:
        if not isinstance(prompt_template, str):
            raise ConfigError(f"prompt_template must be a string or None, got {prompt_template!r}")
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(prompt_template) if f is not None}
        except ValueError as e:
            raise ConfigError(f"prompt_template is not a valid format string: {e}") from e
        bad = sorted(fields - TEMPLATE_FIELDS)
        if bad:
            raise ConfigError(f"prompt_template has unknown field {{{bad[0]}}}; allowed: audio, instruction, system")
        for need in ("audio", "instruction"):
            if need not in fields:
                raise ConfigError(f"prompt_template must contain {{{need}}}")
    if paraphrases is not None:
        if not isinstance(paraphrases, Mapping):
            raise ConfigError(f"paraphrases must map task -> list of strings, got {type(paraphrases).__name__}")
        for task, opts in paraphrases.items():
            if (not isinstance(task, str) or isinstance(opts, str) or not isinstance(opts, Sequence) or not opts
                    or not all(isinstance(o, str) for o in opts)):
                raise ConfigError(f"paraphrases[{task!r}] must be a non-empty list of strings")
    if max_audio_seconds is not None and (
        isinstance(max_audio_seconds, bool) or not isinstance(max_audio_seconds, (int, float))
        or not math.isfinite(max_audio_seconds) or max_audio_seconds <= 0
    ):
        raise ConfigError(f"max_audio_seconds must be a positive number or None, got {max_audio_seconds!r}")
    if length_policy not in _POLICIES:
        raise ConfigError(f"length_policy must be one of {_POLICIES}, got {length_policy!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an int, got {seed!r}")

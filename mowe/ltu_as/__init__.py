"""LTU-AS (Gong et al., arXiv 2309.14405) in one place: its preset, curriculum, prompt formats (with Whisper's
transcript), the transcriber, and its released checkpoint's format both ways (``mowe convert ltu-as``).

Its parts are mowe's generic ones: the windowed all-block Whisper
(:class:`~mowe.encoders.whisper_window.WindowedWhisperEncoder`, family ``"whisper_window"``) and the
time-and-layer transformer (:class:`~mowe.connectors.tltr.TLTRConnector`).

Example:
    >>> from mowe.ltu_as import ltu_as
    >>> ltu_as(tiny=True).config.strong.family
    'whisper_window'
"""

from mowe.ltu_as.checkpoint import (
    from_ltu_as,
    load_ltu_as,
    load_ltu_as_state_dict,
    ltu_as_state_dict,
    to_ltu_as,
)
from mowe.ltu_as.convert import CONVERTER
from mowe.ltu_as.preset import LTU_AS_CLOSED_ENDED_TASKS, ltu_as, preset_stages
from mowe.ltu_as.prompt import (
    FAITHFUL_PROMPT_TEMPLATE,
    PROMPT_TEMPLATE,
    clean_transcript,
    ltu_as_batch,
    ltu_as_input_ids,
    ltu_as_prompt,
)
from mowe.ltu_as.stages import ltu_as_stages
from mowe.ltu_as.transcribe import WhisperTranscriber

__all__ = [
    "CONVERTER",
    "FAITHFUL_PROMPT_TEMPLATE",
    "LTU_AS_CLOSED_ENDED_TASKS",
    "PROMPT_TEMPLATE",
    "WhisperTranscriber",
    "clean_transcript",
    "from_ltu_as",
    "load_ltu_as",
    "load_ltu_as_state_dict",
    "ltu_as",
    "ltu_as_batch",
    "ltu_as_input_ids",
    "ltu_as_prompt",
    "ltu_as_stages",
    "ltu_as_state_dict",
    "preset_stages",
    "to_ltu_as",
]

"""Moved to :mod:`mowe.data.processor`; this re-export keeps ``from mowe.processor import MoWEProcessor`` working."""

from mowe.data.processor import (
    DEFAULT_PROMPT_TEMPLATE,
    IGNORE_INDEX,
    LTU_AS_PROMPT_TEMPLATE,
    MODEL_INPUT_KEYS,
    PROCESSOR_CONFIG_NAME,
    SALMONN_PROMPT_TEMPLATE,
    SAMPLE_RATE,
    MoWECollator,
    MoWEProcessor,
    ProcessorOptions,
)

__all__ = ["DEFAULT_PROMPT_TEMPLATE", "IGNORE_INDEX", "LTU_AS_PROMPT_TEMPLATE", "MODEL_INPUT_KEYS",
           "PROCESSOR_CONFIG_NAME", "SALMONN_PROMPT_TEMPLATE", "SAMPLE_RATE", "MoWECollator", "MoWEProcessor",
           "ProcessorOptions"]

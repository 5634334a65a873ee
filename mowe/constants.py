"""Constants shared by several stages of the pipeline, defined once here.

Other modules re-export them where users already import them (``mowe.encoders.base.SAMPLE_RATE``,
``mowe.merge.IGNORE_INDEX``, ``mowe.data.processor.MODEL_INPUT_KEYS``).
"""

from __future__ import annotations

__all__ = ["IGNORE_INDEX", "MODEL_INPUT_KEYS", "SAMPLE_RATE"]

#: Sample rate (Hz) of every waveform a mowe encoder takes: 16 kHz mono float32.
SAMPLE_RATE = 16_000

#: Label of tokens that carry no loss (prompt, audio and padding positions), as in transformers.
IGNORE_INDEX = -100

#: Batch keys handed to ``model(...)``; the rest of a collated batch (``task``, ``id``) is bookkeeping.
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "labels", "waveforms", "wave_lengths")

"""Data: audio I/O (:mod:`~mowe.data.audio`), JSONL manifests (:mod:`~mowe.data.manifest`), the training sampler
(:mod:`~mowe.data.samplers`), prompt templates (:mod:`~mowe.data.templates`), the processor
(:mod:`~mowe.data.processor`), the collator (:mod:`~mowe.data.collator`) and an offline BPE tokenizer
(:mod:`~mowe.data.tokenizer`)."""

from mowe.data.manifest import (
    REQUIRED_FIELDS,
    BadExampleWarning,
    ManifestAudioError,
    ManifestDataset,
    SkippedExample,
)
from mowe.data.samplers import StageSampler

__all__ = ["REQUIRED_FIELDS", "BadExampleWarning", "ManifestAudioError", "ManifestDataset", "SkippedExample",
           "StageSampler"]

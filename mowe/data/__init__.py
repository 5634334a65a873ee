"""Data: audio I/O (:mod:`~mowe.data.audio`), JSONL manifests (:mod:`~mowe.data.manifest`), Hugging Face
datasets (:mod:`~mowe.data.hf_dataset`, :mod:`~mowe.data.open_data`: a manifest or a dataset by what the path
is), the training samplers (:mod:`~mowe.data.samplers`, :mod:`~mowe.data.stream_sampler`), prompt templates
(:mod:`~mowe.data.templates`), the processor (:mod:`~mowe.data.processor`), the collator
(:mod:`~mowe.data.collator`) and an offline BPE tokenizer (:mod:`~mowe.data.tokenizer`). ``datasets`` itself
is imported only when a dataset is opened (the ``mowe[datasets]`` extra)."""

from mowe.data.hf_dataset import DatasetColumns, HFAudioDataset, HFStreamDataset
from mowe.data.manifest import (
    REQUIRED_FIELDS,
    BadExampleWarning,
    ManifestAudioError,
    ManifestDataset,
    SkippedExample,
)
from mowe.data.open_data import open_dataset
from mowe.data.samplers import StageSampler

__all__ = [
    "REQUIRED_FIELDS",
    "BadExampleWarning",
    "DatasetColumns",
    "HFAudioDataset",
    "HFStreamDataset",
    "ManifestAudioError",
    "ManifestDataset",
    "SkippedExample",
    "StageSampler",
    "open_dataset",
]

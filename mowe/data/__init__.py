"""Data: audio I/O (:mod:`~mowe.data.audio`), JSONL manifests (:mod:`~mowe.data.manifest`), the training sampler
(:mod:`~mowe.data.samplers`), prompt templates (:mod:`~mowe.data.templates`), the processor
(:mod:`~mowe.data.processor`), the collator (:mod:`~mowe.data.collator`) and an offline BPE tokenizer
(:mod:`~mowe.data.tokenizer`)."""

from mowe.data.manifest import *  # noqa: F401,F403  (``from mowe.data import ManifestDataset`` keeps working)
from mowe.data.manifest import __all__ as _manifest_all
from mowe.data.samplers import StageSampler  # noqa: F401

__all__ = [*_manifest_all, "StageSampler"]

"""Data: audio I/O (:mod:`~mowe.data.audio`), JSONL manifests and samplers (:mod:`~mowe.data.manifest`),
the processor and collator (:mod:`~mowe.data.processor`) and an offline BPE tokenizer (:mod:`~mowe.data.tokenizer`)."""

from mowe.data.manifest import *  # noqa: F401,F403  (``from mowe.data import ManifestDataset`` keeps working)
from mowe.data.manifest import __all__  # noqa: F401

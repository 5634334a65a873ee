"""What a corpus build wrote (``corpus_info.json``), shared by :mod:`mowe.demo.corpus` and
:mod:`mowe.demo.questions`."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from mowe.constants import SAMPLE_RATE

__all__ = ["SPLITS", "CorpusInfo"]

SPLITS = ("train", "dev", "test")


@dataclasses.dataclass
class CorpusInfo:
    """What :func:`build_corpus` wrote (also saved as ``corpus_info.json`` in ``out_dir``).

    Attributes:
        out_dir: the corpus folder.
        counts: ``counts[split][task]`` = number of examples.
        train_voices: espeak voices (``"en-gb+m3"``) the train split may use.
        test_voices: espeak voices the dev and test splits may use; disjoint from ``train_voices``.
        seed: the seed the corpus was built with.
        size: requested number of training examples.
        tasks: the tasks in the corpus.
        sample_rate: audio sample rate (16 kHz).
        held_out: a sentence saying what is held out.
    """

    out_dir: str
    counts: dict[str, dict[str, int]]
    train_voices: list[str]
    test_voices: list[str]
    seed: int = 0
    size: int = 0
    tasks: list[str] = dataclasses.field(default_factory=list)
    sample_rate: int = SAMPLE_RATE
    held_out: str = ""

    def manifest(self, split: str) -> Path:
        """Path of the JSONL manifest of ``split`` (``"train"``, ``"dev"`` or ``"test"``)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return Path(self.out_dir) / f"{split}.jsonl"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, path: str | os.PathLike) -> CorpusInfo:
        """Read ``corpus_info.json`` (``path`` may be the file or the corpus folder)."""
        p = Path(path)
        if p.is_dir():
            p = p / "corpus_info.json"
        return cls(**json.loads(p.read_text()))

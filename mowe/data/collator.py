"""The collator: :class:`~mowe.data.ManifestDataset` examples -> one model batch, through a
:class:`~mowe.data.processor.MoWEProcessor`.

Shape legend: ``b`` the batch (one row per sample in text tensors, per clip in audio tensors), ``s`` audio
samples, ``L`` text tokens.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mowe.data.audio import pad_batch
from mowe.errors import MoWEInputError

if TYPE_CHECKING:
    from mowe.data.processor import MoWEProcessor

__all__ = ["MoWECollator"]


class MoWECollator:
    """Collate :class:`~mowe.data.ManifestDataset` examples into a model batch.

    Args:
        processor: the :class:`MoWEProcessor`.
        train: True: prompt + answer + eos with labels, paraphrased instructions. False: prompts only (for
            ``generate``), the answers kept as ``batch["answer"]``.
        padding_side: side of the token padding; None (default): right for training, left for generation.
        max_length: cap on text tokens per sample (answers are cut; see :meth:`MoWEProcessor.encode`).
        augment: paraphrase instructions (default: ``train``); False gives a training-style batch with the
            original instructions, e.g. for a dev loss.

    ``collator(examples)`` drops None examples (unreadable in ``"skip"`` mode) and returns::

        {"input_ids": (b, L) long, "attention_mask": (b, L) long, "labels": (b, L) long   # train only
         "waveforms": (b, s) float32 right-zero-padded, "wave_lengths": (b,) long,
         "task": list[str], "id": list[str], "instruction": list[str] (as used), "answer": list[str],
         "clips_per_example": list[int], "num_dropped": int}

    The audio tensors have one row per clip: as many as samples, except at inference with
    ``length_policy="chunk"`` (a long clip's windows are adjacent rows; ``clips_per_example`` says how many
    rows are whose). Pass only :data:`MODEL_INPUT_KEYS` to the model. When every example was dropped it
    returns None: skip that step.
    """

    def __init__(
        self,
        processor: MoWEProcessor,
        *,
        train: bool = True,
        padding_side: str | None = None,
        max_length: int | None = None,
        augment: bool | None = None,
    ):
        if padding_side not in (None, "left", "right"):
            raise MoWEInputError(f"padding_side must be 'left', 'right' or None, got {padding_side!r}")
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
        ):
            raise MoWEInputError(f"max_length must be a positive int or None, got {max_length!r}")
        self.processor = processor
        self.train = train
        self.padding_side = padding_side or ("right" if train else "left")
        self.max_length = max_length
        self.augment = train if augment is None else augment
        self.epoch = 0
        self._warned_chunk = False

    def set_epoch(self, epoch: int) -> None:
        """Paraphrase choices depend on the epoch (call before creating the epoch's DataLoader iterator)."""
        self.epoch = int(epoch)

    def __call__(self, examples: Sequence[Mapping[str, Any] | None]) -> dict[str, Any] | None:
        kept = [e for e in examples if e is not None]
        if not kept:
            return None
        if self.train and self.processor.length_policy == "chunk" and not self._warned_chunk:
            self._warned_chunk = True
            warnings.warn(
                "length_policy='chunk' is for inference; a training collator truncates long clips to "
                "max_audio_seconds instead",
                UserWarning,
                stacklevel=2,
            )
        proc = self.processor
        seqs, labs, clips, instructions, counts = [], [], [], [], []
        for i, ex in enumerate(kept):
            ex_id = str(ex.get("id", i))
            instruction = ex["instruction"]
            if self.augment:
                instruction = proc.paraphrase(instruction, ex.get("task"), ex_id, epoch=self.epoch)
            windows = proc.prepare_audio(ex["audio"], train=self.train, who=f"example {ex_id!r} audio")
            ids, lab = proc.encode(
                instruction,
                answer=ex["answer"] if self.train else None,
                num_clips=len(windows),
                max_length=self.max_length,
                who=f"example {ex_id!r}",
            )
            seqs.append(ids)
            labs.append(lab)
            clips.extend(windows)
            counts.append(len(windows))
            instructions.append(instruction)
        batch: dict[str, Any] = proc.pad(seqs, labs if self.train else None, padding_side=self.padding_side)
        batch["waveforms"], batch["wave_lengths"] = pad_batch(clips)
        batch["task"] = [str(ex.get("task", "")) for ex in kept]
        batch["id"] = [str(ex.get("id", i)) for i, ex in enumerate(kept)]
        batch["instruction"] = instructions
        batch["answer"] = [ex.get("answer", "") for ex in kept]
        batch["clips_per_example"] = counts
        batch["num_dropped"] = len(examples) - len(kept)
        return batch

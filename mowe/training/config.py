"""Training-loop settings (:class:`TrainConfig`, frozen and strict like every mowe config) and results."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Literal

from mowe.config import check_fields, from_dict, to_dict
from mowe.errors import ConfigError

__all__ = ["TrainConfig", "TrainResult"]


@dataclass(frozen=True)
class TrainConfig:
    """Training-loop settings (the stages carry steps, learning rates and task weights).

    Attributes:
        output_dir: where ``log.jsonl``, ``checkpoints/`` and ``final/`` go.
        batch_size: examples per process per micro-batch. Global batch = ``batch_size * num_processes *
            grad_accum``.
        grad_accum: micro-batches per optimizer step.
        max_grad_norm: clip the global gradient norm to this (None: no clipping; the norm is still logged).
        weight_decay: AdamW weight decay, applied to matrices only (not to biases and norms).
        adam_betas, adam_eps: AdamW settings.
        mixed_precision: ``"no"`` or ``"bf16"`` (autocast; master weights stay in their own dtype).
        gradient_checkpointing: recompute LLM activations in the backward pass (less memory, ~30% slower).
        eval_every: evaluate every this many steps (0: at the end of each stage; needs ``eval_dataset`` or
            ``eval_fn``).
        save_every: checkpoint every this many steps (0: only at the end).
        log_every: log every this many steps.
        seed: seeds python, numpy and torch (process ``r`` uses ``seed + r``) and the data order.
        num_workers: DataLoader worker processes.
        on_nonfinite_loss: ``"skip"`` (zero the gradients, skip the update, count it in the logs) or
            ``"stop"`` (raise :class:`NonFiniteLossError`).
        max_nonfinite_fraction: the skip budget under ``"skip"``: once more than this fraction of the run's
            steps (all stages) has been skipped, the run fails with :class:`NonFiniteLossError`; a run that
            skipped fewer still says so on stderr at the end.
        keep_last_checkpoints: checkpoints to keep (older ones are deleted; the latest is never deleted).
        save_final: write ``output_dir/final`` with ``model.save_pretrained`` at the end.
        progress: show a tqdm progress bar on the main process.
        group_by_length: global batches hold clips of similar length, so the encoders pad less (needs a
            dataset with ``lengths``, e.g. :class:`~mowe.data.ManifestDataset`; otherwise a warning and the
            plain order). The order stays a seeded function of ``(seed, stage, epoch)``, so resuming is still
            exact.
        length_group_mult: mega-batch size, in global batches, within which clips are sorted by length
            (bigger: less padding, less randomness).
        pack_sequences: how the LLM runs each batch (``MoWEAudioLLM.forward(pack=...)``; the same loss up to
            float rounding): ``"auto"`` (default) the cheapest by FLOPs for the batch
            (:func:`mowe.merge.cheapest_llm_layout`), true one packed row whose position ids restart per
            sample, ``"groups"`` rows of similar length together, false one padded batch. Used when the
            model's ``forward`` takes ``pack``.
        feature_cache_dir: a folder for frozen encoders' features
            (:class:`~mowe.encoders.cache.FeatureCache`): each clip is encoded once per encoder and read back
            in later epochs; safe to share between ranks and runs (entries are keyed by audio content and
            encoder weights + settings). None: encode live.
        feature_cache_max_bytes: bound on that folder (least recently used entries are evicted).
        log_with: accelerate trackers mirroring log.jsonl: ``["tensorboard", "wandb", "mlflow"]`` or
            ``["all"]`` (installed ones); None: TensorBoard when installed (:mod:`mowe.training.logging`).
    """

    output_dir: str
    batch_size: int = 8
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    mixed_precision: Literal["no", "bf16"] = "no"
    gradient_checkpointing: bool = False
    eval_every: int = 0
    save_every: int = 0
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    on_nonfinite_loss: Literal["skip", "stop"] = "skip"
    max_nonfinite_fraction: float = 0.5
    keep_last_checkpoints: int = 2
    save_final: bool = True
    progress: bool = True
    group_by_length: bool = True
    length_group_mult: int = 50
    pack_sequences: bool | Literal["auto", "groups"] = "auto"
    feature_cache_dir: str | None = None
    feature_cache_max_bytes: int | None = None
    log_with: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.output_dir, os.PathLike):
            object.__setattr__(self, "output_dir", os.fspath(self.output_dir))
        # Types and Literal choices by the one config loader, then every value rule of mowe.validation (once).
        check_fields(self, where="train")
        if not self.output_dir:
            raise ConfigError("train.output_dir: must be a non-empty path")

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "train") -> TrainConfig:
        """Strict (:func:`mowe.config.from_dict`): an unknown key, a wrong type or a bad choice raises
        :class:`ConfigError` naming the key path (``train.seed``)."""
        return from_dict(cls, data, where=where)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (the config is frozen)."""
        return dataclasses.replace(self, **changes)


@dataclass
class TrainResult:
    """What :meth:`Trainer.train` returns."""

    global_step: int
    skipped_nonfinite: int
    final_dir: str | None
    last_checkpoint: str | None
    log_file: str

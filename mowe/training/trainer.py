"""Multi-stage training on accelerate: one loop for CPU, one GPU, DDP, FSDP and DeepSpeed.

The trainer runs a list of :class:`~mowe.curriculum.Stage` objects in order. Each stage freezes everything but
its parts, builds a fresh AdamW over the trainable parameters with a linear warm-up + cosine schedule, and
draws batches from its own deterministic :class:`~mowe.data.samplers.StageSampler` (a seeded shuffle, or a
per-task weighted draw; with ``group_by_length``, global batches of similar-length clips).

Batch contract (what a collator yields; see :mod:`mowe.data.processor`)::

    {"input_ids": (b, L) long, "attention_mask": (b, L) long, "labels": (b, L) long (-100 off the answer),
     "waveforms": (b, s) float32 right-zero-padded, "wave_lengths": (b,) long, "task": list[str], "id":
     list[str]}

A step consumes ``grad_accum`` consecutive global batches. Micro-batch ``m`` of a stage is batch
``m % batches_per_epoch`` of epoch ``m // batches_per_epoch``: the data position is a function of the step,
and resuming fast-forwards the index list without loading a single skipped example. Checkpoints (layout in
:mod:`mowe.training.checkpoint`) restore weights, optimizer, scheduler, RNG states and data position, so a
resumed run ends with the same weights as an uninterrupted one. Settings:
:class:`~mowe.training.config.TrainConfig`.

Example:
    >>> trainer = Trainer(model, dataset, config=TrainConfig(output_dir="run"), collate_fn=collator,
    ...                   stages=mowe_default_stages(1000))                    # doctest: +SKIP
    >>> trainer.train(resume="latest")                                         # doctest: +SKIP
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mowe.constants import MODEL_INPUT_KEYS
from mowe.curriculum import Stage, stages_to_list
from mowe.data.samplers import StageSampler, mix_seed, task_list_of
from mowe.data.stream_sampler import StreamSampler
from mowe.errors import ConfigError, NonFiniteLossError
from mowe.hf.adapter import set_lora_scale
from mowe.training import checkpoint as ckpt
from mowe.training.checkpoint import find_checkpoint, load_trainer_state
from mowe.training.config import TrainConfig, TrainResult
from mowe.training.distributed import (
    clip_grad_norm,
    count_label_tokens,
    export_final,
    forward_backward,
    fsdp_requested,
    is_sharded,
    place_model,
    verify_sharded,
)
from mowe.training.guards import check_nonfinite, report_end_of_run
from mowe.training.logging import LossWindow, RunLog
from mowe.training.stages import apply_stage, eval_due, log_stage_start

__all__ = [
    "MODEL_INPUT_KEYS",
    "NonFiniteLossError",
    "StageSampler",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "eval_loss",
    "find_checkpoint",
    "forward_backward",
    "load_trainer_state",
    "make_optimizer",
]


def make_optimizer(model: nn.Module, *, lr: float, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; weight decay on matrices only (not on biases and norms)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=lr, betas=config.adam_betas, eps=config.adam_eps
    )


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute the LLM's activations in the backward pass (non-reentrant)."""
    llm = getattr(model, "llm", None)
    if llm is None or not hasattr(llm, "gradient_checkpointing_enable"):
        raise ConfigError("train.gradient_checkpointing: the model has no LLM that supports it")
    if hasattr(llm, "activation_checkpointing_enable"):  # transformers >= 5
        llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if getattr(llm, "config", None) is not None:
        llm.config.use_cache = False


def prepare_for_stage(
    accelerator: Any, model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[Any, Any]:
    """(Re-)wrap the model for this stage's trainable set (DDP registers hooks on trainable params only).

    A model sharded by :func:`mowe.training.distributed.place_model` (FSDP2) is not wrapped again: its
    trainable parameters must all be sharded (checked), and only the optimizer goes through accelerate."""
    release_accelerator(accelerator)
    model.__dict__.pop("_is_accelerate_prepared", None)
    if "_original_forward" in model.__dict__:  # undo the previous stage's autocast wrapper
        model.forward = model.__dict__.pop("_original_forward")
    if is_sharded(model) or fsdp_requested():
        verify_sharded(model)
        if accelerator.mixed_precision == "bf16":
            model.__dict__["_original_forward"] = model.forward
            model.forward = torch.autocast(device_type=accelerator.device.type, dtype=torch.bfloat16)(
                model.forward
            )
        return model, accelerator.prepare_optimizer(optimizer)
    return accelerator.prepare(model, optimizer)


def release_accelerator(accelerator: Any) -> None:
    """Drop accelerate's references to the previous stage's wrapper and optimizer (without the full
    ``gc.collect`` of ``free_memory``, which costs ~0.4 s; DeepSpeed needs its engine destroyed, so it gets
       it)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        accelerator.free_memory()
        return
    for refs in (
        accelerator._models,
        accelerator._optimizers,
        accelerator._schedulers,
        accelerator._dataloaders,
    ):
        refs.clear()
    accelerator.step = 0


@torch.no_grad()
def eval_loss(
    accelerator: Any,
    model: nn.Module,
    dataset: Dataset,
    *,
    inputs: Callable[[dict[str, Any]], dict],
    batch_size: int,
    collate_fn: Callable,
    num_workers: int = 0,
) -> float:
    """Loss over ``dataset``, sharded over processes and summed across them: the mean ``loss`` per example,
    except that for a model whose ``forward`` takes ``num_items_in_batch`` its LM part is the loss over all
       answer tokens /
    their count (the same for any batch size and process count; the weighted aux loss stays a per-example
    mean).

    A sharded (FSDP) model needs every process to run as many forwards: processes with one batch fewer run a
    filler batch (example 0) whose loss is not counted."""
    acc = accelerator
    idx = list(range(len(dataset)))[acc.process_index :: acc.num_processes]  # type: ignore[arg-type]
    batches = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    real = len(batches)
    if is_sharded(model) and len(dataset):  # type: ignore[arg-type]
        most = math.ceil(math.ceil(len(dataset) / acc.num_processes) / batch_size)  # type: ignore[arg-type]
        batches += [[0]] * (most - real)
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate_fn, num_workers=num_workers)
    tokens = "num_items_in_batch" in inspect.signature(acc.unwrap_model(model).forward).parameters
    sums = [
        0.0,
        0.0,
        0.0,
        0.0,
    ]  # summed LM loss, its tokens; per-example loss (aux part only with tokens), examples
    for i, batch in enumerate(loader):
        if not batch or len(batch.get("input_ids", [])) == 0:
            continue
        with acc.autocast():
            res = model(
                **inputs(batch), **({"num_items_in_batch": 1} if tokens else {})
            )  # 1: the summed loss
        if i >= real:  # the filler batch: the same collectives, nothing counted
            continue
        n = float(batch["input_ids"].shape[0])
        if tokens:
            lm = float(res.lm_loss)
            sums[0] += lm
            sums[1] += count_label_tokens(batch)
            sums[2] += (float(res.loss) - lm) * n
        else:
            sums[2] += float(res.loss) * n
        sums[3] += n
    lm_sum, n_tok, rest, n_ex = reduce_sum(acc, sums)
    return (lm_sum / max(n_tok, 1.0) if tokens else 0.0) + rest / n_ex if n_ex else float("nan")


def reduce_sum(accelerator: Any, values: list[float]) -> list[float]:
    """``values`` summed over processes (float64)."""
    t = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        t = accelerator.reduce(t, reduction="sum")
    return t.tolist()


class Trainer:
    """Runs training stages on accelerate; resumable from atomic checkpoints.

    Args:
        model: a :class:`~mowe.MoWEAudioLLM` (or any module with the same parts and the same call signature,
            returning an object with ``loss`` and optionally ``lm_loss`` / ``aux_loss``).
        train_dataset: a map-style dataset of examples (dicts with a ``"task"``; None for a skipped bad file),
            or a stream (an object with ``streaming = True``, e.g.
            :class:`~mowe.data.hf_dataset.HFStreamDataset`), batched by
            :class:`~mowe.data.stream_sampler.StreamSampler` in the main process (``num_workers`` is not used;
            stages cannot weight tasks).
            For task-weighted stages it should have ``task_list`` (one task per example); otherwise it is
            iterated once to read the tasks. With ``lengths`` (and ``group_by_length``) batches group by
            length.
        config: loop settings.
        stages: run in order.
        collate_fn: examples -> batch dict (see the module docstring); drops None examples.
        eval_dataset: optional; its mean loss is logged as ``eval_loss`` every ``eval_every`` steps (0: at the
            end of each stage).
        eval_fn: optional ``eval_fn(model, step) -> dict[str, float]`` run on the main process (e.g. WER by
            generation); its results are logged with an ``eval_`` prefix.
    """

    def __init__(
        self,
        model: nn.Module,
        train_dataset: Dataset,
        *,
        config: TrainConfig,
        stages: Sequence[Stage],
        collate_fn: Callable[[list[Any]], dict[str, Any]],
        eval_dataset: Dataset | None = None,
        eval_fn: Callable[[nn.Module, int], dict[str, float]] | None = None,
    ):
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState, GradientState
        from accelerate.utils import DistributedDataParallelKwargs

        if not stages or not all(isinstance(s, Stage) for s in stages):
            raise ConfigError("stages: expected a non-empty list of mowe.curriculum.Stage")
        self.model, self.train_dataset, self.config, self.stages = model, train_dataset, config, list(stages)
        if config.feature_cache_dir is not None:
            model.use_feature_cache(config.feature_cache_dir, max_bytes=config.feature_cache_max_bytes)
        self.collate_fn, self.eval_dataset, self.eval_fn = collate_fn, eval_dataset, eval_fn
        # A fresh Accelerator per trainer: the shared state would otherwise keep the first trainer's mixed
        # precision and accumulation settings (the process group, in PartialState, is kept).
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
        # Sparse routing leaves unselected weak encoders without gradients: DDP must tolerate unused params.
        ddp = DistributedDataParallelKwargs(
            find_unused_parameters=getattr(model, "weak_encoders", None) is not None
        )
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.grad_accum,
            kwargs_handlers=[ddp],
        )
        self.output_dir = config.output_dir
        self.checkpoint_dir = os.path.join(self.output_dir, "checkpoints")
        self.log = RunLog(self.output_dir, enabled=self.is_main, log_with=config.log_with)
        self.log_file = self.log.file
        self.global_step = 0
        self.skipped_nonfinite = 0
        self._ever_trained: set[str] = set()
        self._task_list: list[str | None] | None = None
        self._lengths: list[float] | None = None
        self._lengths_read = False
        # Padding-free LLM passes when asked for and the model's forward supports them (MoWEAudioLLM does).
        self._pack = (
            config.pack_sequences is not False and "pack" in inspect.signature(model.forward).parameters
        )
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(model)

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def _length_list(self) -> list[float] | None:
        """The dataset's ``lengths`` when ``group_by_length`` is on (None: plain order; warns once if
        missing)."""
        if not self._lengths_read and self.config.group_by_length:
            lengths = getattr(self.train_dataset, "lengths", None)
            if lengths is None and self.is_main:
                warnings.warn(
                    f"train.group_by_length is on but the training dataset "
                    f"({type(self.train_dataset).__name__}) has no `lengths`; batches use the plain "
                    f"seeded order (set group_by_length: false to silence this)",
                    UserWarning,
                    stacklevel=3,
                )
            self._lengths = None if lengths is None else list(lengths)
        self._lengths_read = True
        return self._lengths

    @property
    def streaming(self) -> bool:
        return bool(getattr(self.train_dataset, "streaming", False))

    def _grouped(self) -> bool:
        """Whether batches group by length (checked against a checkpoint on resume)."""
        return self.config.group_by_length if self.streaming else self._length_list() is not None

    def _sampler(self, index: int) -> StageSampler | StreamSampler:
        stage = self.stages[index]
        acc = self.accelerator
        if self.streaming:
            if stage.tasks is not None:
                raise ConfigError(
                    f"stage {stage.name!r} samples by task weights, which needs a map-style "
                    f"dataset; a streaming dataset is read in order (set data.streaming: "
                    f"false, or keep the tasks with data.tasks)"
                )
            return StreamSampler(
                self.train_dataset,
                seed=self.config.seed,
                stage_index=index,
                batch_size=self.config.batch_size,
                num_processes=acc.num_processes,
                process_index=acc.process_index,
                group_by_length=self.config.group_by_length,
                group_mult=self.config.length_group_mult,
                stage_name=stage.name,
            )
        if stage.tasks is not None and self._task_list is None:
            self._task_list = task_list_of(self.train_dataset)
        return StageSampler(
            num_examples=len(self.train_dataset),
            task_list=self._task_list,  # type: ignore
            tasks=stage.tasks,
            seed=self.config.seed,
            stage_index=index,
            batch_size=self.config.batch_size,
            num_processes=acc.num_processes,
            process_index=acc.process_index,
            stage_name=stage.name,
            lengths=self._length_list(),
            group_mult=self.config.length_group_mult,
        )

    def _micro_batches(
        self, sampler: StageSampler | StreamSampler, index: int, start: int
    ) -> Iterator[dict[str, Any]]:
        """Yield batches forever, from micro-batch ``start`` of the stage."""
        set_epoch = getattr(self.collate_fn, "set_epoch", None)
        if isinstance(sampler, StreamSampler):
            current = None
            for epoch, examples in sampler.micro_batches(start):
                if epoch != current and callable(set_epoch):
                    set_epoch(epoch)
                current = epoch
                yield self.collate_fn(examples)
            return
        epoch, b = sampler.position(start)
        while True:
            if callable(set_epoch):  # e.g. MoWECollator: paraphrase choices depend on the epoch
                set_epoch(epoch)
            # Own generator: creating a loader must not draw from the global torch RNG (it would shift dropout
            # masks after a resume, which creates loaders at other points than an uninterrupted run).
            gen = torch.Generator().manual_seed(mix_seed(self.config.seed, index, epoch, b))
            yield from DataLoader(
                self.train_dataset,
                batch_sampler=sampler.process_batches(epoch, b),
                collate_fn=self.collate_fn,
                num_workers=self.config.num_workers,
                generator=gen,
            )
            epoch, b = epoch + 1, 0

    def _inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        dev = self.accelerator.device
        inputs = {k: batch[k].to(dev) for k in MODEL_INPUT_KEYS if k in batch and batch[k] is not None}
        if self._pack:
            inputs["pack"] = self.config.pack_sequences
        return inputs

    # ------------------------------------------------------------------------------------------ checkpoints
    def save_checkpoint(
        self,
        *,
        stage_index: int,
        step_in_stage: int,
        sampler: StageSampler,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
    ) -> str:
        """Write ``checkpoints/step-<global_step>`` atomically and point ``latest`` at it; returns its
        path."""
        cfg = self.config
        micro = step_in_stage * cfg.grad_accum
        epoch, in_epoch = sampler.position(micro)
        grouped = sampler.grouped if isinstance(sampler, StreamSampler) else sampler.lengths is not None
        state = {
            "format": ckpt.CHECKPOINT_FORMAT,
            "global_step": self.global_step,
            "stage_index": stage_index,
            "stage_name": self.stages[stage_index].name,
            "step_in_stage": step_in_stage,
            "epoch": epoch,
            "batch_in_epoch": in_epoch,
            "micro_batches_in_stage": micro,
            "skipped_nonfinite": self.skipped_nonfinite,
            "num_processes": self.accelerator.num_processes,
            "batch_size": cfg.batch_size,
            "grad_accum": cfg.grad_accum,
            "seed": cfg.seed,
            "stages": stages_to_list(self.stages),
            "ever_trained": sorted(self._ever_trained),
            "group_by_length": grouped,
            "length_group_mult": sampler.group_mult if grouped else None,
        }
        keys = list(self.model.state_dict().keys())
        keys_fn = getattr(self.model, "_keys_to_save", None)
        if keys_fn is not None:
            keep = set(keys_fn(False)) | self._ever_trained
            keys = [k for k in keys if k in keep]
        return ckpt.write_checkpoint(
            accelerator=self.accelerator,
            checkpoint_dir=self.checkpoint_dir,
            name=f"step-{self.global_step}",
            state=state,
            model=self.model,
            keys=keys,
            optimizer=optimizer,
            scheduler=scheduler,
            keep_last=cfg.keep_last_checkpoints,
        )

    def _resume(self, spec: str | os.PathLike) -> tuple[int, int, str | None]:
        """Load weights and counters of a checkpoint; returns ``(stage, step in stage, path)`` to go on
        from."""
        path = find_checkpoint(spec, self.output_dir)
        if path is None:
            return 0, 0, None
        state = load_trainer_state(path)
        cfg, acc = self.config, self.accelerator
        ckpt.check_compatible(
            state,
            path,
            batch_size=cfg.batch_size,
            num_processes=acc.num_processes,
            grad_accum=cfg.grad_accum,
            seed=cfg.seed,
            grouped=self._grouped(),
            length_group_mult=cfg.length_group_mult,
            stage_names=[s.name for s in self.stages],
        )
        ckpt.validate_resume(
            state, path, model=self.model, stages=self.stages, process_index=acc.process_index
        )
        ckpt.load_model_weights(self.model, path)
        self.global_step = int(state["global_step"])
        self.skipped_nonfinite = int(state["skipped_nonfinite"])
        self._ever_trained = set(state["ever_trained"])
        stage, step = int(state["stage_index"]), int(state["step_in_stage"])
        if step >= self.stages[stage].steps:  # saved at the end of a stage
            stage, step = stage + 1, 0
        self.log({"event": "resume", "step": self.global_step, "checkpoint": path})
        return stage, step, path

    # ------------------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss over ``eval_dataset`` (sharded over processes) and ``eval_fn``'s metrics."""
        out: dict[str, float] = {}
        was_training = self.model.training
        self.model.eval()
        try:
            if self.eval_dataset is not None:
                out["eval_loss"] = eval_loss(
                    self.accelerator,
                    self.model,
                    self.eval_dataset,
                    inputs=self._inputs,
                    batch_size=self.config.batch_size,
                    collate_fn=self.collate_fn,
                    num_workers=self.config.num_workers,
                )
            if self.eval_fn is not None and (self.is_main or is_sharded(self.model)):  # FSDP: all run it
                for k, v in self.eval_fn(self.model, self.global_step).items():
                    out[k if k.startswith("eval_") else f"eval_{k}"] = float(v)
            self.accelerator.wait_for_everyone()
        finally:
            self.model.train(was_training)
        return out

    # ------------------------------------------------------------------------------------------ training
    def train(self, resume: str | os.PathLike | None = None) -> TrainResult:
        """Run every stage (or the rest of them, when resuming).

        Args:
            resume: None (start fresh), ``"latest"`` (the run's latest checkpoint, or a fresh start when there
            is
                none yet: convenient for pre-emptible jobs), or a checkpoint path.

        Returns:
            :class:`TrainResult`.

        Raises:
            NonFiniteLossError: a NaN/Inf loss with ``on_nonfinite_loss="stop"``.
            CheckpointError: a resume path that is missing, incomplete, or from an incompatible run.
        """
        from accelerate.utils import set_seed
        from tqdm.auto import tqdm
        from transformers import get_cosine_schedule_with_warmup

        acc, cfg = self.accelerator, self.config
        set_seed(cfg.seed, device_specific=True)
        if self.is_main:
            os.makedirs(self.checkpoint_dir, exist_ok=True)
            ckpt.clean_stale_tmp(self.checkpoint_dir)
        acc.wait_for_everyone()
        self.log.open_tensorboard()
        place_model(acc, self.model)  # + FSDP2 sharding when the launcher asked for FSDP
        start_stage, start_step, resume_path = self._resume(resume) if resume is not None else (0, 0, None)
        bar = tqdm(
            total=self.total_steps,
            initial=self.global_step,
            disable=not (self.is_main and cfg.progress),
            dynamic_ncols=True,
            desc="train",
        )
        last_ckpt, rng_pending = resume_path, resume_path is not None
        try:
            for si in range(start_stage, len(self.stages)):
                stage = self.stages[si]
                step0 = start_step if si == start_stage else 0
                self._ever_trained |= set(apply_stage(self.model, stage))
                log_stage_start(self.log, stage, self.model, step=self.global_step, show=self.is_main)
                sampler = self._sampler(si)
                optimizer = make_optimizer(self.model, lr=stage.lr, config=cfg)
                scheduler = get_cosine_schedule_with_warmup(optimizer, stage.warmup_steps, stage.steps)
                wrapped, optimizer = prepare_for_stage(self.accelerator, self.model, optimizer)
                if rng_pending and step0 > 0:  # resuming inside this stage: its optimizer and schedule
                    ckpt.load_optimizer_state(optimizer, self.model, resume_path)
                    scheduler.load_state_dict(ckpt.torch_load(os.path.join(resume_path, "scheduler.pt")))
                if rng_pending:
                    # Restored last: nothing between here and the next step may draw random numbers.
                    ckpt.set_rng_state(
                        ckpt.torch_load(os.path.join(resume_path, f"rng-{acc.process_index}.pt"))
                    )
                    rng_pending = False
                if stage.lora_scale is not None:
                    set_lora_scale(self.model, stage.lora_scale)
                try:
                    last_ckpt = (
                        self._run_stage(si, step0, sampler, wrapped, optimizer, scheduler, bar) or last_ckpt
                    )
                finally:
                    if stage.lora_scale is not None:
                        set_lora_scale(self.model, 1.0)
                    release_accelerator(self.accelerator)
        finally:
            bar.close()
            self.log.close()
        final_dir = self._save_final() if cfg.save_final else None
        report_end_of_run(
            self.train_dataset,
            skipped_nonfinite=self.skipped_nonfinite,
            steps=self.global_step,
            is_main=self.is_main,
        )
        return TrainResult(self.global_step, self.skipped_nonfinite, final_dir, last_ckpt, self.log_file)

    def _run_stage(
        self,
        si: int,
        step0: int,
        sampler: StageSampler,
        wrapped: nn.Module,
        optimizer: Any,
        scheduler: Any,
        bar: Any,
    ) -> str | None:
        cfg, stage = self.config, self.stages[si]
        params = [p for p in self.model.parameters() if p.requires_grad]
        stream = self._micro_batches(sampler, si, step0 * cfg.grad_accum)
        window = LossWindow(functools.partial(reduce_sum, self.accelerator))
        last_ckpt = None
        wrapped.train()
        for step in range(step0, stage.steps):
            lr = optimizer.param_groups[0]["lr"]
            bad, ids, losses, samples = forward_backward(
                self.accelerator, wrapped, stream, grad_accum=cfg.grad_accum, inputs=self._inputs
            )
            grad_norm = None
            if not bad:
                grad_norm = clip_grad_norm(
                    self.accelerator, self.model, params, cfg.max_grad_norm or float("inf")
                )
                bad = grad_norm is not None and not math.isfinite(grad_norm)
            if bad:  # "stop", or past the skip budget (train.max_nonfinite_fraction): NonFiniteLossError
                self.skipped_nonfinite += 1
                check_nonfinite(
                    cfg,
                    skipped=self.skipped_nonfinite,
                    total_steps=self.total_steps,
                    step=self.global_step + 1,
                    stage=stage.name,
                    ids=ids,
                )
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            self.global_step += 1
            bar.update(1)
            window.add(losses, samples)
            done = step + 1 == stage.steps
            if self.global_step % cfg.log_every == 0 or done:
                rec = window.record(
                    step=self.global_step,
                    stage=stage.name,
                    lr=lr,
                    grad_norm=grad_norm,
                    skipped_nonfinite=self.skipped_nonfinite,
                )
                self.log(rec)
                bar.set_postfix(
                    loss=f"{rec['loss']:.4f}" if rec["loss"] is not None else "nan",
                    lr=f"{lr:.2e}",
                    sps=f"{rec['samples_per_s']:.1f}",
                )
            if eval_due(cfg.eval_every, self.global_step, done, self.eval_dataset, self.eval_fn):
                self.log({"step": self.global_step, "stage": stage.name, **self.evaluate()})
                wrapped.train()
            last_stage = si == len(self.stages) - 1
            if cfg.save_every and (self.global_step % cfg.save_every == 0 or (done and last_stage)):
                last_ckpt = self.save_checkpoint(
                    stage_index=si,
                    step_in_stage=step + 1,
                    sampler=sampler,
                    optimizer=optimizer,
                    scheduler=scheduler,
                )
        return last_ckpt

    def _save_final(self) -> str | None:
        """``output_dir/final`` written by the main process; None for a model that cannot save itself."""
        self.accelerator.wait_for_everyone()
        final_dir = os.path.join(self.output_dir, "final")
        saved = export_final(self.accelerator, self.model, final_dir, ever_trained=self._ever_trained)
        return final_dir if saved else None

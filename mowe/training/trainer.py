"""Multi-stage training on accelerate: one loop for CPU, one GPU, DDP, FSDP and DeepSpeed.

The trainer runs a list of :class:`~mowe.training.stages.Stage` objects in order. Each stage freezes everything but its
parts, builds a fresh AdamW over the trainable parameters with a linear warm-up + cosine schedule, and draws
batches from its own deterministic sampler (a seeded shuffle, or a per-task weighted draw).

Batch contract (what a collator yields; see :mod:`mowe.data.processor`)::

    {"input_ids": (b, L) long, "attention_mask": (b, L) long, "labels": (b, L) long (-100 off the answer),
     "waveforms": (b, s) float32 right-zero-padded, "wave_lengths": (b,) long, "task": list[str], "id": list[str]}

Data order. The sampler of a stage turns ``(seed, stage index, epoch)`` into a permutation (or a weighted draw)
of the examples, cuts it into *global* batches of ``batch_size * num_processes`` examples and gives process
``r`` the ``r``-th contiguous slice of each. With ``group_by_length`` (and a dataset with ``lengths``) the
permutation is first regrouped so that a global batch holds clips of similar length: cut into mega-batches of
``length_group_mult`` global batches, each sorted longest first and cut into global batches, which are then
shuffled with the same seeded generator (the one holding the longest clip first). The global batch is therefore
the same whatever the process count, and a step consumes ``grad_accum`` consecutive global batches. Micro-batch
``m`` of a stage is batch ``m % batches_per_epoch`` of epoch ``m // batches_per_epoch``: the data position is a
function of the step, and resuming fast-forwards the index list without loading a single skipped example.

Checkpoints (every ``save_every`` steps, and at the end)::

    output_dir/checkpoints/
      latest                 "step-N": replaced atomically (temp file + os.replace) after step-N is complete
      step-N/
        model.safetensors    weights that can change (trainable now or in any earlier stage) + weights with no
                             pretrained source; frozen towers with a hub/path source are rebuilt from it
        optimizer.pt         optimizer state (plain tensors/dicts: loadable with torch.load(weights_only=True))
        scheduler.pt         LR scheduler state
        rng-<rank>.pt        python / numpy / torch (+ CUDA) RNG states of every process
        trainer_state.json   stage index, step in stage, epoch, batches consumed in the epoch, global step, ...

Everything is first written to ``checkpoints/.tmp-step-N/`` and renamed to ``step-N`` only when complete, so a
crash (even SIGKILL) never leaves a partial checkpoint as the latest. Resuming restores weights, optimizer,
scheduler, RNG states and data position, so a resumed run ends with the same weights as an uninterrupted one.

Example:
    >>> trainer = Trainer(model, dataset, config=TrainConfig(output_dir="run"), collate_fn=collator,
    ...                   stages=mowe_default_stages(1000))                    # doctest: +SKIP
    >>> trainer.train(resume="latest")                                         # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import random
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mowe.config import from_dict as _config_from_dict
from mowe.config import to_dict as _config_to_dict
from mowe.errors import CheckpointError, ConfigError, MoWEInputError
from mowe.training.stages import Stage, apply_stage, set_lora_scale, stages_to_list

__all__ = [
    "MODEL_INPUT_KEYS",
    "NonFiniteLossError",
    "StageSampler",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "find_checkpoint",
    "load_trainer_state",
]

#: Batch keys handed to ``model(...)``; the rest (``task``, ``id``) are bookkeeping.
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "labels", "waveforms", "wave_lengths")

CHECKPOINT_FORMAT = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")


class NonFiniteLossError(RuntimeError):
    """Training met a NaN/Inf loss or gradient norm with ``on_nonfinite_loss="stop"``."""


@dataclass
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
        eval_every: evaluate every this many steps (0: never; needs ``eval_dataset`` or ``eval_fn``).
        save_every: checkpoint every this many steps (0: only at the end).
        log_every: log every this many steps.
        seed: seeds python, numpy and torch (process ``r`` uses ``seed + r``) and the data order.
        num_workers: DataLoader worker processes.
        on_nonfinite_loss: ``"skip"`` (zero the gradients, skip the update, count it in the logs) or ``"stop"``
            (raise :class:`NonFiniteLossError`).
        keep_last_checkpoints: checkpoints to keep (older ones are deleted; the latest is never deleted).
        save_final: write ``output_dir/final`` with ``model.save_pretrained`` at the end.
        progress: show a tqdm progress bar on the main process.
        group_by_length: global batches hold clips of similar length, so the encoders pad less (needs a dataset
            with ``lengths``, e.g. :class:`~mowe.data.ManifestDataset`; otherwise a warning and the plain order).
            The order stays a seeded function of ``(seed, stage, epoch)``, so resuming is still exact.
        length_group_mult: mega-batch size, in global batches, within which clips are sorted by length (bigger:
            less padding, less randomness).
        pack_sequences: how the LLM runs each batch (``MoWEAudioLLM.forward(pack=...)``; the same loss up to
            float rounding): ``"auto"`` (default) the cheapest by FLOPs for the batch
            (:func:`mowe.merge.cheapest_llm_layout`), true one packed row whose position ids restart per sample,
            ``"groups"`` rows of similar length together, false one padded batch. Used when the model's
            ``forward`` takes ``pack``.
    """

    output_dir: str
    batch_size: int = 8
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    eval_every: int = 0
    save_every: int = 0
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    on_nonfinite_loss: str = "skip"
    keep_last_checkpoints: int = 2
    save_final: bool = True
    progress: bool = True
    group_by_length: bool = True
    length_group_mult: int = 50
    pack_sequences: bool | str = "auto"

    def __post_init__(self) -> None:
        def positive(name: str, minimum: int) -> None:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
                raise ConfigError(f"train.{name} must be an integer >= {minimum}, got {v!r}")

        if not isinstance(self.output_dir, (str, os.PathLike)) or not str(self.output_dir):
            raise ConfigError(f"train.output_dir must be a path, got {self.output_dir!r}")
        self.output_dir = os.fspath(self.output_dir)
        for name in ("batch_size", "grad_accum", "log_every", "keep_last_checkpoints", "length_group_mult"):
            positive(name, 1)
        for name in ("eval_every", "save_every", "num_workers", "seed"):
            positive(name, 0)
        if not isinstance(self.group_by_length, bool):
            raise ConfigError(f"train.group_by_length must be true or false, got {self.group_by_length!r}")
        if not (isinstance(self.pack_sequences, bool) or self.pack_sequences in ("auto", "groups")):
            raise ConfigError(f"train.pack_sequences must be true, false, 'groups' or 'auto', "
                              f"got {self.pack_sequences!r}")
        if self.mixed_precision not in ("no", "bf16"):
            raise ConfigError(f"train.mixed_precision must be 'no' or 'bf16', got {self.mixed_precision!r}")
        if self.on_nonfinite_loss not in ("skip", "stop"):
            raise ConfigError(f"train.on_nonfinite_loss must be 'skip' or 'stop', got {self.on_nonfinite_loss!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ConfigError(f"train.max_grad_norm must be > 0 or null, got {self.max_grad_norm!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0, got {self.weight_decay!r}")
        self.adam_betas = tuple(float(b) for b in self.adam_betas)  # type: ignore[assignment]

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "train") -> TrainConfig:
        """Strict: an unknown key raises :class:`ConfigError` naming it."""
        if isinstance(data, dict) and "output_dir" not in data:
            raise ConfigError(f"{where}: missing key 'output_dir'")
        if isinstance(data, dict):  # YAML 1.1 reads "1e-4" as a string
            data = {k: (_maybe_float(v) if k in ("max_grad_norm", "weight_decay", "adam_eps") else v)
                    for k, v in data.items()}
        return _config_from_dict(cls, data, where=where)

    def to_dict(self) -> dict[str, Any]:
        return _config_to_dict(self)


def _maybe_float(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


@dataclass
class TrainResult:
    """What :meth:`Trainer.train` returns."""

    global_step: int
    skipped_nonfinite: int
    final_dir: str | None
    last_checkpoint: str | None
    log_file: str


# ================================================================================================ sampling
def _mix_seed(*parts: int) -> int:
    h = hashlib.sha256("-".join(str(int(p)) for p in parts).encode()).hexdigest()
    return int(h[:15], 16)


class StageSampler:
    """Deterministic global-batch order for one stage (see the module docstring).

    Args:
        num_examples: dataset length.
        task_list: task of every example (needed only when ``tasks`` is set; None entries are never drawn).
        tasks: per-task weights, or None for a seeded shuffle of all examples.
        seed, stage_index: the order depends only on ``(seed, stage_index, epoch)``.
        batch_size: per-process micro-batch size; ``num_processes``, ``process_index``: this process's slice.
        stage_name: for error messages.
        lengths: length of every example (e.g. seconds), or None for the plain order. Given, each global batch
            holds clips of similar length (see :meth:`epoch_order`).
        group_mult: mega-batch size in global batches, when ``lengths`` is given.
    """

    def __init__(self, *, num_examples: int, task_list: Sequence[str | None] | None, tasks: dict[str, float] | None,
                 seed: int, stage_index: int, batch_size: int, num_processes: int = 1, process_index: int = 0,
                 stage_name: str = "?", lengths: Sequence[float] | None = None, group_mult: int = 50):
        self.seed, self.stage_index = seed, stage_index
        self.batch_size, self.num_processes, self.process_index = batch_size, num_processes, process_index
        self.global_batch = batch_size * num_processes
        if tasks is None:
            self.pool = torch.arange(num_examples)
            self.weights = None
        else:
            if task_list is None or len(task_list) != num_examples:
                raise ConfigError(f"stage {stage_name!r} samples by task but the dataset's task list is missing "
                                  f"or has the wrong length")
            present = sorted({t for t in task_list if t is not None})
            counts = {t: 0 for t in tasks}
            for t in task_list:
                if t in counts:
                    counts[t] += 1
            for t, w in tasks.items():
                if w > 0 and counts[t] == 0:
                    raise ConfigError(f"stage {stage_name!r}: task {t!r} has no examples in the training data "
                                      f"(tasks present: {present})")
            idx = [i for i, t in enumerate(task_list) if t in tasks and tasks[t] > 0]
            self.pool = torch.tensor(idx, dtype=torch.long)
            # Each task gets its weight's share of the draws, split evenly over its examples.
            self.weights = torch.tensor([tasks[task_list[i]] / counts[task_list[i]] for i in idx],
                                        dtype=torch.double)
        self.epoch_size = len(self.pool)
        self.batches_per_epoch = self.epoch_size // self.global_batch
        if self.batches_per_epoch == 0:
            raise ConfigError(f"stage {stage_name!r}: {self.epoch_size} usable examples, fewer than one global "
                              f"batch of {self.global_batch} (batch_size {batch_size} x {num_processes} processes)")
        self.lengths: torch.Tensor | None = None
        self.group_mult = group_mult
        if lengths is not None:
            if isinstance(group_mult, bool) or not isinstance(group_mult, int) or group_mult < 1:
                raise ConfigError(f"stage {stage_name!r}: the length-grouping mega-batch size "
                                  f"(train.length_group_mult) must be an integer >= 1, got {group_mult!r}")
            if len(lengths) != num_examples:
                raise ConfigError(f"stage {stage_name!r}: the dataset has {len(lengths)} lengths for {num_examples} "
                                  f"examples (train.group_by_length needs one length per example)")
            self.lengths = torch.as_tensor([float(x) for x in lengths], dtype=torch.float64)
            if not torch.isfinite(self.lengths).all():
                bad = int((~torch.isfinite(self.lengths)).nonzero()[0, 0])
                raise ConfigError(f"stage {stage_name!r}: example {bad} has length {float(self.lengths[bad])} "
                                  f"(train.group_by_length needs finite lengths)")

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The example indices of ``epoch``, in order (the same on every process).

        Without ``lengths``: all ``epoch_size`` indices of a seeded permutation (or weighted draw). With
        ``lengths``: the ``batches_per_epoch * global_batch`` of them that form full global batches (the same ones
        as without lengths), regrouped so that each global batch holds clips of similar length, longest first.
        """
        g = torch.Generator().manual_seed(_mix_seed(self.seed, self.stage_index, epoch))
        if self.weights is None:
            order = self.pool[torch.randperm(self.epoch_size, generator=g)]
        else:
            draws = torch.multinomial(self.weights, self.epoch_size, replacement=True, generator=g)
            order = self.pool[draws]
        if self.lengths is None:
            return order
        return self._group_by_length(order, g)

    def _group_by_length(self, order: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Mega-batches of ``group_mult`` global batches, each sorted longest first and cut into global batches;
        the global batches shuffled with ``g``, the one holding the longest clip first (an out-of-memory shows at
        once). Only full global batches are kept (the tail the plain order would not use is dropped first)."""
        assert self.lengths is not None
        gb = self.global_batch
        order = order[: self.batches_per_epoch * gb]
        parts = []
        for mega in torch.split(order, gb * self.group_mult):  # each a multiple of gb long
            parts.append(mega[torch.argsort(self.lengths[mega], descending=True, stable=True)])
        batches = torch.cat(parts).view(self.batches_per_epoch, gb)
        batches = batches[torch.randperm(self.batches_per_epoch, generator=g)]
        top = int(torch.argmax(self.lengths[batches[:, 0]]))  # first batch holding the maximum
        if top:
            batches[[0, top]] = batches[[top, 0]]
        return batches.reshape(-1)

    def process_batches(self, epoch: int, start: int = 0) -> list[list[int]]:
        """This process's micro-batches (lists of example indices) of ``epoch``, from global batch ``start``."""
        order = self.epoch_order(epoch).tolist()
        lo = self.process_index * self.batch_size
        return [order[b * self.global_batch + lo: b * self.global_batch + lo + self.batch_size]
                for b in range(start, self.batches_per_epoch)]

    def position(self, micro_batches: int) -> tuple[int, int]:
        """``(epoch, batch in epoch)`` after ``micro_batches`` micro-batches of this stage."""
        return divmod(micro_batches, self.batches_per_epoch)


def _task_list(dataset: Dataset) -> list[str | None]:
    tl = getattr(dataset, "task_list", None)
    if tl is not None:
        return list(tl)
    if callable(getattr(dataset, "tasks_of", None)):
        return list(dataset.tasks_of())
    out = []
    for i in range(len(dataset)):  # type: ignore[arg-type]
        item = dataset[i]
        out.append(None if item is None else item.get("task"))
    return out


# ================================================================================================ files
def _save_torch(obj: Any, path: str) -> None:
    """torch.save + fsync (module-level so tests can make it fail midway)."""
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def _save_safetensors(tensors: dict[str, torch.Tensor], path: str) -> None:
    save_file(tensors, path, metadata={"format": "pt", "mowe": "checkpoint"})
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _write_text_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _rng_state() -> dict[str, Any]:
    """RNG states as plain tensors / ints, loadable with ``weights_only=True``."""
    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    out: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def find_checkpoint(spec: str | os.PathLike, output_dir: str | os.PathLike | None = None) -> str | None:
    """Resolve a resume spec to a checkpoint folder.

    Args:
        spec: ``"latest"`` (the ``latest`` pointer under ``output_dir/checkpoints``; None when there is none yet),
            a ``step-N`` checkpoint folder, or a ``checkpoints`` folder / run folder holding a ``latest`` pointer.
        output_dir: the run folder, for ``"latest"``.

    Raises:
        CheckpointError: an explicit path that is not a complete checkpoint.
    """
    spec = os.fspath(spec)
    if spec == "latest":
        if output_dir is None:
            raise CheckpointError("resume='latest' needs the run's output_dir")
        ck_root = os.path.join(os.fspath(output_dir), "checkpoints")
        pointer = os.path.join(ck_root, "latest")
        if not os.path.isfile(pointer):
            return None
        return find_checkpoint(ck_root)
    for root in (spec, os.path.join(spec, "checkpoints")):
        pointer = os.path.join(root, "latest")
        if os.path.isfile(pointer):
            with open(pointer) as f:
                name = f.read().strip()
            path = os.path.join(root, name)
            if not os.path.isfile(os.path.join(path, "trainer_state.json")):
                raise CheckpointError(f"{pointer}: points to {name!r}, which is not a complete checkpoint")
            return path
    if not os.path.isfile(os.path.join(spec, "trainer_state.json")):
        raise CheckpointError(f"{spec}: not a checkpoint folder (no trainer_state.json) and no 'latest' pointer")
    return spec


def load_trainer_state(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The ``trainer_state.json`` of a checkpoint folder."""
    path = os.path.join(os.fspath(checkpoint), "trainer_state.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable trainer state ({e})") from e


def _torch_load(path: str) -> Any:
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle / zip errors have many types
        raise CheckpointError(f"{path}: unreadable ({e})") from e


# ================================================================================================ trainer
class Trainer:
    """Runs training stages on accelerate; resumable from atomic checkpoints.

    Args:
        model: a :class:`~mowe.MoWEAudioLLM` (or any module with the same parts and the same call signature,
            returning an object with ``loss`` and optionally ``lm_loss`` / ``aux_loss``).
        train_dataset: a map-style dataset of examples (dicts with a ``"task"``; None for a skipped bad file).
            For task-weighted stages it should have ``task_list`` (one task per example) or ``tasks_of()``;
            otherwise it is iterated once to read the tasks.
        config: loop settings.
        stages: run in order.
        collate_fn: examples -> batch dict (see the module docstring); drops None examples.
        eval_dataset: optional; its mean loss is logged as ``eval_loss`` every ``eval_every`` steps.
        eval_fn: optional ``eval_fn(model, step) -> dict[str, float]`` run on the main process (e.g. WER by
            generation); its results are logged with an ``eval_`` prefix.
    """

    def __init__(self, model: nn.Module, train_dataset: Dataset, *, config: TrainConfig, stages: Sequence[Stage],
                 collate_fn: Callable[[list[Any]], dict[str, Any]], eval_dataset: Dataset | None = None,
                 eval_fn: Callable[[nn.Module, int], dict[str, float]] | None = None):
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState, GradientState
        from accelerate.utils import DistributedDataParallelKwargs

        if not stages or not all(isinstance(s, Stage) for s in stages):
            raise ConfigError("stages: expected a non-empty list of mowe.training.stages.Stage")
        self.model = model
        self.train_dataset = train_dataset
        self.config = config
        self.stages = list(stages)
        self.collate_fn = collate_fn
        self.eval_dataset = eval_dataset
        self.eval_fn = eval_fn
        # A fresh Accelerator per trainer: the shared state would otherwise keep the first trainer's mixed
        # precision and accumulation settings (the process group, in PartialState, is kept).
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
        # Sparse routing leaves unselected weak encoders without gradients: DDP must tolerate unused params.
        ddp = DistributedDataParallelKwargs(find_unused_parameters=getattr(model, "pool", None) is not None)
        self.accelerator = Accelerator(mixed_precision=config.mixed_precision,
                                       gradient_accumulation_steps=config.grad_accum, kwargs_handlers=[ddp])
        self.output_dir = config.output_dir
        self.checkpoint_dir = os.path.join(self.output_dir, "checkpoints")
        self.log_file = os.path.join(self.output_dir, "log.jsonl")
        self.global_step = 0
        self.skipped_nonfinite = 0
        self._ever_trained: set[str] = set()
        self._task_list: list[str | None] | None = None
        self._lengths_read = False
        # Padding-free LLM passes when asked for and the model's forward supports them (MoWEAudioLLM does).
        self._pack = config.pack_sequences is not False and "pack" in inspect.signature(model.forward).parameters
        self._lengths: list[float] | None = None
        self._tb = None
        self._log_fh = None
        if config.gradient_checkpointing:
            llm = getattr(model, "llm", None)
            if llm is None or not hasattr(llm, "gradient_checkpointing_enable"):
                raise ConfigError("train.gradient_checkpointing: the model has no LLM that supports it")
            if hasattr(llm, "activation_checkpointing_enable"):  # transformers >= 5
                llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if getattr(llm, "config", None) is not None:
                llm.config.use_cache = False

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def _stage_offset(self, index: int) -> int:
        return sum(s.steps for s in self.stages[:index])

    def _length_list(self) -> list[float] | None:
        """The dataset's ``lengths`` when ``group_by_length`` is on (None: plain order; warns once if missing)."""
        if not self._lengths_read:
            self._lengths_read = True
            if self.config.group_by_length:
                lengths = getattr(self.train_dataset, "lengths", None)
                if lengths is None:
                    if self.is_main:
                        warnings.warn(f"train.group_by_length is on but the training dataset "
                                      f"({type(self.train_dataset).__name__}) has no `lengths`; batches use the "
                                      f"plain seeded order (set group_by_length: false to silence this)",
                                      UserWarning, stacklevel=3)
                else:
                    self._lengths = list(lengths)
        return self._lengths

    def _sampler(self, index: int) -> StageSampler:
        stage = self.stages[index]
        if stage.tasks is not None and self._task_list is None:
            self._task_list = _task_list(self.train_dataset)
        acc = self.accelerator
        return StageSampler(num_examples=len(self.train_dataset), task_list=self._task_list,  # type: ignore
                            tasks=stage.tasks, seed=self.config.seed, stage_index=index,
                            batch_size=self.config.batch_size, num_processes=acc.num_processes,
                            process_index=acc.process_index, stage_name=stage.name, lengths=self._length_list(),
                            group_mult=self.config.length_group_mult)

    def _micro_batches(self, sampler: StageSampler, index: int, start: int):
        """Yield ``(epoch, batch_in_epoch, batch)`` forever, from micro-batch ``start`` of the stage."""
        epoch, b = sampler.position(start)
        set_epoch = getattr(self.collate_fn, "set_epoch", None)
        while True:
            if callable(set_epoch):  # e.g. MoWECollator: paraphrase choices depend on the epoch
                set_epoch(epoch)
            batches = sampler.process_batches(epoch, b)
            # Own generator: creating a loader must not draw from the global torch RNG (it would shift dropout
            # masks after a resume, which creates loaders at other points than an uninterrupted run).
            gen = torch.Generator().manual_seed(_mix_seed(self.config.seed, index, epoch, b))
            loader = DataLoader(self.train_dataset, batch_sampler=batches, collate_fn=self.collate_fn,
                                num_workers=self.config.num_workers, generator=gen)
            for k, batch in enumerate(loader):
                yield epoch, b + k, batch
            epoch, b = epoch + 1, 0

    def _inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        dev = self.accelerator.device
        inputs = {k: batch[k].to(dev) for k in MODEL_INPUT_KEYS if k in batch and batch[k] is not None}
        if self._pack:
            inputs["pack"] = self.config.pack_sequences
        return inputs

    def _make_optimizer(self, stage: Stage) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for _, p in self.model.named_parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": self.config.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=stage.lr, betas=self.config.adam_betas,
                                 eps=self.config.adam_eps)

    def _prepare(self, optimizer: torch.optim.Optimizer):
        """(Re-)wrap the model for this stage's trainable set (DDP registers hooks on trainable params only)."""
        acc = self.accelerator
        self._release()
        m = self.model
        for attr in ("_is_accelerate_prepared",):
            m.__dict__.pop(attr, None)
        if "_original_forward" in m.__dict__:  # undo the previous stage's autocast wrapper
            m.forward = m.__dict__.pop("_original_forward")
        wrapped, optimizer = acc.prepare(m, optimizer)
        return wrapped, optimizer

    def _release(self) -> None:
        """Drop accelerate's references to the previous stage's wrapper and optimizer (without the full
        ``gc.collect`` of ``free_memory``, which costs ~0.4 s; DeepSpeed needs its engine destroyed, so it gets it)."""
        from accelerate.utils import DistributedType

        acc = self.accelerator
        if acc.distributed_type == DistributedType.DEEPSPEED:
            acc.free_memory()
            return
        acc._models.clear()
        acc._optimizers.clear()
        acc._schedulers.clear()
        acc._dataloaders.clear()
        acc.step = 0

    def _reduce_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            t = self.accelerator.reduce(t, reduction="sum")
        return t.tolist()

    # ------------------------------------------------------------------------------------------ logging
    def _log(self, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
        if self._log_fh is None:
            os.makedirs(self.output_dir, exist_ok=True)
            self._log_fh = open(self.log_file, "a", buffering=1)  # noqa: SIM115 (open for the run)
        self._log_fh.write(json.dumps(record) + "\n")
        if self._tb is not None and "step" in record:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step" and v is not None and math.isfinite(v):
                    self._tb.add_scalar(k, v, record["step"])

    def _open_tensorboard(self) -> None:
        if not self.is_main or self._tb is not None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the optional `tensorboard` package
        except ImportError:
            return
        self._tb = SummaryWriter(os.path.join(self.output_dir, "tensorboard"))

    # ------------------------------------------------------------------------------------------ checkpoints
    def _checkpoint_keys(self) -> list[str]:
        sd_keys = list(self.model.state_dict().keys())
        keys_fn = getattr(self.model, "_keys_to_save", None)
        if keys_fn is None:
            return sd_keys
        keep = set(keys_fn(False)) | self._ever_trained
        return [k for k in sd_keys if k in keep]

    def save_checkpoint(self, *, stage_index: int, step_in_stage: int, sampler: StageSampler,
                        optimizer: torch.optim.Optimizer, scheduler: Any) -> str:
        """Write ``checkpoints/step-<global_step>`` atomically and point ``latest`` at it; returns its path."""
        acc = self.accelerator
        name = f"step-{self.global_step}"
        final = os.path.join(self.checkpoint_dir, name)
        tmp = os.path.join(self.checkpoint_dir, f".tmp-{name}")
        acc.wait_for_everyone()
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
        acc.wait_for_everyone()
        micro = step_in_stage * self.config.grad_accum
        epoch, in_epoch = sampler.position(micro)
        state = {
            "format": CHECKPOINT_FORMAT, "global_step": self.global_step, "stage_index": stage_index,
            "stage_name": self.stages[stage_index].name, "step_in_stage": step_in_stage, "epoch": epoch,
            "batch_in_epoch": in_epoch, "micro_batches_in_stage": micro, "skipped_nonfinite": self.skipped_nonfinite,
            "num_processes": acc.num_processes, "batch_size": self.config.batch_size,
            "grad_accum": self.config.grad_accum, "seed": self.config.seed, "stages": stages_to_list(self.stages),
            "ever_trained": sorted(self._ever_trained),
            # The data order actually used (grouping needs lengths on the dataset), checked on resume.
            "group_by_length": sampler.lengths is not None,
            "length_group_mult": sampler.group_mult if sampler.lengths is not None else None,
        }
        try:
            _save_torch(_rng_state(), os.path.join(tmp, f"rng-{acc.process_index}.pt"))
            if self.is_main:
                sd = self.model.state_dict()
                tensors = {k: sd[k].detach().to("cpu").contiguous().clone() for k in self._checkpoint_keys()}
                _save_safetensors(tensors, os.path.join(tmp, "model.safetensors"))
                _save_torch(optimizer.state_dict(), os.path.join(tmp, "optimizer.pt"))
                _save_torch(scheduler.state_dict(), os.path.join(tmp, "scheduler.pt"))
                # Written last: its presence marks a complete checkpoint.
                _write_text_atomic(os.path.join(tmp, "trainer_state.json"), json.dumps(state, indent=1))
        except BaseException:
            if self.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        acc.wait_for_everyone()
        if self.is_main:
            if os.path.isdir(final):  # a stale step-N from an abandoned branch of an earlier run
                shutil.rmtree(final)
            _fsync_dir(tmp)
            os.replace(tmp, final)
            _fsync_dir(self.checkpoint_dir)
            _write_text_atomic(os.path.join(self.checkpoint_dir, "latest"), name + "\n")
            self._prune_checkpoints(keep_name=name)
        acc.wait_for_everyone()
        return final

    def _prune_checkpoints(self, keep_name: str) -> None:
        found = []
        for entry in os.listdir(self.checkpoint_dir):
            m = _STEP_DIR.match(entry)
            if m and os.path.isdir(os.path.join(self.checkpoint_dir, entry)):
                found.append((int(m.group(1)), entry))
        found.sort()
        for _, entry in found[:-self.config.keep_last_checkpoints]:
            if entry != keep_name:
                shutil.rmtree(os.path.join(self.checkpoint_dir, entry), ignore_errors=True)

    def _clean_stale_tmp(self) -> None:
        if self.is_main and os.path.isdir(self.checkpoint_dir):
            for entry in os.listdir(self.checkpoint_dir):
                if entry.startswith(".tmp-"):
                    shutil.rmtree(os.path.join(self.checkpoint_dir, entry), ignore_errors=True)

    def _load_model_weights(self, path: str) -> None:
        file = os.path.join(path, "model.safetensors")
        if not os.path.isfile(file):
            raise CheckpointError(f"{file}: missing")
        try:
            sd = load_file(file, device="cpu")
        except Exception as e:
            raise CheckpointError(f"{file}: unreadable or corrupt ({e})") from e
        own = self.model.state_dict()
        bad = [k for k in sd if k not in own or own[k].shape != sd[k].shape]
        if bad:
            raise CheckpointError(f"{file}: does not fit this model (e.g. {bad[:3]})")
        self.model.load_state_dict(sd, strict=False)

    def _check_compatible(self, state: dict[str, Any], path: str) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path}: checkpoint format {state.get('format')!r}, expected {CHECKPOINT_FORMAT}")
        acc = self.accelerator
        g_old = state["batch_size"] * state["num_processes"]
        g_new = self.config.batch_size * acc.num_processes
        if g_old != g_new or state["grad_accum"] != self.config.grad_accum or state["seed"] != self.config.seed:
            raise CheckpointError(
                f"{path}: written with global batch {g_old} (batch_size {state['batch_size']} x "
                f"{state['num_processes']} processes), grad_accum {state['grad_accum']}, seed {state['seed']}; "
                f"this run has {g_new} ({self.config.batch_size} x {acc.num_processes}), "
                f"{self.config.grad_accum}, {self.config.seed}: the data position would not carry over")
        # Checkpoints from before length grouping have no key: they were written with the plain order.
        old = (bool(state.get("group_by_length", False)), state.get("length_group_mult"))
        grouped = self._length_list() is not None
        new = (grouped, self.config.length_group_mult if grouped else None)
        if old[0] != new[0] or (old[0] and old[1] != new[1]):
            def said(g: tuple[bool, Any]) -> str:
                return f"batches grouped by length (length_group_mult {g[1]})" if g[0] else "the plain order"

            raise CheckpointError(
                f"{path}: written with {said(old)}, this run would use {said(new)}: the data position would not "
                f"carry over; set train.group_by_length / train.length_group_mult as in that run (grouping also "
                f"needs a dataset with `lengths`)")
        if [s["name"] for s in state["stages"]] != [s.name for s in self.stages]:
            raise CheckpointError(f"{path}: written for stages {[s['name'] for s in state['stages']]}, "
                                  f"this run has {[s.name for s in self.stages]}")
        if state["num_processes"] != acc.num_processes:
            raise CheckpointError(f"{path}: written by {state['num_processes']} processes; resume with the same "
                                  f"number (RNG states are per process)")

    # ------------------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss over ``eval_dataset`` (sharded over processes) and ``eval_fn``'s metrics."""
        acc = self.accelerator
        out: dict[str, float] = {}
        was_training = self.model.training
        self.model.eval()
        try:
            if self.eval_dataset is not None:
                idx = list(range(len(self.eval_dataset)))[acc.process_index::acc.num_processes]  # type: ignore
                bs = self.config.batch_size
                loader = DataLoader(self.eval_dataset, batch_sampler=[idx[i:i + bs] for i in range(0, len(idx), bs)],
                                    collate_fn=self.collate_fn, num_workers=self.config.num_workers)
                total, count = 0.0, 0.0
                for batch in loader:
                    if not batch or len(batch.get("input_ids", [])) == 0:
                        continue
                    with acc.autocast():
                        res = self.model(**self._inputs(batch))
                    n = float(batch["input_ids"].shape[0])
                    total += float(res.loss) * n
                    count += n
                total, count = self._reduce_sum([total, count])
                out["eval_loss"] = total / count if count else float("nan")
            if self.eval_fn is not None and self.is_main:
                for k, v in self.eval_fn(self.model, self.global_step).items():
                    out[k if k.startswith("eval_") else f"eval_{k}"] = float(v)
            acc.wait_for_everyone()
        finally:
            self.model.train(was_training)
        return out

    # ------------------------------------------------------------------------------------------ training
    def train(self, resume: str | os.PathLike | None = None) -> TrainResult:
        """Run every stage (or the rest of them, when resuming).

        Args:
            resume: None (start fresh), ``"latest"`` (the run's latest checkpoint, or a fresh start when there is
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
        self._clean_stale_tmp()
        acc.wait_for_everyone()
        self._open_tensorboard()
        self.model.to(acc.device)

        start_stage, start_step, resume_path, state = 0, 0, None, None
        if resume is not None:
            resume_path = find_checkpoint(resume, self.output_dir)
        if resume_path is not None:
            state = load_trainer_state(resume_path)
            self._check_compatible(state, resume_path)
            self._load_model_weights(resume_path)
            self.global_step = int(state["global_step"])
            self.skipped_nonfinite = int(state["skipped_nonfinite"])
            self._ever_trained = set(state["ever_trained"])
            start_stage, start_step = int(state["stage_index"]), int(state["step_in_stage"])
            if start_step >= self.stages[start_stage].steps:  # saved at the end of a stage
                start_stage, start_step = start_stage + 1, 0
            self._log({"event": "resume", "step": self.global_step, "checkpoint": resume_path})

        bar = tqdm(total=self.total_steps, initial=self.global_step, disable=not (self.is_main and cfg.progress),
                   dynamic_ncols=True, desc="train")
        last_ckpt: str | None = resume_path
        try:
            rng_pending = state is not None
            for si in range(start_stage, len(self.stages)):
                stage = self.stages[si]
                step0 = start_step if si == start_stage else 0
                self._ever_trained |= set(apply_stage(self.model, stage))
                sampler = self._sampler(si)
                optimizer = self._make_optimizer(stage)
                scheduler = get_cosine_schedule_with_warmup(optimizer, stage.warmup_steps, stage.steps)
                wrapped, optimizer = self._prepare(optimizer)
                if rng_pending and step0 > 0:  # resuming inside this stage: its optimizer and schedule
                    optimizer.load_state_dict(_torch_load(os.path.join(resume_path, "optimizer.pt")))
                    scheduler.load_state_dict(_torch_load(os.path.join(resume_path, "scheduler.pt")))
                if rng_pending:
                    # Restored last: nothing between here and the next step may draw random numbers.
                    _set_rng_state(_torch_load(os.path.join(resume_path, f"rng-{acc.process_index}.pt")))
                    rng_pending = False
                if stage.lora_scale is not None:
                    set_lora_scale(self.model, stage.lora_scale)
                try:
                    last_ckpt = self._run_stage(si, step0, sampler, wrapped, optimizer, scheduler, bar) or last_ckpt
                finally:
                    if stage.lora_scale is not None:
                        set_lora_scale(self.model, 1.0)
                    self._release()
        finally:
            bar.close()
            if self._log_fh is not None:
                self._log_fh.close()
                self._log_fh = None
            if self._tb is not None:
                self._tb.close()
                self._tb = None

        final_dir = self._save_final() if cfg.save_final else None
        report = getattr(self.train_dataset, "skip_report", None)
        if callable(report) and self.is_main:
            text = report()
            if text:
                print(text, file=sys.stderr)
        return TrainResult(self.global_step, self.skipped_nonfinite, final_dir, last_ckpt, self.log_file)

    def _run_stage(self, si: int, step0: int, sampler: StageSampler, wrapped: nn.Module,
                   optimizer: Any, scheduler: Any, bar: Any) -> str | None:
        acc, cfg, stage = self.accelerator, self.config, self.stages[si]
        params = [p for p in self.model.parameters() if p.requires_grad]
        stream = self._micro_batches(sampler, si, step0 * cfg.grad_accum)
        window = {"loss": 0.0, "lm": 0.0, "aux": 0.0, "n": 0.0, "samples": 0.0, "t0": time.perf_counter()}
        last_ckpt = None
        wrapped.train()
        for step in range(step0, stage.steps):
            bad, ids, losses = False, [], []
            lr = optimizer.param_groups[0]["lr"]
            samples = 0
            for _ in range(cfg.grad_accum):
                _, _, batch = next(stream)
                empty = not batch or len(batch.get("input_ids", [])) == 0
                if empty and acc.num_processes > 1:
                    raise MoWEInputError("the collator returned an empty batch (every example in it was skipped); "
                                         "in multi-process training every process needs examples: clean the data "
                                         "or raise batch_size")
                with acc.accumulate(wrapped):
                    if empty:
                        continue
                    out = wrapped(**self._inputs(batch))
                    loss = out.loss
                    if not torch.isfinite(loss.detach()).all():
                        bad = True
                        ids.extend(batch.get("id", []))
                    acc.backward(loss)
                samples += int(batch["input_ids"].shape[0])
                losses.append((float(loss.detach()), _f(getattr(out, "lm_loss", None)),
                               _f(getattr(out, "aux_loss", None))))
            if acc.num_processes > 1:
                bad = self._reduce_sum([float(bad)])[0] > 0
            grad_norm = None
            if not bad:
                gn = acc.clip_grad_norm_(params, cfg.max_grad_norm or float("inf"))
                grad_norm = float(gn) if gn is not None else None
                bad = grad_norm is not None and not math.isfinite(grad_norm)
            if bad:
                self.skipped_nonfinite += 1
                if cfg.on_nonfinite_loss == "stop":
                    raise NonFiniteLossError(
                        f"non-finite loss or gradient at step {self.global_step + 1} (stage {stage.name!r}, "
                        f"examples {ids[:8]}); stopping because train.on_nonfinite_loss='stop'. Lower the learning "
                        f"rate, check those examples, or set on_nonfinite_loss='skip' to skip such steps")
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            self.global_step += 1
            bar.update(1)

            finite = [x for x in losses if math.isfinite(x[0])]
            for l, lm, aux in finite:
                window["loss"] += l
                window["lm"] += lm if lm is not None else float("nan")
                window["aux"] += aux if aux is not None else 0.0
                window["n"] += 1
            window["samples"] += samples
            done = step + 1 == stage.steps
            if self.global_step % cfg.log_every == 0 or done:
                self._log_window(window, stage, lr, grad_norm, bar, has_aux=any(x[2] is not None for x in losses))
            if cfg.eval_every and self.global_step % cfg.eval_every == 0 and (self.eval_dataset is not None or
                                                                           self.eval_fn is not None):
                metrics = self.evaluate()
                self._log({"step": self.global_step, "stage": stage.name, **metrics})
                wrapped.train()
            last_stage = si == len(self.stages) - 1
            if (cfg.save_every and self.global_step % cfg.save_every == 0) or (done and last_stage and
                                                                               cfg.save_every):
                last_ckpt = self.save_checkpoint(stage_index=si, step_in_stage=step + 1, sampler=sampler,
                                                 optimizer=optimizer, scheduler=scheduler)
        return last_ckpt

    def _log_window(self, w: dict[str, float], stage: Stage, lr: float, grad_norm: float | None, bar: Any,
                    has_aux: bool) -> None:
        loss, lm, aux, n, samples = self._reduce_sum([w["loss"], w["lm"], w["aux"], w["n"], w["samples"]])
        dt = max(time.perf_counter() - w["t0"], 1e-9)
        rec = {"step": self.global_step, "stage": stage.name, "loss": loss / n if n else float("nan"),
               "lm_loss": lm / n if n else float("nan"), "aux_loss": (aux / n if n else float("nan")) if has_aux
               else None, "lr": lr, "samples_per_s": samples / dt, "grad_norm": grad_norm,
               "skipped_nonfinite": self.skipped_nonfinite}
        rec = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}
        self._log(rec)
        bar.set_postfix(loss=f"{rec['loss']:.4f}" if rec["loss"] is not None else "nan", lr=f"{lr:.2e}",
                        sps=f"{rec['samples_per_s']:.1f}")
        w.update(loss=0.0, lm=0.0, aux=0.0, n=0.0, samples=0.0, t0=time.perf_counter())

    def _save_final(self) -> str | None:
        """``model.save_pretrained(output_dir/final)`` (main process); None for a model that cannot save itself."""
        acc = self.accelerator
        acc.wait_for_everyone()
        save = getattr(self.model, "save_pretrained", None)
        if save is None or getattr(self.model, "config", None) is None:
            return None
        final_dir = os.path.join(self.output_dir, "final")
        if self.is_main:
            keys_fn = getattr(self.model, "_keys_to_save", None)
            # A part trained in an earlier stage and frozen now must be saved too.
            frozen_but_trained = keys_fn is not None and not self._ever_trained <= set(keys_fn(False))
            save(final_dir, save_frozen=frozen_but_trained)
        acc.wait_for_everyone()
        return final_dir


def _f(t: Any) -> float | None:
    return None if t is None else float(t.detach()) if torch.is_tensor(t) else float(t)

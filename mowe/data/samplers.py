"""The sampler of map-style datasets: a deterministic global-batch order per training stage (streams:
:mod:`mowe.data.stream_sampler`, the same contract read window by window).

:class:`StageSampler` turns ``(seed, stage index, epoch)`` into a permutation (or, with task weights, a
weighted draw with replacement) of the examples, cuts it into *global* batches of ``batch_size *
num_processes`` examples and gives process ``r`` the ``r``-th contiguous slice of each. With ``lengths`` the
permutation is first
regrouped so that a global batch holds clips of similar length: cut into mega-batches of ``group_mult`` global
batches, each sorted longest first and cut into global batches, which are then shuffled with the same seeded
generator (the one holding the longest clip first, so an out-of-memory shows at once). The global batch is the
same whatever the process count, and the data position is a pure function of the micro-batch count, so
resuming fast-forwards without loading a skipped example. :class:`~mowe.training.trainer.Trainer` uses it; use
it directly as ``DataLoader(ds, batch_sampler=sampler.process_batches(epoch))``.

Example:
    >>> s = StageSampler(num_examples=10, task_list=None, tasks=None, seed=0, stage_index=0, batch_size=2)
    >>> len(s.process_batches(0)), s.batches_per_epoch
    (5, 5)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from mowe.errors import ConfigError

__all__ = ["StageSampler", "mix_seed", "task_list_of"]


def mix_seed(*parts: int | str) -> int:
    """A 60-bit seed from any ints / strings (a hash, so nearby inputs give unrelated seeds and
    ``(seed, epoch)`` pairs never collide the way ``seed + epoch`` would). The one seed hasher of mowe."""
    h = hashlib.sha256("-".join(str(p) for p in parts).encode("utf-8", "surrogatepass")).hexdigest()
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

    def __init__(
        self,
        *,
        num_examples: int,
        task_list: Sequence[str | None] | None,
        tasks: dict[str, float] | None,
        seed: int,
        stage_index: int,
        batch_size: int,
        num_processes: int = 1,
        process_index: int = 0,
        stage_name: str = "?",
        lengths: Sequence[float] | None = None,
        group_mult: int = 50,
    ):
        self.seed, self.stage_index = seed, stage_index
        self.batch_size, self.num_processes, self.process_index = batch_size, num_processes, process_index
        self.global_batch = batch_size * num_processes
        if tasks is None:
            self.pool = torch.arange(num_examples)
            self.weights = None
        else:
            if task_list is None or len(task_list) != num_examples:
                raise ConfigError(
                    f"stage {stage_name!r} samples by task but the dataset's task list is missing "
                    f"or has the wrong length"
                )
            present = sorted({t for t in task_list if t is not None})
            counts = {t: 0 for t in tasks}
            for t in task_list:
                if t in counts:
                    counts[t] += 1
            for t, w in tasks.items():
                if w > 0 and counts[t] == 0:
                    raise ConfigError(
                        f"stage {stage_name!r}: task {t!r} has no examples in the training data "
                        f"(tasks present: {present})"
                    )
            idx = [i for i, t in enumerate(task_list) if t in tasks and tasks[t] > 0]
            self.pool = torch.tensor(idx, dtype=torch.long)
            # Each task gets its weight's share of the draws, split evenly over its examples.
            self.weights = torch.tensor(
                [tasks[task_list[i]] / counts[task_list[i]] for i in idx], dtype=torch.double
            )
        self.epoch_size = len(self.pool)
        self.batches_per_epoch = self.epoch_size // self.global_batch
        if self.batches_per_epoch == 0:
            raise ConfigError(
                f"stage {stage_name!r}: {self.epoch_size} usable examples, fewer than one global "
                f"batch of {self.global_batch} (batch_size {batch_size} x {num_processes} processes)"
            )
        self.lengths: torch.Tensor | None = None
        self.group_mult = group_mult
        if lengths is not None:
            if isinstance(group_mult, bool) or not isinstance(group_mult, int) or group_mult < 1:
                raise ConfigError(
                    f"stage {stage_name!r}: the length-grouping mega-batch size "
                    f"(train.length_group_mult) must be an integer >= 1, got {group_mult!r}"
                )
            if len(lengths) != num_examples:
                raise ConfigError(
                    f"stage {stage_name!r}: the dataset has {len(lengths)} lengths for {num_examples} "
                    f"examples (train.group_by_length needs one length per example)"
                )
            self.lengths = torch.as_tensor([float(x) for x in lengths], dtype=torch.float64)
            if not torch.isfinite(self.lengths).all():
                bad = int((~torch.isfinite(self.lengths)).nonzero()[0, 0])
                raise ConfigError(
                    f"stage {stage_name!r}: example {bad} has length {float(self.lengths[bad])} "
                    f"(train.group_by_length needs finite lengths)"
                )

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The example indices of ``epoch``, in order (the same on every process).

        Without ``lengths``: all ``epoch_size`` indices of a seeded permutation (or weighted draw). With
        ``lengths``: the ``batches_per_epoch * global_batch`` of them that form full global batches (the same
        ones as without lengths), regrouped so that each global batch holds clips of similar length, longest
        first.
        """
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.stage_index, epoch))
        if self.weights is None:
            order = self.pool[torch.randperm(self.epoch_size, generator=g)]
        else:
            draws = torch.multinomial(self.weights, self.epoch_size, replacement=True, generator=g)
            order = self.pool[draws]
        if self.lengths is None:
            return order
        return self._group_by_length(order, g)

    def _group_by_length(self, order: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Mega-batches of ``group_mult`` global batches, each sorted longest first and cut into global
        batches; the global batches shuffled with ``g``, the one holding the longest clip first (an
           out-of-memory shows at
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
        """This process's micro-batches (lists of example indices) of ``epoch``, from global batch
        ``start``."""
        order = self.epoch_order(epoch).tolist()
        lo = self.process_index * self.batch_size
        return [
            order[b * self.global_batch + lo : b * self.global_batch + lo + self.batch_size]
            for b in range(start, self.batches_per_epoch)
        ]

    def position(self, micro_batches: int) -> tuple[int, int]:
        """``(epoch, batch in epoch)`` after ``micro_batches`` micro-batches of this stage."""
        return divmod(micro_batches, self.batches_per_epoch)


def task_list_of(dataset: Dataset) -> list[str | None]:
    """The task of every example: ``dataset.task_list`` when it has one, else read item by item."""
    tl = getattr(dataset, "task_list", None)
    if tl is not None:
        return list(tl)
    out = []
    for i in range(len(dataset)):  # type: ignore[arg-type]
        item = dataset[i]
        out.append(None if item is None else item.get("task"))
    return out

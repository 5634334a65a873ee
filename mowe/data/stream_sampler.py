"""The batch order of a streaming dataset: the stream counterpart of
:class:`~mowe.data.samplers.StageSampler`.

A stream has no length and no random access, so the order is built window by window as it is read. The stream
is cut into windows of ``group_mult`` global batches (``batch_size * num_processes`` examples each); each
window is permuted with a generator seeded by ``(seed, stage, epoch, window)`` (a buffer shuffle: an example
moves only within its window), and with ``group_by_length`` sorted longest first by duration and cut into
global batches, which are then shuffled. Durations come from the dataset's duration column or the audio header
of the stored bytes: only the clips of the micro-batches actually trained on are decoded. A window's tail that
does not fill a global batch is dropped (as the map-style sampler drops an epoch's tail). At the end of the
stream the next epoch reads it again.

Process ``r`` takes the ``r``-th contiguous slice of each global batch, so the global batch is the same for
any process count. Micro-batch ``m`` of a stage is the ``m``-th global batch of this order, a pure function of
``(data, seed, stage, m)``: resuming at micro-batch ``m`` reads and checks the rows before it but decodes none
of them.

Example:
    >>> sampler = StreamSampler(stream, seed=0, stage_index=0, batch_size=4)   # doctest: +SKIP
    >>> epoch, examples = next(sampler.micro_batches(start=0))                # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from mowe.data.samplers import mix_seed
from mowe.errors import ConfigError

__all__ = ["StreamSampler"]


class StreamSampler:
    """Deterministic micro-batches of a :class:`~mowe.data.hf_dataset.HFStreamDataset` (see the module).

    Args:
        dataset: has ``rows()`` (checked rows, re-read from the start on each call), ``duration(row)`` and
            ``decode(row)`` (None for a row skipped as bad).
        seed, stage_index: the order depends only on them, the epoch and the window.
        batch_size: per-process micro-batch size; ``num_processes``, ``process_index``: this process's slice.
        group_by_length: sort each window by duration before cutting it into global batches.
        group_mult: the window, in global batches.
        stage_name: for error messages.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        seed: int,
        stage_index: int,
        batch_size: int,
        num_processes: int = 1,
        process_index: int = 0,
        group_by_length: bool = False,
        group_mult: int = 50,
        stage_name: str = "?",
    ):
        if isinstance(group_mult, bool) or not isinstance(group_mult, int) or group_mult < 1:
            raise ConfigError(
                f"stage {stage_name!r}: train.length_group_mult must be an integer >= 1, got {group_mult!r}"
            )
        self.dataset, self.seed, self.stage_index = dataset, seed, stage_index
        self.batch_size, self.num_processes, self.process_index = batch_size, num_processes, process_index
        self.global_batch = batch_size * num_processes
        self.group_by_length, self.group_mult, self.stage_name = group_by_length, group_mult, stage_name
        self.lengths = None  # the map-style sampler's attribute; a stream's durations are read per window
        self.grouped = group_by_length
        self._epoch_batches: list[int] = []  # global batches in each epoch read to its end so far

    def _windows(self) -> Iterator[list[Any]]:
        window, size = [], self.global_batch * self.group_mult
        for row in self.dataset.rows():
            window.append(row)
            if len(window) == size:
                yield window
                window = []
        if window:
            yield window

    def _order(self, window: list[Any], epoch: int, w: int) -> list[list[Any]]:
        """The global batches of one window (rows in training order)."""
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.stage_index, epoch, "window", w))
        rows = [window[i] for i in torch.randperm(len(window), generator=g).tolist()]
        if self.group_by_length:
            seconds = [self.dataset.duration(r) for r in rows]
            rows = [r for r, s in zip(rows, seconds) if s is not None]  # unreadable header, skipped as bad
            seconds = [s for s in seconds if s is not None]
            by_length = sorted(range(len(rows)), key=lambda i: -seconds[i])  # stable: ties keep the shuffle
            rows = [rows[i] for i in by_length]
        gb = self.global_batch
        batches = [rows[i : i + gb] for i in range(0, len(rows) - gb + 1, gb)]
        if self.group_by_length and len(batches) > 1:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return batches

    def global_batches(self, epoch: int) -> Iterator[list[Any]]:
        """Every global batch of ``epoch`` (rows, not decoded)."""
        for w, window in enumerate(self._windows()):
            yield from self._order(window, epoch, w)

    def micro_batches(self, start: int = 0) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """``(epoch, decoded examples of this process)`` for micro-batch ``start`` onwards, forever.

        Raises:
            ConfigError: the stream holds fewer usable examples than one global batch.
        """
        m, epoch = 0, 0
        lo = self.process_index * self.batch_size
        while True:
            count = 0
            for batch in self.global_batches(epoch):
                count += 1
                if m >= start:
                    examples = [self.dataset.decode(r) for r in batch[lo : lo + self.batch_size]]
                    yield epoch, [e for e in examples if e is not None]
                m += 1
            if count == 0:
                raise ConfigError(
                    f"stage {self.stage_name!r}: the stream {getattr(self.dataset, 'name', '')!r} "
                    f"has fewer usable examples than one global batch of {self.global_batch}"
                )
            if len(self._epoch_batches) == epoch:
                self._epoch_batches.append(count)
            epoch += 1

    def position(self, micro_batches: int) -> tuple[int, int]:
        """``(epoch, batch in epoch)`` after ``micro_batches`` micro-batches, as far as the epochs read so far
        tell (a stream's epoch length is known only once it has been read to its end)."""
        epoch, left = 0, micro_batches
        for n in self._epoch_batches:
            if left < n:
                break
            epoch, left = epoch + 1, left - n
        return epoch, left

"""Dynamic batching: requests that arrive close together share one model call.

One model thread takes the oldest waiting request, then waits up to ``max_wait_ms`` (counted from that
request's arrival) for more with the same decoding settings, until ``max_batch`` rows are gathered; the batch
runs as one :meth:`Engine.run`. Requests that waited while a batch ran are therefore taken at once. A request
whose client left is dropped from the queue (or, mid-batch, its rows stop when the call streams). If a batch
fails, its requests are retried one by one, so one bad request cannot fail the others; the thread never dies
of an exception.

Example:
    >>> batcher = DynamicBatcher(engine, max_batch=8, max_wait_ms=10)   # doctest: +SKIP
    >>> batcher.start(); batcher.submit(job)                            # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from mowe.serve.engine import Engine, Job
from mowe.serve.schemas import ApiError

__all__ = ["BatchStats", "DynamicBatcher"]

log = logging.getLogger("mowe.serve")


@dataclass
class BatchStats:
    """Counters since start: model calls, requests and rows run, the largest batch (rows), requests dropped
    because their client left, failed requests."""

    batches: int = 0
    requests: int = 0
    rows: int = 0
    largest_batch: int = 0
    cancelled: int = 0
    failed: int = 0


class DynamicBatcher:
    """Groups queued :class:`Job` into batches and runs them on an :class:`Engine` in one background thread.

    Args:
        engine: the model runner.
        max_batch: most rows (choices) per model call.
        max_wait_ms: how long the oldest request may wait for company.
        max_queue: most requests waiting; more are refused with 503.
    """

    def __init__(
        self, engine: Engine, *, max_batch: int = 8, max_wait_ms: float = 10.0, max_queue: int = 256
    ):
        if max_batch < 1 or max_wait_ms < 0 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait_ms >= 0")
        self.engine, self.max_batch, self.max_wait = engine, int(max_batch), max_wait_ms / 1000.0
        self.max_queue = int(max_queue)
        self.stats = BatchStats()
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="mowe-serve-model", daemon=True)

    @property
    def queued(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        """Queue a job (503 when the queue is full)."""
        with self._cond:
            if len(self._pending) >= self.max_queue:
                raise ApiError(
                    503,
                    f"the server is busy ({self.max_queue} requests waiting); retry later",
                    type="server_error",
                    code="overloaded",
                )
            self._pending.append(job)
            self._cond.notify_all()

    def cancel(self, job: Job) -> None:
        """The client left or timed out: drop the job if it still waits, else mark it so its rows stop."""
        job.cancelled.set()
        with self._cond:
            try:
                self._pending.remove(job)
            except ValueError:
                return
            self.stats.cancelled += 1

    def _take(self) -> list[Job] | None:
        """Block until a batch is ready; None when stopping."""
        with self._cond:
            while True:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return None
                first = self._pending[0]
                mates = [j for j in self._pending if j.request.sampling == first.request.sampling]
                wait = first.enqueued + self.max_wait - time.monotonic()
                if sum(j.rows for j in mates) >= self.max_batch or wait <= 0:
                    break
                self._cond.wait(wait)
            batch, rows = [], 0
            for job in mates:
                if batch and rows + job.rows > self.max_batch:
                    break
                batch.append(job)
                rows += job.rows
            for job in batch:
                self._pending.remove(job)
            return batch

    def _run(self, jobs: list[Job]) -> None:
        try:
            results = self.engine.run(jobs)
        except Exception as e:  # a model error must answer the requests, not kill the thread
            if len(jobs) > 1:
                log.warning("a batch of %d requests failed (%s); retrying them one by one", len(jobs), e)
                for job in jobs:
                    self._run([job])
                return
            log.exception("a request failed in the model")
            self.stats.failed += 1
            jobs[0].emit(
                "error",
                ApiError(
                    500,
                    f"the model failed on this request: {type(e).__name__}: {str(e)[:300]}",
                    type="server_error",
                    code="model_error",
                ),
            )
            return
        self.stats.batches += 1
        self.stats.requests += len(jobs)
        rows = sum(j.rows for j in jobs)
        self.stats.rows += rows
        self.stats.largest_batch = max(self.stats.largest_batch, rows)
        for job, (choices, prompt_tokens) in zip(jobs, results):  # after the counters: /health agrees
            job.emit("done", choices, prompt_tokens)

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            live = [j for j in batch if not j.cancelled.is_set()]
            self.stats.cancelled += len(batch) - len(live)
            if live:
                self._run(live)

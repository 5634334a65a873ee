"""Run logs of :class:`~mowe.training.trainer.Trainer`: ``log.jsonl`` (+ TensorBoard when installed).

Only the main process writes. A :class:`LossWindow` sums the losses of the steps since the last log line, so
the logged loss is the mean over that window across all processes.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

__all__ = ["LossWindow", "RunLog"]


class RunLog:
    """Appends one JSON object per line to ``output_dir/log.jsonl``; mirrors numbers to TensorBoard.

    Args:
        output_dir: the run folder.
        enabled: False on non-main processes (every call is then a no-op).
    """

    def __init__(self, output_dir: str, *, enabled: bool):
        self.output_dir = output_dir
        self.file = os.path.join(output_dir, "log.jsonl")
        self.enabled = enabled
        self._fh = None
        self._tb = None

    def open_tensorboard(self) -> None:
        """Start mirroring to ``output_dir/tensorboard`` (skipped without the optional ``tensorboard`` package)."""
        if not self.enabled or self._tb is not None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self._tb = SummaryWriter(os.path.join(self.output_dir, "tensorboard"))

    def __call__(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self._fh is None:
            os.makedirs(self.output_dir, exist_ok=True)
            self._fh = open(self.file, "a", buffering=1)  # noqa: SIM115 (open for the run)
        self._fh.write(json.dumps(record) + "\n")
        if self._tb is not None and "step" in record:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step" and v is not None and math.isfinite(v):
                    self._tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class LossWindow:
    """Loss sums since the last log line; :meth:`record` turns them into one log record and resets.

    Args:
        reduce_sum: sums a list of floats over processes (identity on one process).
    """

    def __init__(self, reduce_sum: Callable[[list[float]], list[float]]):
        self.reduce_sum = reduce_sum
        self._reset()

    def _reset(self) -> None:
        self.loss = self.lm = self.aux = self.n = self.samples = 0.0
        self.has_aux = False
        self.t0 = time.perf_counter()

    def add(self, losses: list[tuple[float, float | None, float | None]], samples: int) -> None:
        """One optimizer step: its micro-batches' ``(loss, lm_loss, aux_loss)`` and its example count."""
        for l, lm, aux in losses:
            self.has_aux |= aux is not None
            if not math.isfinite(l):
                continue
            self.loss += l
            self.lm += lm if lm is not None else float("nan")
            self.aux += aux if aux is not None else 0.0
            self.n += 1
        self.samples += samples

    def record(self, **fields: Any) -> dict[str, Any]:
        """``{**fields, loss, lm_loss, aux_loss, samples_per_s}`` (non-finite numbers as None); resets."""
        loss, lm, aux, n, samples = self.reduce_sum([self.loss, self.lm, self.aux, self.n, self.samples])
        dt = max(time.perf_counter() - self.t0, 1e-9)

        def mean(x: float) -> float:
            return x / n if n else float("nan")

        rec = {"step": fields.pop("step"), "stage": fields.pop("stage"), "loss": mean(loss), "lm_loss": mean(lm),
               "aux_loss": mean(aux) if self.has_aux else None, "lr": fields.pop("lr"),
               "samples_per_s": samples / dt, **fields}
        self._reset()
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}

"""Run logs of :class:`~mowe.training.trainer.Trainer`: ``log.jsonl``, mirrored to accelerate trackers.

``TrainConfig.log_with`` picks the trackers (accelerate's ``TensorBoardTracker``, ``WandBTracker``,
``MLflowTracker``): ``["tensorboard", "wandb", "mlflow"]``, ``["all"]`` (every one whose package is installed)
or None (TensorBoard when installed, as before); a named tracker whose package is missing is skipped with a
warning. ``log.jsonl`` is always written. Only the main process writes. A :class:`LossWindow` sums the losses
of the steps since the last log line, so the logged loss is the mean over that window across all processes.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from mowe.errors import ConfigError
from mowe.io import writing_to

__all__ = ["TRACKERS", "LossWindow", "RunLog", "make_trackers"]

#: Tracker names ``log_with`` takes.
TRACKERS = ("tensorboard", "wandb", "mlflow")


def _available(name: str) -> bool:
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

    return bool(
        {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available, "mlflow": is_mlflow_available}[
            name
        ]()
    )


def make_trackers(log_with: Sequence[Any] | None, *, output_dir: str, run_name: str = "mowe") -> list[Any]:
    """Started accelerate trackers for ``log_with`` (names, ``"all"``, or ready ``GeneralTracker`` objects).

    TensorBoard writes to ``output_dir/tensorboard``, MLflow to ``output_dir/mlruns``, W&B to its own project
    (``run_name``) with files under ``output_dir``.

    Raises:
        ConfigError: an unknown tracker name (naming it).
    """
    names: list[Any] = ["tensorboard"] if log_with is None else list(log_with)
    if "all" in names:
        names = [n for n in names if n != "all"] + [t for t in TRACKERS if t not in names and _available(t)]
    trackers = []
    for item in names:
        if not isinstance(item, str):
            trackers.append(item)  # a GeneralTracker (or anything with start / log / finish)
            continue
        if item not in TRACKERS:
            raise ConfigError(
                f"train.log_with: unknown tracker {item!r}; choose from {list(TRACKERS)} or 'all'"
            )
        if not _available(item):
            if log_with is not None:
                warnings.warn(
                    f"train.log_with: {item!r} is not installed; logging to log.jsonl without it",
                    stacklevel=2,
                )
            continue
        from accelerate import tracking

        if item == "tensorboard":
            trackers.append(tracking.TensorBoardTracker("tensorboard", output_dir))
        elif item == "wandb":
            trackers.append(tracking.WandBTracker(run_name, dir=output_dir))
        else:
            trackers.append(tracking.MLflowTracker(run_name, logging_dir=os.path.join(output_dir, "mlruns")))
    for t in trackers:
        t.start()
    return trackers


class RunLog:
    """Appends one JSON object per line to ``output_dir/log.jsonl``; mirrors numbers to TensorBoard.

    Args:
        output_dir: the run folder.
        enabled: False on non-main processes (every call is then a no-op).
        log_with: trackers to mirror numbers to (see :func:`make_trackers`).
    """

    def __init__(self, output_dir: str, *, enabled: bool, log_with: Sequence[Any] | None = None):
        self.output_dir = output_dir
        self.file = os.path.join(output_dir, "log.jsonl")
        self.enabled = enabled
        self.log_with = log_with
        self._fh = None
        self._trackers: list[Any] | None = None

    def open_trackers(self) -> None:
        """Start the ``log_with`` trackers (once; nothing on non-main processes)."""
        if not self.enabled or self._trackers is not None:
            return
        self._trackers = make_trackers(self.log_with, output_dir=self.output_dir)

    open_tensorboard = open_trackers  # the name the trainer has always called

    def __call__(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with writing_to(self.file):  # a full disk or read-only folder names log.jsonl
            if self._fh is None:
                os.makedirs(self.output_dir, exist_ok=True)
                self._fh = open(self.file, "a", buffering=1)  # noqa: SIM115 (open for the run)
            self._fh.write(json.dumps(record) + "\n")
        if self._trackers and "step" in record:
            values = {
                k: v
                for k, v in record.items()
                if isinstance(v, (int, float))
                and not isinstance(v, bool)
                and k != "step"
                and math.isfinite(v)
            }
            if values:
                for t in self._trackers:
                    t.log(values, step=record["step"])

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        for t in self._trackers or ():
            t.finish()
        self._trackers = None


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

        rec = {
            "step": fields.pop("step"),
            "stage": fields.pop("stage"),
            "loss": mean(loss),
            "lm_loss": mean(lm),
            "aux_loss": mean(aux) if self.has_aux else None,
            "lr": fields.pop("lr"),
            "samples_per_s": samples / dt,
            **fields,
        }
        self._reset()
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}

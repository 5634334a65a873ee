"""Run-level guards of the training loop: the non-finite skip budget and the end-of-run report.

A run under ``on_nonfinite_loss="skip"`` may skip a few bad steps, but a run that skipped most of them did
not train: once more than ``train.max_nonfinite_fraction`` of the run's steps have been skipped, it fails with
:class:`~mowe.training.config.NonFiniteLossError` (the CLI exits 6). A run that skipped fewer still says so
on stderr when it ends, so no skipped step goes unnoticed.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

from mowe.errors import NonFiniteLossError
from mowe.training.config import TrainConfig

__all__ = ["check_nonfinite", "report_end_of_run", "skip_budget"]


def skip_budget(config: TrainConfig, total_steps: int) -> int:
    """How many steps the run may skip: ``floor(max_nonfinite_fraction * total_steps)``."""
    return math.floor(config.max_nonfinite_fraction * total_steps + 1e-9)


def check_nonfinite(
    config: TrainConfig, *, skipped: int, total_steps: int, step: int, stage: str, ids: Sequence[Any]
) -> None:
    """Called after a step with a non-finite loss or gradient norm (``skipped`` counts it already).

    Raises:
        NonFiniteLossError: ``on_nonfinite_loss="stop"``, or more skipped steps than the budget allows.
    """
    where = f"step {step} (stage {stage!r}, examples {list(ids)[:8]})"
    if config.on_nonfinite_loss == "stop":
        raise NonFiniteLossError(
            f"non-finite loss or gradient at {where}; stopping because train.on_nonfinite_loss='stop'. Lower "
            f"the "
            f"learning rate, check those examples, or set on_nonfinite_loss='skip' to skip such steps"
        )
    budget = skip_budget(config, total_steps)
    if skipped > budget:
        raise NonFiniteLossError(
            f"non-finite loss or gradient at {where}: {skipped} of the run's {total_steps} steps skipped, "
            f"more than "
            f"train.max_nonfinite_fraction={config.max_nonfinite_fraction:g} allows ({budget}); the run is "
            f"not "
            f"training. Lower the learning rate or check the data (the skipped steps' examples are in the "
            f"log)"
        )


def report_end_of_run(dataset: Any, *, skipped_nonfinite: int, steps: int, is_main: bool) -> None:
    """Print the dataset's skipped-example report and the count of skipped non-finite steps on stderr."""
    if not is_main:
        return
    report = getattr(dataset, "skip_report", None)
    text = report() if callable(report) else ""
    if text:
        print(text, file=sys.stderr)
    if skipped_nonfinite:
        print(
            f"warning: {skipped_nonfinite} of {steps} training steps were skipped (non-finite loss or "
            f"gradient; "
            f"train.on_nonfinite_loss='skip')",
            file=sys.stderr,
        )

"""Plots of an evaluation: which weak encoder the router chose for each task.

Shape legend: ``e`` weak encoders in the pool.

Needs matplotlib (imported when a figure is drawn, with the non-interactive ``Agg`` backend).

Example:
    >>> result = evaluate_model(model, processor, dataset)                         # doctest: +SKIP
    >>> plot_router_heatmap(result.router_counts, result.encoder_names, "router.png")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from mowe.errors import MoWEInputError

__all__ = ["plot_router_heatmap", "router_usage"]


def router_usage(counts: Mapping[str, Sequence[float]], num_encoders: int | None = None
                 ) -> tuple[list[str], np.ndarray]:
    """Per-task selection counts -> ``(tasks sorted, (tasks, e) shares)``, each row summing to 1 (0 if empty).

    Args:
        counts: task -> how often each weak encoder was selected (``EvalResult.router_counts``).
        num_encoders: expected ``e`` (checked when given).

    Raises:
        MoWEInputError: rows of different lengths, or not ``num_encoders`` long (naming the task).
    """
    tasks = sorted(counts)
    widths = {len(counts[t]) for t in tasks}
    if num_encoders is not None:
        widths.add(num_encoders)
    if len(widths) > 1:
        bad = next(t for t in tasks if len(counts[t]) != (num_encoders or len(counts[tasks[0]])))
        raise MoWEInputError(f"router counts of task {bad!r} have {len(counts[bad])} entries; expected "
                             f"{num_encoders or len(counts[tasks[0]])} (one per weak encoder)")
    m = np.array([list(counts[t]) for t in tasks], dtype=float).reshape(len(tasks), widths.pop() if widths else 0)
    return tasks, m / m.sum(1, keepdims=True).clip(min=1e-12)


def plot_router_heatmap(counts: Mapping[str, Sequence[float]], encoder_names: Sequence[str],
                        path: str | os.PathLike, *, title: str = "weak encoder selected, per task") -> np.ndarray:
    """Draw a tasks x encoders heatmap of selection shares into ``path`` (PNG, SVG, ... by extension).

    Args:
        counts: task -> per-encoder selection counts, in ``encoder_names`` order.
        encoder_names: the pool's encoder names (columns).
        path: the image file to write.
        title: the figure title.

    Returns:
        The ``(tasks, e)`` shares drawn (rows: tasks in sorted order).
    """
    tasks, m = router_usage(counts, len(encoder_names))
    if not tasks:
        raise MoWEInputError("router counts are empty: nothing to plot (a model without a weak pool?)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.8 + 1.3 * m.shape[1], 0.9 + 0.45 * len(tasks)))
    try:
        im = ax.imshow(m, cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(m.shape[1]), list(encoder_names), rotation=30, ha="right")
        ax.set_yticks(range(len(tasks)), tasks)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", color="w" if m[i, j] < 0.6 else "k",
                        fontsize=8)
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        fig.savefig(os.fspath(path), dpi=110)
    finally:
        plt.close(fig)
    return m

"""Plots of an evaluation: which weak encoder the router chose for each task, and for each window of a clip.

Shape legend: ``e`` weak encoders in the pool, ``w`` routing windows of a clip.

Needs matplotlib (imported when a figure is drawn, with the non-interactive ``Agg`` backend).

Example:
    >>> result = evaluate_model(model, processor, dataset)                         # doctest: +SKIP
    >>> plot_router_heatmap(result.router_counts, result.encoder_names, "router.png")  # doctest: +SKIP
    >>> audio = model.encode_audio(waveforms, lengths)  # routed per window  # doctest: +SKIP
    >>> names = model.weak_encoders.names                                    # doctest: +SKIP
    >>> plot_router_windows(audio.router, names, "windows.png", window_seconds=30)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from mowe.errors import MoWEInputError
from mowe.routers.base import RouterOutput

__all__ = ["plot_router_heatmap", "plot_router_windows", "router_usage", "window_usage"]


def router_usage(
    counts: Mapping[str, Sequence[float]], num_encoders: int | None = None
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
        raise MoWEInputError(
            f"router counts of task {bad!r} have {len(counts[bad])} entries; expected "
            f"{num_encoders or len(counts[tasks[0]])} (one per weak encoder)"
        )
    m = np.array([list(counts[t]) for t in tasks], dtype=float).reshape(
        len(tasks), widths.pop() if widths else 0
    )
    return tasks, m / m.sum(1, keepdims=True).clip(min=1e-12)


def plot_router_heatmap(
    counts: Mapping[str, Sequence[float]],
    encoder_names: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = "weak encoder selected, per task",
) -> np.ndarray:
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
                ax.text(
                    j,
                    i,
                    f"{m[i, j]:.2f}",
                    ha="center",
                    va="center",
                    color="w" if m[i, j] < 0.6 else "k",
                    fontsize=8,
                )
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        fig.savefig(os.fspath(path), dpi=110)
    finally:
        plt.close(fig)
    return m


def window_usage(route: RouterOutput, clip: int = 0) -> np.ndarray:
    """One clip's routing over time: ``(w, e)`` gates per window (zero for encoders a window did not select),
    its windows only. A clip routed per clip is one window."""
    win = route.per_window()
    if not 0 <= clip < win.gates.shape[0]:
        raise MoWEInputError(f"clip {clip} is not in this batch of {win.gates.shape[0]} clips")
    inside = win.mask[clip].detach().cpu().numpy()
    return win.gates[clip].detach().float().cpu().numpy()[inside]


def plot_router_windows(
    route: RouterOutput,
    encoder_names: Sequence[str],
    path: str | os.PathLike,
    *,
    clip: int = 0,
    window_seconds: float | None = None,
    title: str = "weak encoder gate, per window",
) -> np.ndarray:
    """Draw an encoders x windows heatmap of one clip's gates (time runs left to right) into ``path``.

    Args:
        route: the router's output for a batch (``MoWEAudioLLM.encode_audio(...).router``).
        encoder_names: the pool's encoder names (rows).
        path: the image file to write.
        clip: which clip of the batch.
        window_seconds: the window length, to label the time axis in minutes:seconds (None: window numbers).

    Returns:
        The ``(w, e)`` gates drawn.
    """
    m = window_usage(route, clip)
    if m.shape[1] != len(encoder_names):
        raise MoWEInputError(
            f"the route has {m.shape[1]} encoders but encoder_names has {len(encoder_names)}"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2.0 + 0.35 * m.shape[0], 0.9 + 0.45 * m.shape[1]))
    try:
        im = ax.imshow(m.T, cmap="viridis", vmin=0, vmax=max(float(m.max()), 1e-6), aspect="auto")
        ax.set_yticks(range(m.shape[1]), list(encoder_names))
        step = max(1, m.shape[0] // 12)
        ticks = list(range(0, m.shape[0], step))
        if window_seconds is None:
            labels = [str(i) for i in ticks]
            ax.set_xlabel("window")
        else:
            labels = [f"{int(i * window_seconds // 60)}:{int(i * window_seconds % 60):02d}" for i in ticks]
            ax.set_xlabel("window start (min:s)")
        ax.set_xticks(ticks, labels)
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        fig.savefig(os.fspath(path), dpi=110)
    finally:
        plt.close(fig)
    return m

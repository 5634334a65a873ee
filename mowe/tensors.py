"""Small tensor helpers shared by every layer: masks from lengths, length groups, padding budgets.

Shape legend: ``b`` batch, ``t`` frames, ``w`` windows.
"""

from __future__ import annotations

import torch

from mowe.errors import MoWEInputError

__all__ = [
    "AUTO_BUCKET_PADDING",
    "DTYPES",
    "check_bucket_padding",
    "length_groups",
    "lengths_to_mask",
    "resolve_bucket_padding",
    "window_lengths",
]

#: The dtypes a config, a flag or a converter may name, by name: the one map of them.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``(b,)`` lengths -> ``(b, max_len)`` bool mask, True on valid positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def window_lengths(lengths: torch.Tensor, window: int, num_windows: int | None = None) -> torch.Tensor:
    """Cut each clip of ``lengths`` (frames or samples) into consecutive windows of ``window``: ``(b,)`` ->
    ``(b, w)`` valid positions per window (``window`` for every full window, the rest in a clip's last one, 0
    for windows past its end). ``num_windows``: ``w`` (default: enough for the longest clip, at least 1).

    Example:
        >>> window_lengths(torch.tensor([5, 2]), 2).tolist()
        [[2, 2, 1], [2, 0, 0]]
    """
    if num_windows is None:
        num_windows = max(1, -(-int(lengths.max()) // window)) if lengths.numel() else 1
    starts = torch.arange(num_windows, device=lengths.device) * window
    return (lengths[:, None] - starts[None, :]).clamp(min=0, max=window)


def length_groups(lengths: list[int], max_padding: float) -> list[list[int]]:
    """Split clips into groups of similar length: each group, padded to its longest clip, wastes at most
    ``max_padding`` of its real samples on padding.

    Clips are taken longest first; a group grows while ``n * longest <= (1 + max_padding) * sum(lengths)``.
    Returns lists of clip indices (longest group first). ``max_padding=inf`` gives one group.

    Example:
        >>> length_groups([100, 10, 95, 12], 0.25)
        [[0, 2], [3, 1]]
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        g = groups[-1] if groups else None
        if g is not None and (len(g) + 1) * lengths[g[0]] <= (1 + max_padding) * (
            sum(lengths[j] for j in g) + lengths[i]
        ):
            g.append(i)
        else:
            groups.append([i])
    return groups


# bucket_padding="auto": on CPU a GEMM runs as fast on one clip's frames as on a batch's, so groups are kept
# tight (benchmarks: 0.05 encodes a mixed 1-30 s batch ~15% faster than 0.25, and no slower on short clips);
# accelerators keep wider groups, where fewer, larger launches pay (not yet measured on a GPU here).
AUTO_BUCKET_PADDING = {"cpu": 0.05, "other": 0.25}


def check_bucket_padding(value: float | str | None, *, name: str = "bucket_padding") -> float | str | None:
    """Validate a length-group padding budget (``name`` for the error): a fraction >= 0, ``"auto"`` or None
    (one padded batch)."""
    if value is None or value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise MoWEInputError(f"{name} must be a fraction >= 0, 'auto' or None, got {value!r}")
    return float(value)


def resolve_bucket_padding(value: float | str | None, device: torch.device) -> float | None:
    """The padding budget of :func:`encode_in_length_groups` for a batch on ``device``."""
    if value == "auto":
        return AUTO_BUCKET_PADDING["cpu" if device.type == "cpu" else "other"]
    return value

"""LTU-AS's training curriculum (arXiv 2309.14405, sec. 4) as :class:`~mowe.curriculum.Stage` objects."""

from __future__ import annotations

from collections.abc import Sequence

from mowe.curriculum import Stage, per_stage_steps

__all__ = ["ltu_as_stages"]


def ltu_as_stages(
    steps: int | Sequence[int] = (1000, 1000, 1000),
    *,
    closed_ended_tasks: Sequence[str] | None = None,
    lrs: tuple[float, float, float] = (1e-3, 1e-4, 1e-4),
) -> list[Stage]:
    """LTU-AS's three-stage curriculum (arXiv 2309.14405, sec. 4, table 2).

    1. ``projector``: the connector (TLTR + projection) alone, lr 1e-3, on all data.
    2. ``closed_ended``: every trainable part (connector + LoRA + routers if the model has them), lr 1e-4, on
       the closed-ended (classification-style) tasks ``closed_ended_tasks``, equally weighted (None: all data;
       :func:`mowe.ltu_as.ltu_as` passes the demo corpus's classification tasks).
    3. ``all``: every trainable part on all data, lr 1e-4.
    """
    s1, s2, s3 = per_stage_steps(steps, "ltu_as_stages")
    every = ("connector", "routers", "lora")
    closed = None if closed_ended_tasks is None else {t: 1.0 for t in closed_ended_tasks}
    return [
        Stage("projector", ("connector",), s1, lrs[0], warmup_steps=min(s1, 100) // 10),
        Stage("closed_ended", every, s2, lrs[1], tasks=closed, warmup_steps=min(s2, 100) // 10),
        Stage("all", every, s3, lrs[2], warmup_steps=min(s3, 100) // 10),
    ]

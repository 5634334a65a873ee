"""Training stages (the curriculum): which parts of a :class:`~mowe.MoWEAudioLLM` train, for how long, on which tasks.

A run is a list of :class:`Stage` objects executed in order by :class:`mowe.training.trainer.Trainer`. Each stage names
the parts that train (everything else is frozen), its step count and peak learning rate (linear warm-up, then
cosine decay within the stage), and optionally per-task sampling weights. :mod:`mowe.training.stages` applies
them to a model (which parameters each part names).

Presets reproduce the curricula of the three papers on top of these parts:
:func:`mowe_default_stages`, :func:`salmonn_stages`, :func:`ltu_as_stages`.

Example:
    >>> stages = ltu_as_stages(steps=(100, 200, 300))
    >>> [s.name for s in stages]
    ['projector', 'closed_ended', 'all']
    >>> stages_from_list(stages_to_list(stages)) == stages
    True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mowe.config import from_dict
from mowe.errors import ConfigError

__all__ = ["MEMBER_PREFIX", "PARTS", "Stage", "ltu_as_stages", "mowe_default_stages", "salmonn_stages",
           "stages_from_list", "stages_to_list"]

PARTS = ("connector", "routers", "weak_encoders", "strong_encoder", "lora", "llm")
MEMBER_PREFIX = "weak_encoders."  # + a weak encoder's name: that member alone


@dataclass(frozen=True)
class Stage:
    """One training stage.

    Attributes:
        name: label used in logs and checkpoints.
        train: the parts that train in this stage (a subset of :data:`PARTS`); everything else is frozen.
        steps: optimizer steps in this stage.
        lr: peak learning rate (AdamW), reached after ``warmup_steps`` and then decayed with a cosine to 0.
        tasks: per-task sampling weights (``{"transcribe": 1.0, "caption": 0.5}``): examples are drawn with
            replacement so that each listed task gets its share of the weight, tasks not listed are not drawn.
            ``None`` uses all data in its natural proportions (a seeded shuffle, epoch after epoch).
        warmup_steps: linear warm-up steps at the start of the stage.
        lora_scale: multiplies every LoRA layer's scaling factor (``alpha / r``) while this stage trains; it is
            restored at the end of the stage. ``None`` leaves the scaling as configured.
    """

    name: str
    train: tuple[str, ...]
    steps: int
    lr: float
    tasks: dict[str, float] | None = None
    warmup_steps: int = 0
    lora_scale: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.train, str) or not isinstance(self.train, Iterable):
            raise ConfigError(f"stage {self.name!r}: 'train' must be a list of parts, got {self.train!r}")
        object.__setattr__(self, "train", tuple(self.train))
        for part in self.train:
            if part not in PARTS and not (part.startswith(MEMBER_PREFIX) and len(part) > len(MEMBER_PREFIX)):
                raise ConfigError(f"stage {self.name!r}: unknown part {part!r} in 'train' (known: {list(PARTS)} "
                                  f"and 'weak_encoders.<name>')")
        if not self.train:
            raise ConfigError(f"stage {self.name!r}: 'train' names no part")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ConfigError(f"stage {self.name!r}: 'steps' must be a positive integer, got {self.steps!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"stage {self.name!r}: 'lr' must be a positive number, got {self.lr!r}")
        if not isinstance(self.warmup_steps, int) or not 0 <= self.warmup_steps <= self.steps:
            raise ConfigError(f"stage {self.name!r}: 'warmup_steps' must be in [0, steps={self.steps}], "
                              f"got {self.warmup_steps!r}")
        if self.tasks is not None:
            if not isinstance(self.tasks, dict) or not self.tasks:
                raise ConfigError(f"stage {self.name!r}: 'tasks' must be a non-empty mapping task -> weight")
            for task, w in self.tasks.items():
                if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                    raise ConfigError(f"stage {self.name!r}: weight of task {task!r} must be >= 0, got {w!r}")
            if not any(w > 0 for w in self.tasks.values()):
                raise ConfigError(f"stage {self.name!r}: every task weight is 0")
        if self.lora_scale is not None and not (isinstance(self.lora_scale, (int, float)) and self.lora_scale >= 0):
            raise ConfigError(f"stage {self.name!r}: 'lora_scale' must be >= 0, got {self.lora_scale!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-able dict (``train`` as a list)."""
        d = dataclasses.asdict(self)
        d["train"] = list(self.train)
        return d

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "stage") -> Stage:
        """Build a stage from a dict with :func:`mowe.config.from_dict` (unknown key, wrong type, missing key:
        a :class:`ConfigError` naming the key path)."""
        return from_dict(cls, data, where=where)


def stages_to_list(stages: Sequence[Stage]) -> list[dict[str, Any]]:
    """Stages -> list of plain dicts (for YAML / JSON)."""
    return [s.to_dict() for s in stages]


def stages_from_list(data: Any, *, where: str = "stages") -> list[Stage]:
    """List of dicts -> stages; unknown keys raise :class:`ConfigError` naming the key and the stage."""
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{where}: expected a non-empty list of stages")
    stages = [Stage.from_dict(d, where=f"{where}[{i}]") for i, d in enumerate(data)]
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: stage names must be unique, got {names}")
    return stages


# ----------------------------------------------------------------------------------------------- presets
def _three(steps: int | Sequence[int], what: str) -> tuple[int, int, int]:
    if isinstance(steps, int):
        return steps, steps, steps
    steps = tuple(steps)
    if len(steps) != 3:
        raise ConfigError(f"{what}: steps must be one int or three (one per stage), got {steps}")
    return steps  # type: ignore[return-value]


def mowe_default_stages(steps: int, *, lr: float = 1e-4, warmup_steps: int | None = None) -> list[Stage]:
    """MoWE-Audio (arXiv 2409.06635): one stage training connector, routers and LoRA on all data."""
    warm = min(steps, max(0, steps // 20)) if warmup_steps is None else warmup_steps
    return [Stage("mowe", ("connector", "routers", "lora"), steps, lr, warmup_steps=warm)]


def salmonn_stages(steps: int | Sequence[int] = (1000, 1000, 12), *, lr: float = 3e-5,
                   pretrain_tasks: Mapping[str, float] | None = None,
                   activation_tasks: Mapping[str, float] | None = None,
                   activation_lora_scale: float = 0.5) -> list[Stage]:
    """SALMONN's three stages (arXiv 2310.13289, sec. 3.3).

    1. ``pretrain``: connector (window Q-Former) + LoRA on ``pretrain_tasks`` (SALMONN: speech recognition and
       audio captioning).
    2. ``instruction``: the same parts on all tasks.
    3. ``activation``: a short stage on ``activation_tasks`` (a small set of long-answer, QA-like tasks) with the
       LoRA scaling reduced.

    How the activation trick is modelled: SALMONN found that the instruction-tuned model over-fits to short
    ASR/caption-style answers and that *lowering the LoRA scaling factor* brings back the LLM's own abilities;
    it then fine-tunes briefly on a few long, diverse responses (obtained with the discounted scaling) so the
    model answers well at full scale. Here the activation stage trains LoRA with its scaling multiplied by
    ``activation_lora_scale`` (the trainer restores the configured scaling afterwards). To use the discounted
    scaling at inference as well, call :func:`mowe.hf.adapter.set_lora_scale` (``mowe infer --lora-scale``).

    Args:
        steps: one count for all three stages or three counts.
        lr: peak learning rate (SALMONN: 3e-5).
        pretrain_tasks: task weights of stage 1; None: all data. Your data's names for ASR and captioning go
            here (:func:`mowe.presets.salmonn` passes the demo corpus's).
        activation_tasks: task weights of stage 3; None: all data.
        activation_lora_scale: multiplier of the LoRA scaling in the activation stage.
    """
    s1, s2, s3 = _three(steps, "salmonn_stages")
    parts = ("connector", "lora")

    def weights(tasks: Mapping[str, float] | None) -> dict[str, float] | None:
        return None if tasks is None else dict(tasks)

    return [
        Stage("pretrain", parts, s1, lr, tasks=weights(pretrain_tasks), warmup_steps=min(s1, 100) // 10),
        Stage("instruction", parts, s2, lr, warmup_steps=min(s2, 100) // 10),
        Stage("activation", parts, s3, lr, tasks=weights(activation_tasks), lora_scale=activation_lora_scale),
    ]


def ltu_as_stages(steps: int | Sequence[int] = (1000, 1000, 1000), *,
                  closed_ended_tasks: Sequence[str] | None = None,
                  lrs: tuple[float, float, float] = (1e-3, 1e-4, 1e-4)) -> list[Stage]:
    """LTU-AS's three-stage curriculum (arXiv 2309.14405, sec. 4, table 2).

    1. ``projector``: the connector (TLTR + projection) alone, lr 1e-3, on all data.
    2. ``closed_ended``: every trainable part (connector + LoRA + routers if the model has them), lr 1e-4, on the
       closed-ended (classification-style) tasks ``closed_ended_tasks``, equally weighted (None: all data;
       :func:`mowe.presets.ltu_as` passes the demo corpus's classification tasks).
    3. ``all``: every trainable part on all data, lr 1e-4.
    """
    s1, s2, s3 = _three(steps, "ltu_as_stages")
    every = ("connector", "routers", "lora")
    closed = None if closed_ended_tasks is None else {t: 1.0 for t in closed_ended_tasks}
    return [
        Stage("projector", ("connector",), s1, lrs[0], warmup_steps=min(s1, 100) // 10),
        Stage("closed_ended", every, s2, lrs[1], tasks=closed, warmup_steps=min(s2, 100) // 10),
        Stage("all", every, s3, lrs[2], warmup_steps=min(s3, 100) // 10),
    ]

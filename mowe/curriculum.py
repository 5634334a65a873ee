"""Training stages (the curriculum): which parts of a :class:`~mowe.MoWEAudioLLM` train, for how long, on
which tasks.

A run is a list of :class:`Stage` objects executed in order by :class:`mowe.training.trainer.Trainer`. Each
stage names the parts that train (everything else is frozen), its step count and peak learning rate (linear
warm-up, then cosine decay within the stage), and optionally per-task sampling weights.
:mod:`mowe.training.stages` applies them to a model (which parameters each part names).

Presets reproduce the curricula of the papers on top of these parts: :func:`mowe_default_stages` here, the
seed systems' own in their packages (:func:`mowe.salmonn.salmonn_stages`, :func:`mowe.ltu_as.ltu_as_stages`).

Example:
    >>> stages = mowe_default_stages(100)
    >>> [s.name for s in stages]
    ['mowe']
    >>> stages_from_list(stages_to_list(stages)) == stages
    True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mowe.config import check_fields, from_dict
from mowe.errors import ConfigError

__all__ = [
    "MEMBER_PREFIX",
    "PARTS",
    "Stage",
    "mowe_default_stages",
    "per_stage_steps",
    "stages_from_list",
    "stages_to_list",
]

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
        lora_scale: multiplies every LoRA layer's scaling factor (``alpha / r``) while this stage trains; it
            is restored at the end of the stage. ``None`` leaves the scaling as configured.
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
        # Types by the one config loader, then the value rules of mowe.validation (steps, warmup_steps, lr,
        # lora_scale): the same checks, and messages, as a run file's stage.
        where = f"stage {self.name!r}"
        check_fields(self, where=where)
        for part in self.train:
            if part not in PARTS and not (part.startswith(MEMBER_PREFIX) and len(part) > len(MEMBER_PREFIX)):
                raise ConfigError(
                    f"stage {self.name!r}: unknown part {part!r} in 'train' (known: {list(PARTS)} "
                    f"and 'weak_encoders.<name>')"
                )
        if not self.train:
            raise ConfigError(f"stage {self.name!r}: 'train' names no part")
        if self.warmup_steps > self.steps:
            raise ConfigError(
                f"{where}.warmup_steps: must be in [0, steps={self.steps}], got {self.warmup_steps!r}"
            )
        if self.tasks is not None:
            if not self.tasks:
                raise ConfigError(f"{where}.tasks: must be a non-empty mapping task -> weight or null")
            for task, w in self.tasks.items():
                if not math.isfinite(w) or w < 0:
                    raise ConfigError(f"{where}.tasks.{task}: weight must be a finite number >= 0, got {w!r}")
            if not any(w > 0 for w in self.tasks.values()):
                raise ConfigError(f"{where}.tasks: every task weight is 0")

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
    stages = [Stage.from_dict(d, where=_stage_where(d, f"{where}[{i}]")) for i, d in enumerate(data)]
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: stage names must be unique, got {names}")
    return stages


def _stage_where(data: Any, fallback: str) -> str:
    """A stage is named by its name in errors (``stage 'warm'.lr``), as :class:`Stage` itself names it, so a
    run file's stage and a ``Stage(...)`` built in Python get the same message; by its index if it has
       none."""
    name = data.get("name") if isinstance(data, dict) else None
    return f"stage {name!r}" if isinstance(name, str) else fallback


# ----------------------------------------------------------------------------------------------- presets
def per_stage_steps(steps: int | Sequence[int], what: str, *, stages: int = 3) -> tuple[int, ...]:
    """One step count for each of ``stages`` stages: ``steps`` as one int (the same for all) or one per stage.

    Raises:
        ConfigError: a sequence of another length (names ``what``).
    """
    if isinstance(steps, int):
        return (steps,) * stages
    steps = tuple(steps)
    if len(steps) != stages:
        raise ConfigError(f"{what}: steps must be one int or {stages} (one per stage), got {steps}")
    return steps


def mowe_default_stages(steps: int, *, lr: float = 1e-4, warmup_steps: int | None = None) -> list[Stage]:
    """MoWE-Audio (arXiv 2409.06635): one stage training connector, routers and LoRA on all data."""
    warm = min(steps, max(0, steps // 20)) if warmup_steps is None else warmup_steps
    return [Stage("mowe", ("connector", "routers", "lora"), steps, lr, warmup_steps=warm)]

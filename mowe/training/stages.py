"""Training stages: which parts of a :class:`~mowe.MoWEAudioLLM` train, for how long, on which tasks.

A run is a list of :class:`Stage` objects executed in order by :class:`mowe.training.trainer.Trainer`. Each stage names
the parts that train (everything else is frozen), its step count and peak learning rate (linear warm-up, then
cosine decay within the stage), and optionally per-task sampling weights.

Parts (see :func:`parameter_groups`):

* ``"connector"``      ``model.connector``
* ``"routers"``        ``model.router`` (absent in a base-only model: then skipped)
* ``"weak_encoders"``  ``model.pool``: its members that are not frozen and, for the ``"topk"`` layout, the slot
  adapters (absent in a base-only model: then skipped)
* ``"weak_encoders.<name>"`` one member of the pool by its config name (and its slot adapter), frozen or not
* ``"strong_encoder"`` ``model.strong_encoder``
* ``"lora"``           LLM parameters with ``"lora_"`` in their name (peft adapters)
* ``"llm"``            every other LLM parameter (the base weights)

Per-encoder freezing: an encoder built frozen (``EncoderConfig(freeze=True)``, the default, or a module whose
parameters you set to ``requires_grad=False`` before training) keeps its weights when a stage names the group
``"weak_encoders"``; only a stage naming it by its own name (``"weak_encoders.<name>"``, or ``"strong_encoder"``
for the strong one) trains it. Which encoders count as frozen is read once, at the first :func:`apply_stage` on
the model, before any stage has changed ``requires_grad``.

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
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from mowe.config import from_dict
from mowe.errors import ConfigError

__all__ = [
    "PARTS",
    "Stage",
    "apply_stage",
    "eval_due",
    "frozen_encoders",
    "log_stage_start",
    "ltu_as_stages",
    "mowe_default_stages",
    "parameter_groups",
    "salmonn_stages",
    "set_lora_scale",
    "stages_from_list",
    "stages_to_list",
    "trainable_summary",
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


# ----------------------------------------------------------------------------------------------- parts
def _llm_params(model: nn.Module, *, lora: bool) -> list[tuple[str, nn.Parameter]]:
    llm = getattr(model, "llm", None)
    if llm is None:
        return []
    return [(f"llm.{n}", p) for n, p in llm.named_parameters() if ("lora_" in n) == lora]


def parameter_groups(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Part name -> ``(qualified name, parameter)`` pairs; parts the model lacks map to an empty list."""
    def of(attr: str) -> list[tuple[str, nn.Parameter]]:
        mod = getattr(model, attr, None)
        return [] if mod is None else [(f"{attr}.{n}", p) for n, p in mod.named_parameters()]

    return {
        "connector": of("connector"),
        "routers": of("router"),
        "weak_encoders": of("pool"),
        "strong_encoder": of("strong_encoder"),
        "lora": _llm_params(model, lora=True),
        "llm": _llm_params(model, lora=False),
    }


# Parts a base-only model (SALMONN, LTU-AS) legitimately lacks: a stage naming them trains the rest.
_OPTIONAL_PARTS = {"routers": "router", "weak_encoders": "pool"}


def frozen_encoders(model: nn.Module) -> frozenset[str]:
    """Parts naming the encoders built frozen (``"strong_encoder"``, ``"weak_encoders.<name>"``).

    Read on the first call (an encoder with parameters, none of them trainable) and remembered on the model, so
    later stages changing ``requires_grad`` do not change the answer.
    """
    known = model.__dict__.get("_mowe_frozen_encoders")
    if known is None:
        mods = {"strong_encoder": getattr(model, "strong_encoder", None)}
        pool = getattr(model, "pool", None)
        if pool is not None:
            mods.update({MEMBER_PREFIX + n: e for n, e in pool.encoders.items()})
        known = frozenset(k for k, m in mods.items() if m is not None and _all_frozen(m))
        model.__dict__["_mowe_frozen_encoders"] = known
    return known


def _all_frozen(module: nn.Module) -> bool:
    params = list(module.parameters())
    return bool(params) and not any(p.requires_grad for p in params)


def _member_params(model: nn.Module, name: str) -> list[tuple[str, nn.Parameter]]:
    """The parameters of pool member ``name`` (and of its ``"topk"`` slot adapter)."""
    pool = model.pool
    out = [(f"pool.encoders.{name}.{n}", p) for n, p in pool.encoders[name].named_parameters()]
    if getattr(pool, "adapters", None) is not None and name in pool.adapters:
        out += [(f"pool.adapters.{name}.{n}", p) for n, p in pool.adapters[name].named_parameters()]
    return out


def _part_params(model: nn.Module, part: str, groups: Mapping[str, list], stage: Stage) -> list | None:
    """Parameters a stage's part names; None for a part this model legitimately lacks."""
    pool = getattr(model, "pool", None)
    if part.startswith(MEMBER_PREFIX):
        name = part[len(MEMBER_PREFIX):]
        if pool is None or name not in pool.encoders:
            have = [] if pool is None else list(pool.encoders)
            raise ConfigError(f"stage {stage.name!r} trains {part!r} but the model has no weak encoder {name!r} "
                              f"(weak encoders: {have})")
        return _member_params(model, name)
    if part == "weak_encoders" and pool is not None:
        frozen = frozen_encoders(model)
        skip = {id(p) for n in pool.encoders if MEMBER_PREFIX + n in frozen
                for p in pool.encoders[n].parameters()}
        params = [(n, p) for n, p in groups[part] if id(p) not in skip]
        if not params:
            raise ConfigError(f"stage {stage.name!r} trains 'weak_encoders' but every weak encoder is frozen "
                              f"(freeze: true); name one to train it anyway, e.g. '{MEMBER_PREFIX}{pool.names[0]}'")
        return params
    params = groups[part]
    if not params and part in _OPTIONAL_PARTS and getattr(model, _OPTIONAL_PARTS[part], None) is None:
        return None
    return params


def stage_parameters(model: nn.Module, stage: Stage) -> list[tuple[str, nn.Parameter]]:
    """The ``(name, parameter)`` pairs ``stage`` trains, in ``model.named_parameters()`` order, without changing
    ``requires_grad`` (the same choice :func:`apply_stage` makes; resume checks an optimizer state against it).

    Raises:
        ConfigError: a named part with no parameters, an unknown weak encoder, or nothing to train.
    """
    frozen_encoders(model)  # remember the build-time state before anything changes it
    groups = parameter_groups(model)
    chosen: set[int] = set()
    for part in stage.train:
        params = _part_params(model, part, groups, stage)
        if params is None:
            continue
        if not params:
            hint = " (build the LLM with llm.train='lora')" if part == "lora" else ""
            raise ConfigError(f"stage {stage.name!r} trains {part!r} but the model has no such parameters{hint}")
        chosen.update(id(p) for _, p in params)
    return [(n, p) for n, p in model.named_parameters() if id(p) in chosen]


def apply_stage(model: nn.Module, stage: Stage) -> list[str]:
    """Set ``requires_grad`` so that exactly the parts ``stage.train`` names train.

    ``"routers"`` and ``"weak_encoders"`` are skipped on a model without a weak pool; any other named part with
    no parameters (e.g. ``"lora"`` on an LLM without adapters) is a :class:`ConfigError`. ``"weak_encoders"``
    leaves the members built frozen as they are (:func:`frozen_encoders`); ``"weak_encoders.<name>"`` trains
    that member.

    Returns:
        The qualified names of the trainable parameters, in ``model.named_parameters()`` order.
    """
    chosen = {id(p) for _, p in stage_parameters(model, stage)}
    names = []
    for name, p in model.named_parameters():
        train = id(p) in chosen
        p.requires_grad_(train)
        if train:
            names.append(name)
    if not names:
        raise ConfigError(f"stage {stage.name!r}: no parameter of this model trains")
    return names


def trainable_summary(model: nn.Module) -> dict[str, int]:
    """Part -> number of trainable parameter values now, weak encoders listed one by one
    (``"weak_encoders.<name>"``, with its ``"topk"`` slot adapter); parts with none left out."""
    out: dict[str, int] = {}
    member = {}
    pool = getattr(model, "pool", None)
    if pool is not None:
        for n in pool.encoders:
            member.update({id(p): MEMBER_PREFIX + n for _, p in _member_params(model, n)})
    for part, params in parameter_groups(model).items():
        for _, p in params:
            if p.requires_grad:
                key = member.get(id(p), part)
                out[key] = out.get(key, 0) + p.numel()
    return out


def set_lora_scale(model: nn.Module, factor: float) -> dict[str, float]:
    """Multiply every peft LoRA layer's scaling by ``factor`` relative to its configured ``alpha / r``.

    Calling it with ``1.0`` restores the configured scaling. SALMONN lowers the LoRA scaling at inference to
    "activate" abilities that task over-fitting suppressed (arXiv 2310.13289, sec. 3.3).

    Returns:
        module name -> the new scaling of its default adapter (for logging and tests).
    """
    out = {}
    for name, mod in model.named_modules():
        scaling = getattr(mod, "scaling", None)
        if not isinstance(scaling, dict) or not hasattr(mod, "lora_alpha") or not hasattr(mod, "r"):
            continue
        for adapter in scaling:
            r = mod.r[adapter]
            alpha = mod.lora_alpha[adapter]
            base = alpha / math.sqrt(r) if getattr(mod, "use_rslora", {}).get(adapter, False) else alpha / r
            scaling[adapter] = base * factor
            out[name] = scaling[adapter]
    return out


def eval_due(eval_every: int, step: int, stage_done: bool, eval_dataset: Any, eval_fn: Any) -> bool:
    """Whether to evaluate after ``step``: every ``eval_every`` steps, or at each stage's end when it is 0 (so a
    dev set given to the trainer is never ignored); never without ``eval_dataset`` and ``eval_fn``."""
    if eval_dataset is None and eval_fn is None:
        return False
    return step % eval_every == 0 if eval_every else stage_done


def log_stage_start(log: Callable[[dict[str, Any]], None], stage: Stage, model: nn.Module, *, step: int,
                    show: bool) -> dict[str, int]:
    """Log (and print on the main process) what ``stage`` trains: trainable parameter values per part."""
    parts = trainable_summary(model)
    total = sum(parts.values())
    log({"event": "stage_start", "step": step, "stage": stage.name, "trains": parts, "trainable_parameters": total})
    if show:
        listed = ", ".join(f"{k} ({v:,})" for k, v in parts.items())
        print(f"stage {stage.name!r}: training {listed}; {total:,} trainable parameters", file=sys.stderr)
    return parts


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
    scaling at inference as well, call :func:`set_lora_scale` (``mowe infer --lora-scale``).

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

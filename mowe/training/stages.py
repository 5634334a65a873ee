"""Applying training stages to a model: which parameters of a :class:`~mowe.MoWEAudioLLM` each part names,
freezing the rest, and the trainer's per-stage bookkeeping. The stages themselves
   (:class:`~mowe.curriculum.Stage`) and the
curricula of the presets are in :mod:`mowe.curriculum`.

Parts (see :func:`parameter_groups`):
* ``"connector"``      ``model.connector``
* ``"routers"``        ``model.router`` (absent in a base-only model: then skipped)
* ``"weak_encoders"``  ``model.weak_encoders``: its members that are not frozen and, for the ``"topk"``
  layout, the slot adapters (absent in a base-only model: then skipped)
* ``"weak_encoders.<name>"`` one member of the pool by its config name (and its slot adapter), frozen or not
* ``"strong_encoder"`` ``model.strong_encoder``
* ``"lora"``           LLM parameters with ``"lora_"`` in their name (peft adapters)
* ``"llm"``            every other LLM parameter (the base weights)

Per-encoder freezing: an encoder built frozen (``EncoderConfig(freeze=True)``, the default, or a module whose
parameters you set to ``requires_grad=False`` before training) keeps its weights when a stage names the group
``"weak_encoders"``; only a stage naming it by its own name (``"weak_encoders.<name>"``, or
``"strong_encoder"`` for the strong one) trains it. Which encoders count as frozen is read once, at the first
:func:`apply_stage` on the model, before any stage has changed ``requires_grad``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from mowe.curriculum import MEMBER_PREFIX, Stage
from mowe.errors import ConfigError

__all__ = [
    "apply_stage",
    "eval_due",
    "frozen_encoders",
    "log_stage_start",
    "parameter_groups",
    "stage_parameters",
    "trainable_summary",
]


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
        "weak_encoders": of("weak_encoders"),
        "strong_encoder": of("strong_encoder"),
        "lora": _llm_params(model, lora=True),
        "llm": _llm_params(model, lora=False),
    }


# Parts a base-only model (SALMONN, LTU-AS) legitimately lacks: a stage naming them trains the rest.
_OPTIONAL_PARTS = {"routers": "router", "weak_encoders": "weak_encoders"}


def frozen_encoders(model: nn.Module) -> frozenset[str]:
    """Parts naming the encoders built frozen (``"strong_encoder"``, ``"weak_encoders.<name>"``).

    Read on the first call (an encoder with parameters, none of them trainable) and remembered on the model,
    so later stages changing ``requires_grad`` do not change the answer.
    """
    known = model.__dict__.get("_mowe_frozen_encoders")
    if known is None:
        mods = {"strong_encoder": getattr(model, "strong_encoder", None)}
        pool = getattr(model, "weak_encoders", None)
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
    pool = model.weak_encoders
    out = [(f"weak_encoders.encoders.{name}.{n}", p) for n, p in pool.encoders[name].named_parameters()]
    if getattr(pool, "adapters", None) is not None and name in pool.adapters:
        out += [(f"weak_encoders.adapters.{name}.{n}", p) for n, p in pool.adapters[name].named_parameters()]
    return out


def _part_params(model: nn.Module, part: str, groups: Mapping[str, list], stage: Stage) -> list | None:
    """Parameters a stage's part names; None for a part this model legitimately lacks."""
    pool = getattr(model, "weak_encoders", None)
    if part.startswith(MEMBER_PREFIX):
        name = part[len(MEMBER_PREFIX) :]
        if pool is None or name not in pool.encoders:
            have = [] if pool is None else list(pool.encoders)
            raise ConfigError(
                f"stage {stage.name!r} trains {part!r} but the model has no weak encoder {name!r} "
                f"(weak encoders: {have})"
            )
        return _member_params(model, name)
    if part == "weak_encoders" and pool is not None:
        frozen = frozen_encoders(model)
        skip = {
            id(p) for n in pool.encoders if MEMBER_PREFIX + n in frozen for p in pool.encoders[n].parameters()
        }
        params = [(n, p) for n, p in groups[part] if id(p) not in skip]
        if not params:
            raise ConfigError(
                f"stage {stage.name!r} trains 'weak_encoders' but every weak encoder is frozen "
                f"(freeze: true); name one to train it anyway, e.g. '{MEMBER_PREFIX}{pool.names[0]}'"
            )
        return params
    params = groups[part]
    if not params and part in _OPTIONAL_PARTS and getattr(model, _OPTIONAL_PARTS[part], None) is None:
        return None
    return params


def stage_parameters(model: nn.Module, stage: Stage) -> list[tuple[str, nn.Parameter]]:
    """The ``(name, parameter)`` pairs ``stage`` trains, in ``model.named_parameters()`` order, without
    changing ``requires_grad`` (the same choice :func:`apply_stage` makes; resume checks an optimizer state
       against it).

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
            raise ConfigError(
                f"stage {stage.name!r} trains {part!r} but the model has no such parameters{hint}"
            )
        chosen.update(id(p) for _, p in params)
    return [(n, p) for n, p in model.named_parameters() if id(p) in chosen]


def apply_stage(model: nn.Module, stage: Stage) -> list[str]:
    """Set ``requires_grad`` so that exactly the parts ``stage.train`` names train.

    ``"routers"`` and ``"weak_encoders"`` are skipped on a model without a weak pool; any other named part
    with no parameters (e.g. ``"lora"`` on an LLM without adapters) is a :class:`ConfigError`.
    ``"weak_encoders"`` leaves the members built frozen as they are (:func:`frozen_encoders`);
    ``"weak_encoders.<name>"`` trains that member.

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
    pool = getattr(model, "weak_encoders", None)
    if pool is not None:
        for n in pool.encoders:
            member.update({id(p): MEMBER_PREFIX + n for _, p in _member_params(model, n)})
    for part, params in parameter_groups(model).items():
        for _, p in params:
            if p.requires_grad:
                key = member.get(id(p), part)
                out[key] = out.get(key, 0) + p.numel()
    return out


def eval_due(eval_every: int, step: int, stage_done: bool, eval_dataset: Any, eval_fn: Any) -> bool:
    """Whether to evaluate after ``step``: every ``eval_every`` steps, or at each stage's end when it is 0 (so
    a dev set given to the trainer is never ignored); never without ``eval_dataset`` and ``eval_fn``."""
    if eval_dataset is None and eval_fn is None:
        return False
    return step % eval_every == 0 if eval_every else stage_done


def log_stage_start(
    log: Callable[[dict[str, Any]], None], stage: Stage, model: nn.Module, *, step: int, show: bool
) -> dict[str, int]:
    """Log (and print on the main process) what ``stage`` trains: trainable parameter values per part."""
    parts = trainable_summary(model)
    total = sum(parts.values())
    log(
        {
            "event": "stage_start",
            "step": step,
            "stage": stage.name,
            "trains": parts,
            "trainable_parameters": total,
        }
    )
    if show:
        listed = ", ".join(f"{k} ({v:,})" for k, v in parts.items())
        print(f"stage {stage.name!r}: training {listed}; {total:,} trainable parameters", file=sys.stderr)
    return parts

"""Checks a checkpoint passes before a resume touches anything (the model, the optimizer, the run folder).

:func:`check_trainer_state` checks ``trainer_state.json``'s keys and types (a corrupted or hand-edited file is
a :class:`~mowe.errors.CheckpointError` naming the file and the key, not a ``KeyError`` later).
:func:`validate_resume` checks that the checkpoint fits *this* run's stage: the stage it names, the weights'
shapes, and, when resuming inside a stage, that ``optimizer.pt`` holds one state per parameter that stage
trains, with the same shapes (an optimizer state copied from another stage is refused, saying what differs),
and that ``scheduler.pt`` and this process's RNG file load.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mowe.errors import CheckpointError
from mowe.io import strip_ansi
from mowe.state_dicts import rename_legacy_keys
from mowe.training.stages import stage_parameters

__all__ = ["SHARDED_DIR", "check_sharded_weights", "check_trainer_state", "torch_load", "validate_resume"]

# key -> (type, smallest value or None)
_STATE_KEYS: dict[str, tuple[type | tuple[type, ...], int | None]] = {
    "global_step": (int, 0),
    "stage_index": (int, 0),
    "stage_name": (str, None),
    "step_in_stage": (int, 0),
    "epoch": (int, 0),
    "batch_in_epoch": (int, 0),
    "skipped_nonfinite": (int, 0),
    "num_processes": (int, 1),
    "batch_size": (int, 1),
    "grad_accum": (int, 1),
    "seed": (int, 0),
    "stages": (list, None),
    "ever_trained": (list, None),
}


SHARDED_DIR = "sharded"


def torch_load(path: str) -> Any:
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle / zip errors have many types
        raise CheckpointError(f"{path}: unreadable ({strip_ansi(str(e))})") from e


def check_sharded_weights(model: nn.Module, path: str) -> bool:
    """Check the model entries of a checkpoint's DCP ``sharded/`` folder against ``model`` (global shapes)
    before anything is loaded; False when the checkpoint has no such folder.

    Raises:
        CheckpointError: unreadable metadata, or entries that do not fit this model.
    """
    from torch.distributed.checkpoint import FileSystemReader

    directory = os.path.join(path, SHARDED_DIR)
    if not os.path.isdir(directory):
        return False
    try:
        meta = FileSystemReader(directory).read_metadata().state_dict_metadata
    except Exception as e:  # DCP raises several types for a damaged folder
        raise CheckpointError(f"{directory}: unreadable DCP metadata ({type(e).__name__}: {e})") from e
    own = model.state_dict()
    meta = rename_legacy_keys(meta, where=directory, prefix="model.", warn=False)  # the load warns
    bad = [
        k
        for k, m in meta.items()
        if k.startswith("model.")
        and (k[6:] not in own or tuple(own[k[6:]].shape) != tuple(getattr(m, "size", ())))
    ]
    if bad:
        raise CheckpointError(f"{directory}: does not fit this model (e.g. {bad[:3]})")
    return True


def check_trainer_state(state: Any, path: str) -> None:
    """Keys and types of a ``trainer_state.json`` (whose ``format`` is checked by ``check_compatible``).

    Raises:
        CheckpointError: ``"<path>: key 'global_step' is missing"`` / ``"... must be an integer >= 0, got
        -1"``.
    """
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(state).__name__}")
    if "format" not in state:
        raise CheckpointError(f"{path}: key 'format' is missing (not a mowe trainer state, or corrupted)")
    for key, (tp, lo) in _STATE_KEYS.items():
        if key not in state:
            raise CheckpointError(f"{path}: key {key!r} is missing (corrupted trainer state?)")
        v = state[key]
        if not isinstance(v, tp) or isinstance(v, bool) or (lo is not None and v < lo):
            want = f"an integer >= {lo}" if tp is int else f"a {getattr(tp, '__name__', tp)}"
            raise CheckpointError(f"{path}: key {key!r} must be {want}, got {v!r}")
    for i, s in enumerate(state["stages"]):
        if not isinstance(s, dict) or not isinstance(s.get("name"), str):
            raise CheckpointError(f"{path}: stages[{i}] must be an object with a 'name', got {s!r}")
    if not all(isinstance(n, str) for n in state["ever_trained"]):
        raise CheckpointError(f"{path}: key 'ever_trained' must be a list of parameter names")
    if state["stage_index"] >= len(state["stages"]):
        raise CheckpointError(
            f"{path}: stage_index {state['stage_index']} but only {len(state['stages'])} stages"
        )


def _stage_groups(model: nn.Module, stage: Any) -> list[list[tuple[int, ...]]]:
    """Parameter shapes per AdamW group (decay, no decay) for ``stage``, without changing
    ``requires_grad``."""
    params = [p for _, p in stage_parameters(model, stage)]
    decay = [tuple(p.shape) for p in params if p.ndim >= 2]
    no_decay = [tuple(p.shape) for p in params if p.ndim < 2]
    return [g for g in (decay, no_decay) if g]


def _check_optimizer(opt: Any, file: str, expected: list[list[tuple[int, ...]]], stage_name: str) -> None:
    if (
        not isinstance(opt, dict)
        or not isinstance(opt.get("param_groups"), list)
        or not isinstance(opt.get("state"), dict)
    ):
        raise CheckpointError(f"{file}: not an optimizer state (expected 'state' and 'param_groups')")
    saved = [len(g.get("params", ())) if isinstance(g, dict) else -1 for g in opt["param_groups"]]
    want = [len(g) for g in expected]
    if saved != want:
        raise CheckpointError(
            f"{file}: the optimizer state does not fit stage {stage_name!r} of this run: it holds {saved} "
            f"parameter(s) per group, stage {stage_name!r} trains {want} (decay, no-decay); was it written "
            f"by "
            f"another stage or model?"
        )
    shapes = [s for g in expected for s in g]
    ids = [i for g in opt["param_groups"] for i in g["params"]]
    for flat, pid in enumerate(ids):
        st = opt["state"].get(pid)
        avg = st.get("exp_avg") if isinstance(st, dict) else None
        if avg is not None and tuple(getattr(avg, "shape", ())) != shapes[flat]:
            raise CheckpointError(
                f"{file}: the optimizer state does not fit stage {stage_name!r}: parameter #{flat} has state "
                f"of "
                f"shape {tuple(avg.shape)}, the parameter has shape {shapes[flat]}"
            )


def _check_weights(model: nn.Module, file: str) -> None:
    from safetensors import safe_open

    if not os.path.isfile(file):
        raise CheckpointError(f"{file}: missing")
    own = model.state_dict()
    try:
        with safe_open(file, framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open, not a dict)
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{file}: unreadable or corrupt ({e})") from e
    shapes = rename_legacy_keys(shapes, where=file, warn=False)  # the load warns
    bad = [k for k, s in shapes.items() if k not in own or tuple(own[k].shape) != s]
    if bad:
        raise CheckpointError(f"{file}: does not fit this model (e.g. {bad[:3]})")


def validate_resume(
    state: dict[str, Any], path: str, *, model: nn.Module, stages: Sequence[Any], process_index: int = 0
) -> None:
    """Everything a resume will read, checked against this run before anything is loaded.

    Args:
        state: the checkpoint's trainer state (already through :func:`check_trainer_state`).
        path: the checkpoint folder.
        model: the model to resume (only read).
        stages: this run's stages (names already compared by ``check_compatible``).
        process_index: this process's rank (its RNG file).

    Raises:
        CheckpointError: naming the file and what does not match.
    """
    si, step = state["stage_index"], state["step_in_stage"]
    stage = stages[si]
    if state["stage_name"] != stage.name:
        raise CheckpointError(
            f"{path}: trainer_state.json says stage {state['stage_name']!r} at index {si}, this "
            f"run's stage {si} is {stage.name!r}"
        )
    if step > stage.steps:
        raise CheckpointError(
            f"{path}: step_in_stage {step} is past stage {stage.name!r}'s {stage.steps} steps"
        )
    sharded = check_sharded_weights(model, path)  # an FSDP checkpoint: DCP sharded/ instead of the two files
    if not sharded:
        _check_weights(model, os.path.join(path, "model.safetensors"))
    if 0 < step < stage.steps:  # resuming inside the stage: its optimizer and schedule are loaded
        file = os.path.join(path, "optimizer.pt")
        if not sharded:
            _check_optimizer(torch_load(file), file, _stage_groups(model, stage), stage.name)
        sched = torch_load(os.path.join(path, "scheduler.pt"))
        if not isinstance(sched, dict):
            raise CheckpointError(f"{os.path.join(path, 'scheduler.pt')}: not a scheduler state")
    rng = torch_load(os.path.join(path, f"rng-{process_index}.pt"))
    if not isinstance(rng, dict) or not {"python", "numpy", "torch"} <= set(rng):
        raise CheckpointError(f"{os.path.join(path, f'rng-{process_index}.pt')}: not an RNG state")

"""Checkpoint files of :class:`~mowe.training.trainer.Trainer`: atomic writes, RNG states, resume checks.

Layout (every ``save_every`` steps, and at the end)::

    output_dir/checkpoints/
      latest                 "step-N": replaced atomically (temp file + os.replace) after step-N is complete
      step-N/
        model.safetensors    weights that can change (trainable now or in any earlier stage) + weights with no
                             pretrained source; frozen towers with a hub/path source are rebuilt from it
        optimizer.pt         optimizer state (plain tensors/dicts: loadable with
        torch.load(weights_only=True)) scheduler.pt         LR scheduler state
        rng-<rank>.pt        python / numpy / torch (+ CUDA) RNG states of every process
        trainer_state.json   stage index, step in stage, epoch, batches consumed in the epoch, global step,
        ...

An FSDP2-sharded model (:func:`mowe.training.distributed.shard_model`) writes ``sharded/`` instead of
``model.safetensors`` and ``optimizer.pt``: a ``torch.distributed.checkpoint`` (DCP) folder holding ``model``
(the same entries) and ``optim`` (the optimizer state by parameter name), each process writing its own shards.
It is read back by a sharded model of the same process count; ``output_dir/final`` is always consolidated.

Everything is first written to ``checkpoints/.tmp-step-N/`` and renamed to ``step-N`` only when complete, so a
crash (even SIGKILL) never leaves a partial checkpoint as the latest.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mowe.errors import CheckpointError
from mowe.io import open_for_reading, writing_to
from mowe.state_dicts import alias_groups, check_aliases, legacy_key, rename_legacy_keys
from mowe.training.distributed import is_sharded
from mowe.training.resume import (
    SHARDED_DIR,
    check_sharded_weights,
    check_trainer_state,
    torch_load,
    validate_resume,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "check_compatible",
    "check_sharded_weights",
    "clean_stale_tmp",
    "find_checkpoint",
    "load_model_weights",
    "load_optimizer_state",
    "load_trainer_state",
    "prune_checkpoints",
    "rng_state",
    "set_rng_state",
    "torch_load",
    "validate_resume",
    "write_checkpoint",
]

CHECKPOINT_FORMAT = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")


def _save_torch(obj: Any, path: str) -> None:
    """torch.save + fsync (module-level so tests can make it fail midway)."""
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def _save_safetensors(tensors: dict[str, torch.Tensor], path: str) -> None:
    save_file(tensors, path, metadata={"format": "pt", "mowe": "checkpoint"})
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _write_text_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with writing_to(path), open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, path)


def _write(save: Any, obj: Any, path: str) -> None:
    """``save(obj, path)``; a full disk or a read-only folder raises an OSError naming ``path``."""
    with writing_to(path):
        save(obj, path)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rng_state() -> dict[str, Any]:
    """RNG states as plain tensors / ints, loadable with ``weights_only=True``."""
    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    out: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def find_checkpoint(spec: str | os.PathLike, output_dir: str | os.PathLike | None = None) -> str | None:
    """Resolve a resume spec to a checkpoint folder.

    Args:
        spec: ``"latest"`` (the ``latest`` pointer under ``output_dir/checkpoints``; None when there is none
            yet), a ``step-N`` checkpoint folder, or a ``checkpoints`` folder / run folder holding a
            ``latest`` pointer.
        output_dir: the run folder, for ``"latest"``.

    Raises:
        CheckpointError: an explicit path that is not a complete checkpoint.
    """
    spec = os.fspath(spec)
    if spec == "latest":
        if output_dir is None:
            raise CheckpointError("resume='latest' needs the run's output_dir")
        ck_root = os.path.join(os.fspath(output_dir), "checkpoints")
        pointer = os.path.join(ck_root, "latest")
        if not os.path.isfile(pointer):
            return None
        return find_checkpoint(ck_root)
    for root in (spec, os.path.join(spec, "checkpoints")):
        pointer = os.path.join(root, "latest")
        if os.path.isfile(pointer):
            with open_for_reading(pointer) as f:
                name = f.read().strip()
            path = os.path.join(root, name)
            if not os.path.isfile(os.path.join(path, "trainer_state.json")):
                raise CheckpointError(f"{pointer}: points to {name!r}, which is not a complete checkpoint")
            return path
    if not os.path.isfile(os.path.join(spec, "trainer_state.json")):
        raise CheckpointError(
            f"{spec}: not a checkpoint folder (no trainer_state.json) and no 'latest' pointer"
        )
    return spec


def load_trainer_state(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The ``trainer_state.json`` of a checkpoint folder, its keys and types checked (:mod:`.resume`)."""
    path = os.path.join(os.fspath(checkpoint), "trainer_state.json")
    try:
        with open_for_reading(path) as f:
            state = json.load(f)
    except (OSError, ValueError) as e:  # ValueError: JSON and UTF-8 errors
        raise CheckpointError(f"{path}: unreadable trainer state ({e})") from e
    check_trainer_state(state, path)
    return state


def write_checkpoint(
    *,
    accelerator: Any,
    checkpoint_dir: str,
    name: str,
    state: dict[str, Any],
    model: nn.Module,
    keys: Sequence[str],
    optimizer: Any,
    scheduler: Any,
    keep_last: int,
) -> str:
    """Write ``checkpoint_dir/name`` atomically (all processes call it), point ``latest`` at it, prune old
    ones.

    ``keys``: the model state-dict entries to save; ``state``: the ``trainer_state.json`` content. Returns the
    checkpoint folder.
    """
    acc = accelerator
    is_main = acc.is_main_process
    final = os.path.join(checkpoint_dir, name)
    tmp = os.path.join(checkpoint_dir, f".tmp-{name}")
    acc.wait_for_everyone()
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    acc.wait_for_everyone()
    try:
        _write(_save_torch, rng_state(), os.path.join(tmp, f"rng-{acc.process_index}.pt"))
        if is_sharded(model):  # every process writes its shards
            _save_sharded(model, keys, optimizer, os.path.join(tmp, SHARDED_DIR))
        if is_main:
            if not is_sharded(model):
                sd = model.state_dict()
                tensors = {k: sd[k].detach().to("cpu").contiguous().clone() for k in keys}
                _write(_save_safetensors, tensors, os.path.join(tmp, "model.safetensors"))
                _write(_save_torch, optimizer.state_dict(), os.path.join(tmp, "optimizer.pt"))
            _write(_save_torch, scheduler.state_dict(), os.path.join(tmp, "scheduler.pt"))
            # Written last: its presence marks a complete checkpoint.
            _write_text_atomic(os.path.join(tmp, "trainer_state.json"), json.dumps(state, indent=1))
    except BaseException:
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    acc.wait_for_everyone()
    if is_main:
        if os.path.isdir(final):  # a stale step-N from an abandoned branch of an earlier run
            shutil.rmtree(final)
        _fsync_dir(tmp)
        os.replace(tmp, final)
        _fsync_dir(checkpoint_dir)
        _write_text_atomic(os.path.join(checkpoint_dir, "latest"), name + "\n")
        prune_checkpoints(checkpoint_dir, keep_last=keep_last, keep_name=name)
    acc.wait_for_everyone()
    return final


def prune_checkpoints(checkpoint_dir: str, *, keep_last: int, keep_name: str) -> None:
    """Delete all but the ``keep_last`` newest ``step-N`` folders (never ``keep_name``)."""
    found = []
    for entry in os.listdir(checkpoint_dir):
        m = _STEP_DIR.match(entry)
        if m and os.path.isdir(os.path.join(checkpoint_dir, entry)):
            found.append((int(m.group(1)), entry))
    found.sort()
    for _, entry in found[:-keep_last]:
        if entry != keep_name:
            shutil.rmtree(os.path.join(checkpoint_dir, entry), ignore_errors=True)


def clean_stale_tmp(checkpoint_dir: str) -> None:
    """Remove ``.tmp-*`` folders a crashed run left behind."""
    if os.path.isdir(checkpoint_dir):
        for entry in os.listdir(checkpoint_dir):
            if entry.startswith(".tmp-"):
                shutil.rmtree(os.path.join(checkpoint_dir, entry), ignore_errors=True)


def _raw_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps the torch one


def _save_sharded(model: nn.Module, keys: Sequence[str], optimizer: Any, directory: str) -> None:
    """DCP save of the sharded model entries ``keys`` and the optimizer state (collective: every process)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    keep = set(keys)
    msd = {k: v for k, v in get_model_state_dict(model).items() if k in keep}
    dcp.save(
        {"model": msd, "optim": get_optimizer_state_dict(model, _raw_optimizer(optimizer))},
        checkpoint_id=directory,
    )


def _load_sharded(path: str, what: str, template: dict[str, Any]) -> None:
    """DCP-load ``template`` (``what``: ``"model"``, parameter name -> tensor, or ``"optim"``, with ``state``
    and ``param_groups`` keyed by parameter name) in place. A folder written before the weak pool's rename
    holds
    the old names (``pool.``): the template is loaded under those, with a ``DeprecationWarning``."""
    import torch.distributed.checkpoint as dcp

    directory = os.path.join(path, SHARDED_DIR)
    legacy = what == "model" and any(
        legacy_key(k) != k and f"model.{legacy_key(k)}" in _sharded_meta(path) for k in template
    )
    legacy = legacy or (
        what == "optim"
        and any(
            legacy_key(k) != k
            and f"optim.state.{legacy_key(k)}" in {m.rsplit(".", 1)[0] for m in _sharded_meta(path)}
            for k in template.get("state", {})
        )
    )
    names = (lambda d: {legacy_key(k): v for k, v in d.items()}) if legacy else (lambda d: d)
    inner = template
    if legacy and what == "model":
        inner = names(template)
    elif legacy:
        inner = {
            **template,
            "state": names(template["state"]),
            "param_groups": [
                {**g, "params": [legacy_key(n) for n in g["params"]]} for g in template["param_groups"]
            ],
        }
    try:
        dcp.load({what: inner}, checkpoint_id=directory)
    except Exception as e:  # DCP raises several types (CheckpointException, RuntimeError, KeyError)
        raise CheckpointError(f"{directory}: cannot load its {what!r} state ({type(e).__name__}: {e})") from e
    if legacy:  # loaded in place under the old names; hand the values back under the current ones
        rename_legacy_keys(inner if what == "model" else inner["state"], where=directory)
        if what == "model":
            template.update({k: inner[legacy_key(k)] for k in template})
        else:
            template["state"].update({k: inner["state"][legacy_key(k)] for k in template["state"]})


def _sharded_meta(path: str) -> set[str]:
    """Every entry name of a DCP ``sharded/`` folder."""
    from torch.distributed.checkpoint import FileSystemReader

    return set(FileSystemReader(os.path.join(path, SHARDED_DIR)).read_metadata().state_dict_metadata)


def load_optimizer_state(optimizer: Any, model: nn.Module, path: str) -> None:
    """Restore the optimizer of a checkpoint: ``optimizer.pt``, or the DCP ``sharded/`` folder of an FSDP
    run."""
    if not os.path.isdir(os.path.join(path, SHARDED_DIR)):
        optimizer.load_state_dict(torch_load(os.path.join(path, "optimizer.pt")))
        return
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    opt = _raw_optimizer(optimizer)
    osd = get_optimizer_state_dict(model, opt)  # allocates the state to load into
    _load_sharded(path, "optim", osd)
    set_optimizer_state_dict(model, opt, osd)


def load_model_weights(model: nn.Module, path: str) -> None:
    """Load a checkpoint's weights into ``model`` (non-strict: it holds only the saved parts).

    Reads ``model.safetensors``, or ``sharded/`` (DCP) into an FSDP2-sharded model.
    """
    if os.path.isdir(os.path.join(path, SHARDED_DIR)):
        if not is_sharded(model):
            raise CheckpointError(
                f"{path}: written by an FSDP run (sharded/); resume it under FSDP with the same "
                f"number of processes, or load its consolidated final/ folder"
            )
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            set_model_state_dict,
        )

        meta = _sharded_keys(path)
        msd = {k: v for k, v in get_model_state_dict(model).items() if k in meta or legacy_key(k) in meta}
        _load_sharded(path, "model", msd)
        set_model_state_dict(model, msd, options=StateDictOptions(strict=False))
        return
    file = os.path.join(path, "model.safetensors")
    if not os.path.isfile(file):
        raise CheckpointError(f"{file}: missing")
    try:
        sd = load_file(file, device="cpu")
    except Exception as e:
        raise CheckpointError(f"{file}: unreadable or corrupt ({e})") from e
    sd = rename_legacy_keys(sd, where=file)  # checkpoints from before the weak pool's rename
    own = model.state_dict()
    bad = [k for k in sd if k not in own or own[k].shape != sd[k].shape]
    if bad:
        raise CheckpointError(f"{file}: does not fit this model (e.g. {bad[:3]})")
    if is_sharded(model):  # a replicated checkpoint into a sharded model: each process keeps its shards
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, sd, options=StateDictOptions(full_state_dict=True, strict=False))
        return
    check_aliases(
        sd, alias_groups(model), where=file, current=own
    )  # one tied tensor saved under several keys
    model.load_state_dict(sd, strict=False)


def _sharded_keys(path: str) -> set[str]:
    """The model entries a DCP ``sharded/`` folder holds (read from its metadata)."""
    from torch.distributed.checkpoint import FileSystemReader

    meta = FileSystemReader(os.path.join(path, SHARDED_DIR)).read_metadata()
    return {k.split(".", 1)[1] for k in meta.state_dict_metadata if k.startswith("model.")}


def check_compatible(
    state: dict[str, Any],
    path: str,
    *,
    batch_size: int,
    num_processes: int,
    grad_accum: int,
    seed: int,
    grouped: bool,
    length_group_mult: int,
    stage_names: Sequence[str],
) -> None:
    """Raise :class:`CheckpointError` when a checkpoint's data position would not carry over to this run."""
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {state.get('format')!r}, expected {CHECKPOINT_FORMAT}"
        )
    g_old = state["batch_size"] * state["num_processes"]
    g_new = batch_size * num_processes
    if g_old != g_new or state["grad_accum"] != grad_accum or state["seed"] != seed:
        raise CheckpointError(
            f"{path}: written with global batch {g_old} (batch_size {state['batch_size']} x "
            f"{state['num_processes']} processes), grad_accum {state['grad_accum']}, seed {state['seed']}; "
            f"this run has {g_new} ({batch_size} x {num_processes}), "
            f"{grad_accum}, {seed}: the data position would not carry over"
        )
    # Checkpoints from before length grouping have no key: they were written with the plain order.
    old = (bool(state.get("group_by_length", False)), state.get("length_group_mult"))
    new = (grouped, length_group_mult if grouped else None)
    if old[0] != new[0] or (old[0] and old[1] != new[1]):

        def said(g: tuple[bool, Any]) -> str:
            return f"batches grouped by length (length_group_mult {g[1]})" if g[0] else "the plain order"

        raise CheckpointError(
            f"{path}: written with {said(old)}, this run would use {said(new)}: the data position would not "
            f"carry over; set train.group_by_length / train.length_group_mult as in that run (grouping also "
            f"needs a dataset with `lengths`)"
        )
    if [s["name"] for s in state["stages"]] != list(stage_names):
        raise CheckpointError(
            f"{path}: written for stages {[s['name'] for s in state['stages']]}, "
            f"this run has {list(stage_names)}"
        )
    if state["num_processes"] != num_processes:
        raise CheckpointError(
            f"{path}: written by {state['num_processes']} processes; resume with the same "
            f"number (RNG states are per process)"
        )

"""Saving and loading :class:`~mowe.model.MoWEAudioLLM` weights: ``config.json`` + ``model.safetensors``.

Trainable weights and weights with no pretrained source are written; frozen towers loaded from a hub id or a
folder are referenced by that source (their ``source`` / ``mowe_source`` attribute), not copied.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mowe.errors import CheckpointError, MoWEInputError
from mowe.io import check_readable_file, writing_to

if TYPE_CHECKING:
    from mowe.model import MoWEAudioLLM

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "keys_to_save", "load_weights", "save_model", "saved_files"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def _sources(model: MoWEAudioLLM) -> dict[str, str | None]:
    """Component prefix -> where its pretrained weights come from (None: nowhere, so they must be saved)."""
    out = {"strong_encoder.": getattr(model.strong_encoder, "source", None)}
    if model.pool is not None:
        for n, e in model.pool.encoders.items():
            out[f"pool.encoders.{n}."] = getattr(e, "source", None)
    out["llm."] = getattr(model.llm, "mowe_source", None)
    return out


def keys_to_save(model: MoWEAudioLLM, *, save_frozen: bool) -> list[str]:
    """State-dict keys :func:`save_model` writes: trainable ones, sourceless ones, and all with ``save_frozen``."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    sources = _sources(model)
    keys = []
    for k in model.state_dict():
        prefix = next((p for p in sources if k.startswith(p)), None)
        if prefix is None or sources[prefix] is None or save_frozen or k in trainable:
            keys.append(k)
    return keys


def save_model(model: MoWEAudioLLM, directory: str | os.PathLike, *, save_frozen: bool = False) -> None:
    """Write ``config.json`` and ``model.safetensors`` into ``directory`` atomically (a temp folder, renamed)."""
    if model.config is None:
        raise MoWEInputError("this model was built from modules without a MoWEConfig; build it with "
                             "MoWEAudioLLM.from_config(...) to save and reload it by path")
    directory = os.fspath(directory)
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    sd = model.state_dict()
    tensors = {k: sd[k].detach().to("cpu").contiguous().clone() for k in keys_to_save(model, save_frozen=save_frozen)}
    tmp = tempfile.mkdtemp(prefix=".mowe-save-", dir=parent)
    try:
        with writing_to(os.path.join(directory, WEIGHTS_NAME)):  # a full disk / read-only folder names the file
            save_file(tensors, os.path.join(tmp, WEIGHTS_NAME), metadata={"format": "pt", "mowe": "1"})
        with writing_to(os.path.join(directory, CONFIG_NAME)):
            model.config.to_json(os.path.join(tmp, CONFIG_NAME))
        if os.path.isdir(directory):
            old = directory + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def saved_files(directory: str | os.PathLike) -> tuple[str, str]:
    """``(config.json, model.safetensors)`` paths of a saved model folder; CheckpointError if one is missing."""
    directory = os.fspath(directory)
    paths = (os.path.join(directory, CONFIG_NAME), os.path.join(directory, WEIGHTS_NAME))
    for p in paths:
        if not os.path.exists(p):
            raise CheckpointError(f"{p}: missing; is {directory} a directory written by save_pretrained?")
    try:  # config.json is read through mowe.io (a FIFO with a writer works); the weights must be a file
        check_readable_file(paths[0])
    except OSError as e:
        raise CheckpointError(f"{paths[0]}: {e.strerror or e}") from e
    if not os.path.isfile(paths[1]):
        raise CheckpointError(f"{paths[1]}: not a regular file")
    return paths


def load_weights(model: MoWEAudioLLM, path: str, *, map_location: str | torch.device = "cpu") -> None:
    """Load a ``model.safetensors`` written by :func:`save_model`; every key must fit ``model``."""
    try:
        with safe_open(path, framework="pt", device=str(map_location)) as f:
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"{path}: unreadable or corrupt safetensors file ({e})") from e
    own = model.state_dict()
    unexpected = [k for k in sd if k not in own]
    mismatched = [k for k in sd if k in own and own[k].shape != sd[k].shape]
    if unexpected or mismatched:
        raise CheckpointError(f"{path}: does not fit this model (unexpected keys {unexpected[:3]}, "
                              f"shape mismatches {mismatched[:3]})")
    # Frozen towers with a source may be absent (referenced, not copied); any other missing key is damage.
    missing = [k for k in keys_to_save(model, save_frozen=False) if k not in sd]
    if missing:
        raise CheckpointError(f"{path}: missing weights {missing[:3]} ({len(missing)} in all)")
    model.load_state_dict(sd, strict=False)

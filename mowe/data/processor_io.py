"""Saving and loading :class:`~mowe.data.processor.MoWEProcessor`: a folder or hub id, ``push_to_hub``.

The folder holds the tokenizer's files and ``processor_config.json`` (``"processor_class": "MoWEProcessor"``,
which is how ``AutoProcessor`` finds the class once ``import mowe`` registered it). It may be the model's own
folder (``model.save_pretrained(dir, processor=proc)``).
"""

from __future__ import annotations

import json
import os
from typing import Any

from mowe.config import from_dict
from mowe.data.processor_options import PROCESSOR_CONFIG_NAME, ProcessorOptions
from mowe.errors import ConfigError
from mowe.hub import push_folder, resolve_model_dir
from mowe.io import open_for_reading

__all__ = ["load_processor", "save_processor"]

# Keywords AutoProcessor.from_pretrained passes along that a MoWEProcessor does not need.
_AUTO_KWARGS = ("trust_remote_code", "_from_auto", "proxies", "return_unused_kwargs", "use_fast")


def save_processor(
    processor: Any,
    directory: str | os.PathLike,
    *,
    push_to_hub: bool = False,
    repo_id: str | None = None,
    **push_kwargs: Any,
) -> None:
    """Write the tokenizer and ``processor_config.json``; with ``push_to_hub``, upload the folder to
    ``repo_id`` (default: the folder's name; ``push_kwargs`` as :func:`mowe.hub.push_folder`)."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    processor.tokenizer.save_pretrained(directory)
    with open(os.path.join(directory, PROCESSOR_CONFIG_NAME), "w") as f:
        json.dump(processor.to_dict(), f, indent=2)
        f.write("\n")
    if push_to_hub:
        push_folder(directory, repo_id or os.path.basename(os.path.abspath(directory)), **push_kwargs)


def load_processor(
    cls: type,
    name_or_path: str | os.PathLike,
    *,
    tokenizer: Any = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    subfolder: str | None = None,
    **kwargs: Any,
) -> Any:
    """``cls.from_pretrained``: see :meth:`MoWEProcessor.from_pretrained
    <mowe.data.processor.MoWEProcessor>`."""

    unknown = sorted(k for k in kwargs if k not in _AUTO_KWARGS)
    if unknown:
        raise ConfigError(f"MoWEProcessor.from_pretrained: unexpected keyword(s) {unknown}")
    directory = os.fspath(name_or_path)
    local = os.path.isdir(directory) or os.path.isabs(directory) or directory.startswith((".", "~"))
    if not local or subfolder:
        directory = resolve_model_dir(
            directory,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            subfolder=subfolder,
        )
    path = os.path.join(directory, PROCESSOR_CONFIG_NAME)
    try:
        with open_for_reading(path, encoding="utf-8") as f:  # mowe.io: a FIFO or device cannot hang the load
            data = json.load(f)
    except FileNotFoundError as e:
        raise ConfigError(
            f"{path}: missing; is {directory} a folder written by MoWEProcessor.save_pretrained?"
        ) from e
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable or not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    data = dict(data)
    cls_name = data.pop("processor_class", cls.__name__)
    if cls_name != cls.__name__:
        raise ConfigError(f"{path}: processor_class is {cls_name!r}, expected {cls.__name__!r}")
    try:  # the one definition of the options: their types, values and the defaults of options not in the file
        options = from_dict(ProcessorOptions, data, where="processor")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(directory)
    try:
        return cls(tokenizer, options=options)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e

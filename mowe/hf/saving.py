"""Saving and loading :class:`~mowe.model.MoWEAudioLLM`: ``config.json`` + ``model.safetensors`` (+
``llm_adapter/``, ``generation_config.json`` and the processor's files).

Trainable weights and weights with no pretrained source are written; frozen towers loaded from a hub id or a
folder are referenced by that source (their ``source`` / ``mowe_source`` attribute), not copied. The LLM's
LoRA goes to ``llm_adapter/`` as a PEFT adapter (:mod:`mowe.hf.adapter`); folders from before that, with the
LoRA as
``llm.`` keys in ``model.safetensors``, still load. ``config.json`` carries ``model_type: "mowe"`` so that the
transformers Auto classes recognise the folder (:mod:`mowe.hf`); a folder may also be a hub id
(:func:`load_model`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mowe.errors import CheckpointError, MoWEInputError
from mowe.hf.adapter import ADAPTER_DIR, adapter_keys, has_lora, load_adapter, save_adapter
from mowe.hf.config import mowe_config_json, read_mowe_config
from mowe.hf.model_card import read_card_info, write_model_card
from mowe.hub import push_folder, resolve_model_dir
from mowe.io import check_readable_file, writing_to
from mowe.state_dicts import alias_groups, check_aliases, rename_legacy_keys

if TYPE_CHECKING:
    from mowe.model import MoWEAudioLLM

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "keys_to_save",
    "load_model",
    "load_saved_weights",
    "load_weights",
    "push_model",
    "save_model",
    "saved_files",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def _sources(model: MoWEAudioLLM) -> dict[str, str | None]:
    """Component prefix -> where its pretrained weights come from (None: nowhere, so they must be saved)."""
    out = {"strong_encoder.": getattr(model.strong_encoder, "source", None)}
    if model.weak_encoders is not None:
        for n, e in model.weak_encoders.encoders.items():
            out[f"weak_encoders.encoders.{n}."] = getattr(e, "source", None)
    out["llm."] = getattr(model.llm, "mowe_source", None)
    return out


def keys_to_save(model: MoWEAudioLLM, *, save_frozen: bool) -> list[str]:
    """State-dict keys :func:`save_model` writes: trainable ones, sourceless ones, and all with
    ``save_frozen``."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    sources = _sources(model)
    keys = []
    for k in model.state_dict():
        prefix = next((p for p in sources if k.startswith(p)), None)
        if prefix is None or sources[prefix] is None or save_frozen or k in trainable:
            keys.append(k)
    return keys


def save_model(
    model: MoWEAudioLLM,
    directory: str | os.PathLike,
    *,
    save_frozen: bool = False,
    processor: Any = None,
    state_dict: dict[str, torch.Tensor] | None = None,
    card_name: str | None = None,
) -> None:
    """Write ``config.json``, ``model.safetensors``, ``llm_adapter/`` (LoRA), ``generation_config.json``, the
    model card (``README.md`` + ``mowe_card.json``, :mod:`mowe.hf.model_card`, named ``card_name`` or after
    the folder) and the ``processor``'s files (when given) into ``directory`` atomically (a temp folder,
    renamed).

    ``state_dict``: the weights to write instead of ``model.state_dict()`` (e.g. an FSDP model's consolidated
    one, :func:`mowe.training.distributed.full_state_dict`)."""

    if model.config is None:
        raise MoWEInputError(
            "this model was built from modules without a MoWEConfig; build it with "
            "MoWEAudioLLM.from_config(...) to save and reload it by path"
        )
    directory = os.fspath(directory)
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    sd = model.state_dict() if state_dict is None else state_dict
    in_adapter = set(adapter_keys(model))
    tensors = {
        k: sd[k].detach().to("cpu").contiguous().clone()
        for k in keys_to_save(model, save_frozen=save_frozen)
        if k not in in_adapter
    }
    tmp = tempfile.mkdtemp(prefix=".mowe-save-", dir=parent)
    try:
        with writing_to(
            os.path.join(directory, WEIGHTS_NAME)
        ):  # a full disk / read-only folder names the file
            save_file(tensors, os.path.join(tmp, WEIGHTS_NAME), metadata={"format": "pt", "mowe": "1"})
        with writing_to(os.path.join(directory, CONFIG_NAME)), open(os.path.join(tmp, CONFIG_NAME), "w") as f:
            f.write(mowe_config_json(model.config))
        with writing_to(directory):
            save_adapter(
                model,
                tmp,
                state_dict=None
                if state_dict is None
                else {k[4:]: v for k, v in sd.items() if k.startswith("llm.")},
            )
            if getattr(model, "generation_config", None) is not None:
                model.generation_config.save_pretrained(tmp)
            if processor is not None:
                processor.save_pretrained(tmp)
            name = card_name or os.path.basename(os.path.normpath(os.path.abspath(directory)))
            write_model_card(tmp, model.config, getattr(model, "card_info", None), model_name=name)
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
    """``(config.json, model.safetensors)`` paths of a saved model folder; CheckpointError if one is
    missing."""
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


def load_weights(
    model: MoWEAudioLLM,
    path: str | os.PathLike,
    *,
    map_location: str | torch.device = "cpu",
    loaded: Collection[str] = (),
) -> None:
    """Load a ``model.safetensors`` written by :func:`save_model` (or a checkpoint's, with the LoRA inline);
    every key must fit ``model``.

    ``loaded``: keys already loaded from elsewhere (the LoRA from ``llm_adapter/``), so not needed in this
    file. Keys the file repeats for one tied tensor must agree (:func:`mowe.state_dicts.check_aliases`).
    """
    path = os.fspath(path)
    try:
        with safe_open(path, framework="pt", device=str(map_location)) as f:
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"{path}: unreadable or corrupt safetensors file ({e})") from e
    sd = rename_legacy_keys(sd, where=path)  # files from before the rename pool. -> weak_encoders.
    own = model.state_dict()
    unexpected = [k for k in sd if k not in own]
    mismatched = [
        f"{k} {tuple(sd[k].shape)} != {tuple(own[k].shape)}"
        for k in sd
        if k in own and own[k].shape != sd[k].shape
    ]
    if unexpected or mismatched:
        raise CheckpointError(
            f"{path}: does not fit this model (unexpected keys {unexpected[:3]}, "
            f"shape mismatches (file != model) {mismatched[:3]})"
        )
    # Frozen towers with a source may be absent (referenced, not copied); any other missing key is damage.
    missing = [k for k in keys_to_save(model, save_frozen=False) if k not in sd and k not in loaded]
    if missing:
        hint = ""
        if any(".lora_" in k for k in missing):
            hint = (
                f"; the LoRA weights are saved in {ADAPTER_DIR}/ beside this file, which is not there (copy "
                f"the "
                f"whole folder written by save_pretrained)"
            )
        raise CheckpointError(f"{path}: missing weights {missing[:3]} ({len(missing)} in all){hint}")
    check_aliases(sd, alias_groups(model), where=path, current=own)
    model.load_state_dict(sd, strict=False)


def load_saved_weights(
    model: MoWEAudioLLM, path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> None:
    """Everything :func:`save_model` wrote into ``model``: ``llm_adapter/`` (the LoRA, when the folder has
    one) and
    then ``model.safetensors``. ``path``: the model folder or its ``model.safetensors``; a file without an
    ``llm_adapter/`` beside it (a checkpoint's, LoRA inline, or a folder from before adapters) loads as it is.

    Raises:
        CheckpointError: a missing or damaged file, an adapter for a model without LoRA (or one that does not
            fit its LLM), or weights that do not fit (names the file and the keys).
    """
    path = os.fspath(path)
    file = os.path.join(path, WEIGHTS_NAME) if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise CheckpointError(
            f"{file}: missing; give a folder written by save_pretrained or its {WEIGHTS_NAME}"
        )
    adapter = os.path.join(os.path.dirname(os.path.abspath(file)), ADAPTER_DIR)
    loaded: list[str] = []
    if os.path.isfile(os.path.join(adapter, "adapter_config.json")):
        load_adapter(model, adapter)
        loaded = adapter_keys(model)
    load_weights(model, file, map_location=map_location, loaded=loaded)


_AUTO_KWARGS = ("trust_remote_code", "adapter_kwargs", "_from_auto", "proxies", "use_safetensors")


def load_model(
    cls: type,
    name_or_path: str | os.PathLike,
    *,
    encoders: Mapping[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
    config: Any = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    force_download: bool = False,
    subfolder: str | None = None,
    allow_components: Sequence[str] | None = None,
    **kwargs: Any,
) -> MoWEAudioLLM:
    """:meth:`MoWEAudioLLM.from_pretrained`: a folder or hub id -> the model, weights, adapter, generation
    config, with the saved inference LoRA scale applied.

    ``config``: a :class:`~mowe.config.MoWEConfig` or :class:`~mowe.hf.config.MoWEPretrainedConfig` to use
    instead of the folder's ``config.json`` (``AutoModel.from_pretrained`` passes one). The keywords
    ``AutoModel`` adds (``trust_remote_code``, ``adapter_kwargs``, ``proxies``, ...) are accepted and not
    needed.

    Raises:
        CheckpointError: no such folder / repository, a missing or damaged file (naming it).
        MoWEInputError: a keyword this loader does not take.
    """

    unknown = sorted(k for k in kwargs if k not in _AUTO_KWARGS)
    if unknown:
        raise MoWEInputError(f"from_pretrained: unexpected keyword(s) {unknown}")
    directory = resolve_model_dir(
        name_or_path,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        token=token,
        force_download=force_download,
        subfolder=subfolder,
    )
    cfg_path, w_path = saved_files(directory)
    if config is None:
        config = read_mowe_config(cfg_path)
    elif hasattr(config, "to_mowe_config"):
        config = config.to_mowe_config()
    model = cls.from_config(config, encoders=encoders, allow_components=list(allow_components or ()))
    load_saved_weights(model, w_path, map_location=map_location)
    if os.path.isfile(os.path.join(directory, "generation_config.json")):
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(directory)
    model.card_info = read_card_info(directory)
    scale = config.inference.lora_scale
    if scale != 1.0 and has_lora(model.llm):
        model.set_lora_scale(scale)
    return model


def push_model(
    model: MoWEAudioLLM,
    repo_id: str,
    *,
    folder: str | os.PathLike | None = None,
    save_frozen: bool = False,
    processor: Any = None,
    **push_kwargs: Any,
) -> Any:
    """Upload a saved model folder (``folder``; None: saved to a temporary one first) to the hub repo
    ``repo_id``.

    ``push_kwargs``: :func:`mowe.hub.push_folder`'s (``commit_message``, ``private``, ``token``, ``revision``,
    ``create_pr``). Returns huggingface_hub's ``CommitInfo``.
    """
    if folder is not None:
        return push_folder(folder, repo_id, **push_kwargs)
    with tempfile.TemporaryDirectory(prefix="mowe-push-") as tmp:
        target = os.path.join(tmp, "model")
        save_model(model, target, save_frozen=save_frozen, processor=processor, card_name=repo_id)
        return push_folder(target, repo_id, **push_kwargs)

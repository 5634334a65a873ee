"""The LLM's LoRA as a PEFT adapter folder (``llm_adapter/``), merging it in place, and exporting the LLM.

``llm_adapter/`` (``adapter_config.json`` + ``adapter_model.safetensors``) is what ``peft`` itself writes and
reads: ``PeftModel.from_pretrained(base_llm, "<model>/llm_adapter")`` puts the trained LoRA on a base LLM
without mowe. ``adapter_config.json`` names the base (``base_model_name_or_path``): the LLM's hub id or
folder, or empty for a random-weight LLM, whose base weights ``export_llm(dir, merged=False)`` writes as a
plain transformers folder.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from typing import TYPE_CHECKING, Any

from torch import nn

from mowe.errors import CheckpointError, MoWEInputError

if TYPE_CHECKING:
    from mowe.model import MoWEAudioLLM

__all__ = [
    "ADAPTER_DIR",
    "adapter_keys",
    "export_llm",
    "has_lora",
    "load_adapter",
    "merge_lora",
    "save_adapter",
    "set_lora_scale",
]

ADAPTER_DIR = "llm_adapter"


def has_lora(llm: Any) -> bool:
    """Whether ``llm`` is a peft model carrying LoRA adapters."""
    return hasattr(llm, "peft_config") and hasattr(llm, "merge_and_unload")


def adapter_keys(model: MoWEAudioLLM) -> list[str]:
    """State-dict keys of ``model`` that live in ``llm_adapter/`` rather than ``model.safetensors``."""
    if not has_lora(model.llm):
        return []
    return [k for k in model.state_dict() if k.startswith("llm.") and ".lora_" in k]


def save_adapter(model: MoWEAudioLLM, directory: str, *, state_dict: dict | None = None) -> str | None:
    """Write ``directory/llm_adapter`` with peft's own ``save_pretrained``; returns the folder (None: no
    LoRA).

    ``state_dict``: the LLM's weights (keys without ``llm.``) to take the adapter from instead of the live
    module, e.g. an FSDP-sharded model's consolidated ones."""
    if not has_lora(model.llm):
        return None
    folder = os.path.join(directory, ADAPTER_DIR)
    model.llm.save_pretrained(
        folder, save_embedding_layers=False, **({} if state_dict is None else {"state_dict": state_dict})
    )
    return folder


def load_adapter(model: MoWEAudioLLM, folder: str) -> None:
    """Load ``llm_adapter/`` weights into ``model.llm`` (built with the same LoRA config), exactly.

    Raises:
        CheckpointError: the model has no LoRA, or the adapter does not fit it (names the folder).
    """
    if not has_lora(model.llm):
        raise CheckpointError(
            f"{folder}: an LLM adapter was saved but this model's LLM has no LoRA (llm.train is not 'lora')"
        )
    from peft.utils import get_peft_model_state_dict, load_peft_weights, set_peft_model_state_dict

    try:
        weights = load_peft_weights(folder, device="cpu")
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{folder}: unreadable adapter weights ({type(e).__name__}: {e})") from e
    own = get_peft_model_state_dict(model.llm)  # the adapter's keys, as saved
    for key, value in weights.items():
        if key in own and tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(
                f"{folder}: the adapter does not fit this LLM: {key} is {tuple(value.shape)} in the adapter "
                f"but "
                f"{tuple(own[key].shape)} in the model (another LoRA rank, target or LLM width)"
            )
    try:
        result = set_peft_model_state_dict(model.llm, weights)
    except Exception as e:  # what the shape check above cannot see
        raise CheckpointError(f"{folder}: an adapter that does not fit this LLM ({e})") from e
    if result.unexpected_keys:
        raise CheckpointError(
            f"{folder}: adapter weights that fit no LoRA module: {result.unexpected_keys[:3]}"
        )


def merge_lora(model: MoWEAudioLLM) -> MoWEAudioLLM:
    """Merge the LoRA into the LLM's weights in place (peft ``merge_and_unload``); returns ``model``.

    The merged LLM is a plain transformers model; its weights no longer equal any source, so
    ``save_pretrained`` then writes them in full, and the config records ``llm.train="frozen"`` (and
    ``inference.lora_scale=1.0``: the scale in use when merging is baked in) so that the saved folder rebuilds
    without LoRA.
    """
    if not has_lora(model.llm):
        raise MoWEInputError("merge_lora: this model's LLM has no LoRA adapters (llm.train is not 'lora')")
    merged = model.llm.merge_and_unload()
    merged.mowe_source = None
    merged.mowe_merged = True
    model.llm = merged
    if model.config is not None:
        cfg = model.config
        model.config = cfg.replace(
            llm=dataclasses.replace(cfg.llm, train="frozen"),
            inference=dataclasses.replace(cfg.inference, lora_scale=1.0),
        )
    return model


def export_llm(
    model: MoWEAudioLLM, directory: str | os.PathLike, *, tokenizer: Any = None, merged: bool = True
) -> str:
    """Write the LLM as a plain transformers folder (``AutoModelForCausalLM.from_pretrained`` loads it, no
    mowe).

    Args:
        directory: the folder to write.
        tokenizer: saved alongside when given.
        merged: True: the LLM with its LoRA merged in (the model itself is not changed: a copy is merged
            unless :func:`merge_lora` already ran); False: the base LLM without the LoRA (what
            ``llm_adapter/`` goes on).

    Raises:
        MoWEInputError: ``merged=False`` after :func:`merge_lora` (the base weights are gone).
    """
    directory = os.fspath(directory)
    llm = model.llm
    if has_lora(llm):
        llm = copy.deepcopy(llm)
        llm = llm.merge_and_unload() if merged else llm.unload()
    elif not merged and getattr(llm, "mowe_merged", False):
        raise MoWEInputError(
            "export_llm(merged=False): the LoRA was merged into the LLM already; the base weights "
            "are gone (export before merge_lora(), or reload the saved model)"
        )
    llm.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory


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

"""mowe the transformers way: a ``PreTrainedConfig`` (model_type ``"mowe"``), Auto-class registration, hub ids,
``push_to_hub``, the LLM's LoRA as a PEFT adapter folder and LLM export.

``import mowe`` arranges that :class:`~transformers.AutoConfig`, :class:`~transformers.AutoModel` and
:class:`~transformers.AutoProcessor` know ``"mowe"`` (no ``trust_remote_code``) without importing transformers itself
(:mod:`mowe.hf.lazy`): the registration runs when transformers' auto modules are first imported.

Nothing here imports transformers at import time; the submodules do.
"""

from __future__ import annotations

import importlib

__all__ = ["ADAPTER_DIR", "MoWEPretrainedConfig", "export_llm", "merge_lora", "push_folder", "read_mowe_config",
           "register_auto_classes", "resolve_model_dir"]

_LAZY = {
    "MoWEPretrainedConfig": "mowe.hf.config",
    "read_mowe_config": "mowe.hf.config",
    "resolve_model_dir": "mowe.hf.hub",
    "push_folder": "mowe.hf.hub",
    "ADAPTER_DIR": "mowe.hf.adapter",
    "export_llm": "mowe.hf.adapter",
    "merge_lora": "mowe.hf.adapter",
    "register_auto_classes": "mowe.hf.lazy",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mowe.hf' has no attribute {name!r}")

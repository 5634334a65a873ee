"""mowe the transformers way: a ``PreTrainedConfig`` (model_type ``"mowe"``), Auto-class registration, hub
ids, ``push_to_hub``, the LLM's LoRA as a PEFT adapter folder and LLM export.

Importing :mod:`mowe.model` registers ``"mowe"`` with :class:`~transformers.AutoConfig`,
:class:`~transformers.AutoModel` and :class:`~transformers.AutoProcessor` through their public ``register``
API (:mod:`mowe.hf.auto`); no ``trust_remote_code`` is needed.

Nothing here imports transformers at import time; the submodules do.
"""

from __future__ import annotations

import importlib

__all__ = [
    "ADAPTER_DIR",
    "MoWEPretrainedConfig",
    "export_llm",
    "merge_lora",
    "read_mowe_config",
    "register_auto_classes",
]

_LAZY = {
    "MoWEPretrainedConfig": "mowe.hf.config",
    "read_mowe_config": "mowe.hf.config",
    "ADAPTER_DIR": "mowe.hf.adapter",
    "export_llm": "mowe.hf.adapter",
    "merge_lora": "mowe.hf.adapter",
    "register_auto_classes": "mowe.hf.auto",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mowe.hf' has no attribute {name!r}")

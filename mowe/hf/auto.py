"""Registration of ``"mowe"`` with transformers' Auto classes, through their public ``register`` API.

:mod:`mowe.model` calls :func:`register_auto_classes` with :class:`~mowe.model.MoWEAudioLLM` when it is
imported (``from mowe import MoWEAudioLLM`` does it), so that ``AutoConfig``, ``AutoModel`` and
``AutoProcessor`` load mowe folders and hub repositories without ``trust_remote_code``. ``import mowe`` alone
stays cheap and registers nothing.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoProcessor

from mowe.data.processor import MoWEProcessor
from mowe.hf.config import MoWEPretrainedConfig

__all__ = ["register_auto_classes"]


def register_auto_classes(model_class: type) -> None:
    """Map model type ``"mowe"`` to :class:`MoWEPretrainedConfig`, ``model_class`` and :class:`MoWEProcessor`
    (idempotent)."""
    AutoConfig.register("mowe", MoWEPretrainedConfig, exist_ok=True)
    AutoModel.register(MoWEPretrainedConfig, model_class, exist_ok=True)
    AutoProcessor.register(MoWEPretrainedConfig, MoWEProcessor, exist_ok=True)

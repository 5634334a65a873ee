"""mowe: audio LLMs from a mixture of weak encoders.

Public API (imported lazily so that ``import mowe`` stays cheap)::

    from mowe import MoWEAudioLLM, MoWEConfig
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "MoWEAudioLLM": "mowe.model",
    "MoWEOutput": "mowe.model",
    "MoWEConfig": "mowe.config",
    "MoWEPretrainedConfig": "mowe.hf.config",
    "InferenceConfig": "mowe.config",
    "EncoderConfig": "mowe.config",
    "RouterConfig": "mowe.config",
    "ConnectorConfig": "mowe.config",
    "LLMConfig": "mowe.config",
    "LoRAConfig": "mowe.config",
    "merge_audio_features": "mowe.merge",
    "apply_training_mode": "mowe.builders",
    "MoWEInputError": "mowe.errors",
    "AudioLoadError": "mowe.errors",
    "ManifestError": "mowe.errors",
    "ConfigError": "mowe.errors",
    "CheckpointError": "mowe.errors",
    "MoWEProcessor": "mowe.data.processor",
    "ManifestDataset": "mowe.data.manifest",
    "load_audio": "mowe.data.audio",
    "Trainer": "mowe.training.trainer",
    "TrainConfig": "mowe.training.config",
    "evaluate_model": "mowe.evaluation.evaluate",
}

__all__ = [*sorted(_LAZY), "__version__"]  # noqa: PLE0604, PLE0605 (built from _LAZY, all str)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mowe' has no attribute {name!r}")

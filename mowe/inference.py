"""Loading a saved model for inference, as ``mowe infer``, ``mowe eval`` and ``mowe serve`` do, and placing it on a
device in a dtype."""

from __future__ import annotations

import os
from collections.abc import Sequence

from mowe.data.processor import MoWEProcessor
from mowe.errors import CheckpointError
from mowe.hub import looks_like_path
from mowe.model import MoWEAudioLLM
from mowe.tensors import DTYPES

__all__ = ["find_model_dir", "load_for_inference", "place_model"]


def find_model_dir(path: str) -> str:
    """The saved model in ``path`` or ``path/final``; a hub id (``org/name``, no such local folder) as given."""
    for cand in (os.path.join(path, "final"), path):
        if os.path.isfile(os.path.join(cand, "config.json")) and os.path.isfile(os.path.join(cand,
                                                                                             "model.safetensors")):
            return cand
    if not os.path.exists(path) and not looks_like_path(path) and path.count("/") == 1:
        return path  # from_pretrained resolves hub ids (and names what it cannot find)
    raise CheckpointError(f"{path}: no saved model (config.json + model.safetensors) here or in {path}/final")


def load_for_inference(path: str | os.PathLike, *, device: str = "cpu", dtype: str | None = None,
                       processor: str | os.PathLike | None = None, allow_components: Sequence[str] | None = None):
    """``(model, processor)`` as ``mowe infer``, ``mowe eval`` and ``mowe serve`` load them: the model of a ``mowe
    train`` output folder (or its ``final/``, or any folder ``save_pretrained`` wrote) through
    :meth:`MoWEAudioLLM.from_pretrained` (weights, ``llm_adapter/``, generation config), in eval mode on ``device``
    (:func:`place_model` casts to ``dtype``), and the processor saved beside it (or in ``processor``).

    Raises:
        CheckpointError / ConfigError: no saved model or processor there (naming the file).
    """
    model_dir = find_model_dir(os.fspath(path))
    model = MoWEAudioLLM.from_pretrained(model_dir, allow_components=list(allow_components or ()))
    model = place_model(model, device=device, dtype=dtype).eval()
    return model, MoWEProcessor.from_pretrained(processor or model_dir)


def place_model(model, *, device: str = "cpu", dtype: str | None = None):
    """``--device`` / ``--dtype``: move ``model`` to ``device``; cast its LLM and connector to ``dtype`` (the
    encoders keep the precision their config gives them: ``EncoderConfig.dtype``). Returns the model."""
    model = model.to(device)
    if dtype is not None and dtype != "float32":
        for part in (model.llm, model.connector):
            part.to(DTYPES[dtype])
    return model

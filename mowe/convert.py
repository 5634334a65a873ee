"""Converting Whisper checkpoints from the formats they ship in (``mowe convert whisper``).

The seed systems' released checkpoints convert in their own packages (``mowe.salmonn.from_salmonn``,
``mowe.ltu_as.from_ltu_as`` and their inverses; listed in :data:`mowe.presets.CONVERTERS`).
``convert_whisper(src, dst)`` turns a CTranslate2 Whisper folder (faster-whisper's format) or an
openai-whisper ``.pt`` file into a folder that
``transformers.WhisperForConditionalGeneration.from_pretrained(dst)`` loads
without mowe: weights (encoder and decoder), ``config.json``, ``generation_config.json`` and, when the source
ships a ``tokenizer.json``, a ``WhisperProcessor`` (feature extractor + tokenizer).
"""

from __future__ import annotations

import os

import torch

from mowe.encoders.whisper_formats import is_ctranslate2_dir, is_openai_whisper_file, load_whisper_checkpoint
from mowe.errors import CheckpointError
from mowe.hub import naming_refused_pickles

__all__ = ["convert_whisper"]


def convert_whisper(
    src: str | os.PathLike, dst: str | os.PathLike, *, dtype: torch.dtype = torch.float32
) -> str:
    """Write a transformers-format Whisper to ``dst``.

    Args:
        src: a CTranslate2 Whisper folder, an openai-whisper ``.pt`` file, or a transformers folder / hub id
            (re-saved as it is, e.g. to change its dtype).
        dst: output folder (created; existing files of the same names are overwritten).
        dtype: parameter dtype of the written weights.

    Returns:
        ``dst`` as a string.

    Raises:
        CheckpointError: the source cannot be read, or its tensors do not fill the model (names them).
    """
    from transformers import (
        GenerationConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    src, dst = os.fspath(src), os.fspath(dst)
    if not os.path.exists(src) and (os.path.isabs(src) or src.startswith(".")):
        raise CheckpointError(f"{src}: no such file or folder")
    processor = None
    if is_ctranslate2_dir(src) or is_openai_whisper_file(src):
        ckpt = load_whisper_checkpoint(src, dtype=dtype)
        model = WhisperForConditionalGeneration(ckpt.config).to(dtype)
        missing, unexpected = model.load_state_dict(ckpt.state_dict, strict=False)
        missing = [k for k in missing if k != "proj_out.weight"]  # tied to the token embedding
        if missing or unexpected:
            raise CheckpointError(
                f"{src}: weights do not fill a Whisper of this config "
                f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        model.generation_config = GenerationConfig(**ckpt.generation)
        if ckpt.tokenizer_file:
            tok = WhisperTokenizer(tokenizer_file=ckpt.tokenizer_file)
            fe = WhisperFeatureExtractor(feature_size=ckpt.config.num_mel_bins)
            processor = WhisperProcessor(feature_extractor=fe, tokenizer=tok)
    else:
        try:
            with naming_refused_pickles(src, what="Whisper"):
                model = WhisperForConditionalGeneration.from_pretrained(src, dtype=dtype)
        except OSError as e:
            raise CheckpointError(
                f"{src}: not a CTranslate2 folder, an openai-whisper .pt file or a transformers Whisper ({e})"
            ) from e
        try:
            processor = WhisperProcessor.from_pretrained(src)
        except (OSError, ValueError, TypeError):
            processor = None  # weights-only folders are fine: the model still converts
    os.makedirs(dst, exist_ok=True)
    model.save_pretrained(dst)
    if processor is not None:
        processor.save_pretrained(dst)
    return dst

"""The audio placeholder of a converted seed model (SALMONN, LTU-AS), shared by both converters.

The official systems put the audio embeddings into the prompt by position and have no placeholder token; mowe
marks the place with one. It must be a token no text produces (:mod:`mowe.data.tokenizer`): the converters add
``<|audio|>`` to the LLM's own tokenizer as a special token (an id past its vocabulary) and save that
tokenizer with the model, so ``mowe infer`` and ``MoWEProcessor.from_pretrained`` use it. The LLM gets no row
for it (mowe never looks the placeholder up), so its logits keep the official vocabulary. An LLM folder
without a tokenizer gets the first id past its vocabulary, which no tokenizer of that LLM produces either.
"""

from __future__ import annotations

import os
from typing import Any

from mowe.data.processor import MoWEProcessor
from mowe.data.tokenizer import AUDIO_TOKEN, add_audio_token, check_audio_placeholder
from mowe.hub import resolve_file

__all__ = ["load_llm_tokenizer", "pick_audio_token_id", "save_converted", "seed_vocabulary"]

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def load_llm_tokenizer(llm: str | os.PathLike, tokenizer: Any = None) -> Any:
    """``tokenizer`` (a tokenizer, or a folder / hub id to load one from), else the tokenizer in the LLM
    folder or hub repository ``llm``; None when ``llm`` holds none."""
    from transformers import AutoTokenizer

    if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    source = os.fspath(tokenizer if tokenizer is not None else llm)
    if tokenizer is None and not any(resolve_file(source, f) for f in _TOKENIZER_FILES):
        return None
    return AutoTokenizer.from_pretrained(source)


def pick_audio_token_id(tokenizer: Any, audio_token_id: int | None, *, vocab_rows: int) -> int:
    """The placeholder id of a converted model: ``audio_token_id`` when given (checked against ``tokenizer``),
    else ``<|audio|>`` added to ``tokenizer`` (in place), else ``vocab_rows`` (past every token of the LLM).

    Raises:
        AudioPlaceholderError: the given id is one that text produces with this tokenizer (names it).
    """
    if audio_token_id is not None:
        if tokenizer is not None:
            check_audio_placeholder(tokenizer, int(audio_token_id))
        return int(audio_token_id)
    if tokenizer is not None:
        return add_audio_token(tokenizer)
    return int(vocab_rows)


def seed_vocabulary(
    llm: str | os.PathLike, tokenizer: Any, audio_token_id: int | None, *, pad_token: str | None = None
) -> tuple[Any, int | None, int]:
    """``(tokenizer or None, LLMConfig.vocab_size, audio placeholder id)`` of a converted seed model.

    ``pad_token``: a pad token the official code adds to the tokenizer, resizing the LLM to the tokenizer's
    length (SALMONN's ``[PAD]``; rows added as :func:`mowe.builders.resize_vocab` does). The placeholder comes
    after it and gets no row (:func:`pick_audio_token_id`).
    """
    from transformers import AutoConfig

    tok = load_llm_tokenizer(llm, tokenizer)
    rows = int(AutoConfig.from_pretrained(os.fspath(llm)).vocab_size)
    vocab_size = None
    if pad_token is not None:
        if tok is not None:
            tok.add_special_tokens({"pad_token": pad_token})
        n = len(tok) if tok is not None else rows + 1
        vocab_size = n if n > rows else None
    return tok, vocab_size, pick_audio_token_id(tok, audio_token_id, vocab_rows=vocab_size or rows)


def save_converted(model: Any, out: str | os.PathLike, tokenizer: Any, *, prompt_template: str | None) -> str:
    """``model.save_pretrained(out)``, with a processor (``tokenizer`` + ``prompt_template``) when there is a
    tokenizer; returns a note for the command line."""

    if (
        tokenizer is None
        or model.audio_token_id >= len(tokenizer)
        or tokenizer.convert_ids_to_tokens(model.audio_token_id) != AUDIO_TOKEN
    ):
        model.save_pretrained(out)
        return (
            f"no processor saved: give --tokenizer (or an --llm folder with its tokenizer) to save one; the "
            f"audio placeholder id is {model.audio_token_id}"
        )
    processor = MoWEProcessor(tokenizer, audio_token=AUDIO_TOKEN, prompt_template=prompt_template)
    model.save_pretrained(out, processor=processor)
    return f"processor saved: audio placeholder {AUDIO_TOKEN!r} = id {model.audio_token_id}"

"""mowe.checkpoints.placeholder: the audio placeholder id and vocabulary of a converted seed model."""

from __future__ import annotations

import pytest
from _tokenizer_helpers import LAST_PIECE, llama_style_tokenizer
from transformers import LlamaConfig

from mowe.checkpoints.placeholder import load_llm_tokenizer, pick_audio_token_id, seed_vocabulary
from mowe.data.tokenizer import AUDIO_TOKEN
from mowe.errors import AudioPlaceholderError


def _llm_folder(path, *, with_tokenizer: bool):
    tok = llama_style_tokenizer(path if with_tokenizer else None)
    LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    ).save_pretrained(path)
    return len(tok)


def test_the_placeholder_is_added_past_the_vocabulary_or_taken_as_given_and_checked():
    tok = llama_style_tokenizer()
    rows = len(tok)
    # no tokenizer: the first id past the LLM's
    assert pick_audio_token_id(None, None, vocab_rows=rows) == rows
    added = pick_audio_token_id(tok, None, vocab_rows=rows)
    assert added == rows and tok.convert_ids_to_tokens(added) == AUDIO_TOKEN
    assert pick_audio_token_id(tok, added, vocab_rows=rows) == added
    with pytest.raises(AudioPlaceholderError, match="ordinary vocabulary piece .▁bro"):  # an id text produces
        pick_audio_token_id(tok, tok.convert_tokens_to_ids(LAST_PIECE), vocab_rows=rows)


def test_seed_vocabulary_with_and_without_a_tokenizer_and_a_pad_token(tmp_path):
    with_tok, bare = tmp_path / "with", tmp_path / "bare"
    rows = _llm_folder(with_tok, with_tokenizer=True)
    _llm_folder(bare, with_tokenizer=False)
    assert load_llm_tokenizer(bare) is None and load_llm_tokenizer(with_tok) is not None
    tok, vocab_size, audio_id = seed_vocabulary(bare, None, None)
    assert (tok, vocab_size, audio_id) == (None, None, rows)
    tok, vocab_size, audio_id = seed_vocabulary(with_tok, None, None, pad_token="[PAD]")
    # [PAD] gets a row (the LLM is resized to the tokenizer), the placeholder comes after it and gets none
    assert vocab_size == rows + 1 == tok.convert_tokens_to_ids("[PAD]") + 1 and audio_id == rows + 1

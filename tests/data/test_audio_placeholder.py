"""mowe.data.tokenizer's placeholder helpers: add_audio_token and the check every processor runs (issue
28)."""

from __future__ import annotations

import pytest
from _tokenizer_helpers import llama_style_tokenizer

from mowe.data.processor import MoWEProcessor
from mowe.data.tokenizer import add_audio_token, check_audio_placeholder, train_bpe_tokenizer
from mowe.errors import AudioPlaceholderError, ConfigError


def test_add_audio_token_adds_a_special_token_past_the_vocabulary_once():
    tok = llama_style_tokenizer()
    n = len(tok)
    assert add_audio_token(tok) == n and add_audio_token(tok) == n and len(tok) == n + 1
    ids = tok("<|audio|> the brown <|audio|>", add_special_tokens=False)["input_ids"]
    assert (
        ids.count(n) == 2
        and n not in tok("the brown fox <audio> |audio|", add_special_tokens=False)["input_ids"]
    )
    assert MoWEProcessor(tok).audio_token_id == n
    bpe = train_bpe_tokenizer(
        ["three one four"], vocab_size=300
    )  # <|audio|> is one of its special tokens already
    n_bpe = len(bpe)
    assert add_audio_token(bpe) == bpe.convert_tokens_to_ids("<|audio|>") == 3 and len(bpe) == n_bpe


@pytest.mark.parametrize("role", ["bos", "eos", "pad"])
def test_tokens_the_tokenizer_inserts_itself_are_refused(role):
    tok = train_bpe_tokenizer(["three one four"], vocab_size=300)
    with pytest.raises(AudioPlaceholderError, match=f"the tokenizer's {role} token"):
        check_audio_placeholder(tok, getattr(tok, f"{role}_token_id"))


def test_plain_words_are_refused_before_the_tokenizer_changes_and_ids_past_it_pass():
    tok = llama_style_tokenizer()
    n = len(tok)
    with pytest.raises(AudioPlaceholderError, match="plain word text"):
        add_audio_token(tok, "audio")
    assert len(tok) == n
    check_audio_placeholder(tok, n + 5)  # past every token: nothing produces it
    with pytest.raises(AudioPlaceholderError, match="negative"):
        check_audio_placeholder(tok, -1)
    with pytest.raises(ConfigError, match=r"is \d+ tokens for this tokenizer"):
        MoWEProcessor(tok, audio_token="<a>")

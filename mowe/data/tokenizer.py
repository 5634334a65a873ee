"""A small byte-level BPE tokenizer trained offline, for tests, examples and from-scratch toy LLMs.

Nothing can be downloaded where mowe is developed, so a real LLM tokenizer is not always at hand. This
module trains one with the ``tokenizers`` library on any iterable of strings and wraps it as a
``transformers.PreTrainedTokenizerFast`` with the special tokens the processor needs and a chat template,
so the rest of the library treats it exactly like a hub tokenizer.

Special tokens (ids 0..3, in this order, then any extra ones):

* ``<|pad|>`` padding, ``<|bos|>`` start of sequence, ``<|eos|>`` end of an answer,
* ``<|audio|>`` the audio placeholder (one per clip; see :mod:`mowe.merge`).

Chat template: ``<|bos|>system: ...\\nuser: ...\\nassistant: ...<|eos|>\\n``; with
``add_generation_prompt=True`` the prompt ends in ``assistant:`` and the answer follows after a space.

Example:
    >>> tok = train_bpe_tokenizer(["transcribe the speech", "three one four"], vocab_size=300)
    >>> tok.apply_chat_template([{"role": "user", "content": "<|audio|> hi"}], tokenize=False,
    ...                         add_generation_prompt=True)
    '<|bos|>user: <|audio|> hi\\nassistant:'
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from mowe.errors import MoWEInputError

__all__ = ["AUDIO_TOKEN", "BOS_TOKEN", "CHAT_TEMPLATE", "EOS_TOKEN", "PAD_TOKEN", "train_bpe_tokenizer"]

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"
AUDIO_TOKEN = "<|audio|>"

# Jinja, as transformers renders it (messages, add_generation_prompt, bos_token and eos_token are in scope).
# The whitespace-control dashes keep the template free of stray newlines; "\n" literals are the only ones.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- 'assistant: ' + message['content'] + eos_token + '\n' -}}"
    "{%- else -%}"
    "{{- message['role'] + ': ' + message['content'] + '\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'assistant:' -}}{%- endif -%}"
)


def train_bpe_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int = 512,
    special_tokens: Sequence[str] | None = None,
    save_dir: str | os.PathLike | None = None,
):
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for transformers.

    Byte-level: every string is encodable (no unknown token), whatever the training texts were.

    Args:
        texts: training strings (any iterable; consumed once).
        vocab_size: target vocabulary size including the 256 byte symbols and the special tokens.
        special_tokens: extra special tokens added after the four built-in ones (duplicates ignored).
        save_dir: if given, ``save_pretrained(save_dir)`` so ``AutoTokenizer.from_pretrained(save_dir)``
            reloads it (chat template included).

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` with ``pad_token``, ``bos_token``, ``eos_token`` set,
        ``<|audio|>`` (and the extras) as additional special tokens, and :data:`CHAT_TEMPLATE`.

    Raises:
        MoWEInputError: ``vocab_size`` too small for the byte alphabet plus the special tokens, or a
            special token that is not a non-empty string.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    extra = list(special_tokens or [])
    for t in extra:
        if not isinstance(t, str) or not t:
            raise MoWEInputError(f"special_tokens must be non-empty strings, got {t!r}")
    specials = list(dict.fromkeys([PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, AUDIO_TOKEN, *extra]))
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < len(alphabet) + len(specials):
        raise MoWEInputError(
            f"vocab_size must be an int >= {len(alphabet) + len(specials)} (256 bytes + {len(specials)} special "
            f"tokens), got {vocab_size!r}"
        )

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator((str(t) for t in texts), trainer=trainer)

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        additional_special_tokens=specials[3:],
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    if save_dir is not None:
        fast.save_pretrained(os.fspath(save_dir))
    return fast

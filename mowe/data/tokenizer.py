"""The audio placeholder of any tokenizer, and a small byte-level BPE tokenizer trained offline.

**The placeholder.** A prompt holds one audio placeholder token per clip; the model replaces each by that
clip's audio tokens, so the placeholder must be a token that no other text produces. :func:`add_audio_token`
makes ``<|audio|>`` an added special token of any tokenizer (its id past the ordinary vocabulary) and
:func:`audio_placeholder_id` / :func:`check_audio_placeholder` refuse, with an
:class:`~mowe.errors.AudioPlaceholderError`, a placeholder that text can produce: an ordinary vocabulary piece
(in a LLaMA tokenizer the last id can be ``"▁bro"``, which the word "brown" produces), a token the tokenizer
inserts itself (bos, eos, pad, unk), or an added token its model also produces from plain text. The processor
runs that
check on every tokenizer. The LLM needs no embedding row for the placeholder: mowe never looks it up (the
model replaces it before the LLM runs, the prompt router reads it as id 0), so its id may lie past the LLM's
vocabulary and the LLM's logits stay as they were; ``LLMConfig.vocab_size`` resizes only where rows are
wanted.

**The BPE tokenizer**, for tests, examples and from-scratch toy LLMs.

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
import re
from collections.abc import Iterable, Sequence
from typing import Any

from mowe.errors import AudioPlaceholderError, ConfigError, MoWEInputError

__all__ = [
    "AUDIO_TOKEN",
    "BOS_TOKEN",
    "CHAT_TEMPLATE",
    "EOS_TOKEN",
    "PAD_TOKEN",
    "add_audio_token",
    "audio_placeholder_id",
    "check_audio_placeholder",
    "check_placeholder_agrees",
    "train_bpe_tokenizer",
]

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
    if (
        isinstance(vocab_size, bool)
        or not isinstance(vocab_size, int)
        or vocab_size < len(alphabet) + len(specials)
    ):
        raise MoWEInputError(
            f"vocab_size must be an int >= {len(alphabet) + len(specials)} (256 bytes + {len(specials)} "
            f"special "
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


# --------------------------------------------------------------------------------------------- the
# placeholder
def add_audio_token(tokenizer: Any, audio_token: str = AUDIO_TOKEN) -> int:
    """Make ``audio_token`` an added special token of ``tokenizer`` (in place, unless it is one already) and
    return its id, checked by :func:`check_audio_placeholder`.

    A new token gets the next free id, past the tokenizer's vocabulary. The LLM needs no row for it (see the
    module docstring): keep ``LLMConfig.vocab_size`` unset to leave the LLM's logits exactly as they were.

    Raises:
        ConfigError: ``audio_token`` is not a non-empty string. AudioPlaceholderError: the tokenizer's text
            can still produce the id (e.g. ``audio_token`` is an ordinary word of its vocabulary).

    Example:
        >>> tok = train_bpe_tokenizer(["three one four"], vocab_size=300)
        >>> add_audio_token(tok) == tok.convert_tokens_to_ids(AUDIO_TOKEN)
        True
    """
    from tokenizers import AddedToken

    if not isinstance(audio_token, str) or not audio_token:
        raise ConfigError(f"audio_token must be a non-empty string, got {audio_token!r}")
    if re.fullmatch(r"[\w\s]*", audio_token):  # refused before the tokenizer is changed
        raise AudioPlaceholderError(
            f"audio placeholder {audio_token!r} is plain word text, which prompts and answers "
            f"hold; use a marker such as '<|audio|>'"
        )
    if audio_token not in tokenizer.get_added_vocab():
        token = AddedToken(audio_token, special=True, normalized=False, lstrip=False, rstrip=False)
        tokenizer.add_special_tokens(
            {"additional_special_tokens": [token]}, replace_extra_special_tokens=False
        )
    return audio_placeholder_id(tokenizer, audio_token)


def audio_placeholder_id(tokenizer: Any, audio_token: str = AUDIO_TOKEN) -> int:
    """The id of ``audio_token`` in ``tokenizer``: one token that no other text produces.

    Raises:
        ConfigError: ``audio_token`` is several tokens. AudioPlaceholderError: text can produce its id
            (:func:`check_audio_placeholder`).
    """
    ids = tokenizer(audio_token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ConfigError(
            f"audio_token {audio_token!r} is {len(ids)} tokens for this tokenizer, not one; add it first "
            f"with "
            f"mowe.data.tokenizer.add_audio_token(tokenizer, {audio_token!r}) (an added special token; the "
            f"LLM "
            f"needs no new row) or train one with mowe.data.tokenizer.train_bpe_tokenizer"
        )
    check_audio_placeholder(tokenizer, int(ids[0]), audio_token=audio_token)
    return int(ids[0])


def check_audio_placeholder(tokenizer: Any, token_id: int, *, audio_token: str | None = None) -> None:
    """Refuse an audio placeholder id that text other than the placeholder itself can produce.

    Accepted: an id past every token of ``tokenizer`` (nothing it tokenizes produces it), or an added token
    (matched only as its own string) that is not the tokenizer's bos / eos / pad / unk token, is not plain
    word text (letters, digits and spaces only, as ``"audio"``) and that the tokenizer's model does not also
    produce from that string read as plain text.

    Raises:
        AudioPlaceholderError: naming the id, its piece, why text produces it, and how to get a safe
        placeholder.
    """
    token_id = int(token_id)
    fix = (
        "use an added special token: mowe.data.tokenizer.add_audio_token(tokenizer) adds '<|audio|>' past "
        "the "
        "vocabulary"
    )
    said = (
        f"audio placeholder {audio_token!r} (id {token_id})"
        if audio_token
        else f"audio placeholder id {token_id}"
    )
    if token_id < 0:
        raise AudioPlaceholderError(f"{said}: a token id cannot be negative")
    if token_id >= len(tokenizer):
        return
    piece = tokenizer.convert_ids_to_tokens(token_id)
    for role, why in (
        ("bos", "the tokenizer adds to texts"),
        ("eos", "ends every answer"),
        ("pad", "fills every padded position"),
        ("unk", "unknown text becomes"),
    ):
        if getattr(tokenizer, f"{role}_token_id", None) == token_id:
            raise AudioPlaceholderError(
                f"{said} is the tokenizer's {role} token {piece!r}, which {why}; {fix}"
            )
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    if token_id not in added:
        text = tokenizer.decode([token_id])
        shown = (
            f", e.g. from the text {text.strip()!r}"
            if token_id in tokenizer(text, add_special_tokens=False)["input_ids"]
            else ""
        )
        raise AudioPlaceholderError(
            f"{said} is the ordinary vocabulary piece {piece!r}: text produces it{shown}, and a prompt "
            f"holding it "
            f"would get more audio placeholders than clips; {fix}"
        )
    content = added[token_id].content
    if re.fullmatch(r"[\w\s]*", content):
        raise AudioPlaceholderError(
            f"{said}: {content!r} is plain word text, which prompts and answers hold; {fix}"
        )
    try:
        plain = tokenizer(content, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    except TypeError:  # a tokenizer without split_special_tokens: nothing more can be checked
        return
    if list(plain) == [token_id]:
        raise AudioPlaceholderError(
            f"{said}: {content!r} is also an ordinary piece of the tokenizer's vocabulary, so text holding "
            f"{content!r} produces it; {fix}"
        )


def check_placeholder_agrees(processor, audio_token_id: int, *, what: str) -> None:
    """A processor's placeholder id must be the model's (``config.audio_token_id``): otherwise every prompt
    has no placeholder the model looks for.

    Raises:
        ConfigError: naming both ids and the way to make them agree.
    """
    if processor.audio_token_id != audio_token_id:
        raise ConfigError(
            f"the processor's audio placeholder {processor.audio_token!r} has id "
            f"{processor.audio_token_id}, but {what} uses audio_token_id {audio_token_id}; build "
            f"the model for this tokenizer (Preset.for_tokenizer(tokenizer), or set "
            f"MoWEConfig.audio_token_id to the processor's audio_token_id)"
        )

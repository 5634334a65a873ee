"""A LLaMA-style tokenizer built offline: sentencepiece-like BPE ("▁" word marks, byte fallback,
<unk>/<s>/</s> at ids 0-2, BOS added), whose last id is the ordinary piece "▁bro" that the word "brown"
   produces."""

from __future__ import annotations

import string

LAST_PIECE = "▁bro"


def llama_style_tokenizer(save_dir=None):
    """The tokenizer (``transformers`` fast tokenizer); saved to ``save_dir`` when given."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for ch in ["▁", *string.ascii_lowercase, *string.ascii_uppercase, *".,?!'"]:
        vocab.setdefault(ch, len(vocab))
    merges = [
        ("▁", "t"),
        ("▁t", "h"),
        ("▁th", "e"),
        ("▁", "w"),
        ("▁w", "h"),
        ("▁wh", "a"),
        ("▁wha", "t"),
        ("▁", "i"),
        ("▁i", "s"),
        ("▁", "s"),
        ("▁s", "a"),
        ("▁sa", "i"),
        ("▁sai", "d"),
        ("▁", "b"),
        ("▁b", "r"),
        ("▁br", "o"),
    ]  # the last merge makes the last id: "▁bro"
    for a, b in merges:
        vocab[a + b] = len(vocab)
    assert max(vocab, key=vocab.get) == LAST_PIECE
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    )
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )
    if save_dir is not None:
        fast.save_pretrained(save_dir)
    return fast

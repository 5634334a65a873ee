"""Padding-free greedy generation: the prompts' prefill runs packed, decoding runs from a left-padded KV cache.

A batch of audio prompts differs in length by the audio (a 1 s clip and a 30 s clip are 25 and 750 tokens at
25 tokens/s), so transformers' ``generate`` on a left-padded batch spends most of its prefill on padding. Here
the prefill runs the batch's real tokens as one packed row (position ids restarting per sample, as in padding-free
training, :func:`mowe.merge.pack_merged`); its keys and values are then laid out per sample with left padding,
and greedy decoding continues from that cache exactly as ``generate`` would. Same tokens as ``generate`` up to
float rounding of the prefill; the prefill then costs the real token count instead of ``b x`` the longest prompt.

Only plain greedy decoding is done here (argmax, ``eos_token_id`` stops a row, ``min_new_tokens``); every other
setting (beams, sampling, repetition penalties, logits processors, streamers, ...) is left to ``generate``:
:func:`greedy_settings` says why a call cannot take this path.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from mowe.merge import MergedInputs, pack_merged

__all__ = ["GreedySettings", "greedy_settings", "packed_greedy_generate"]

# GenerationConfig fields that plain greedy decoding reads, or that do not change what it produces.
_GREEDY_FIELDS = {"max_new_tokens", "min_new_tokens", "eos_token_id", "pad_token_id", "bos_token_id", "use_cache",
                  "do_sample", "num_beams", "max_length", "temperature", "top_p", "top_k", "min_p", "typical_p",
                  "decoder_start_token_id", "output_attentions", "output_hidden_states", "cache_implementation",
                  "_from_model_config", "transformers_version"}


@dataclass(frozen=True)
class GreedySettings:
    """What plain greedy decoding needs: ``eos_token_ids`` (empty: never stop early), ``pad_token_id`` for rows
    that have finished, ``min_new_tokens`` before which eos is suppressed."""

    max_new_tokens: int
    min_new_tokens: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int


def _full_attention_only(config) -> bool:
    config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    if getattr(config, "is_encoder_decoder", False):
        return False
    types = getattr(config, "layer_types", None)
    if types is not None and any(t != "full_attention" for t in types):
        return False
    window = getattr(config, "sliding_window", None)
    return window is None or getattr(config, "use_sliding_window", True) is False


def greedy_settings(llm: nn.Module, **generate_kwargs) -> GreedySettings | str:
    """The :class:`GreedySettings` of ``llm.generate(**generate_kwargs)``, or a sentence saying why that call is
    not plain greedy decoding (so it must go through transformers' ``generate``)."""
    if not _full_attention_only(llm.config):
        return "the LLM has sliding-window or non-causal-LM layers"
    impl = getattr(llm.config, "_attn_implementation", None)
    if impl not in (None, "eager", "sdpa"):
        return f"the packed prefill passes a 4D mask, which attention implementation {impl!r} does not take"
    cfg = copy.deepcopy(llm.generation_config)
    unused = cfg.update(**generate_kwargs)
    if unused:
        return f"generate arguments {sorted(unused)} are not generation-config fields"
    if cfg.do_sample or (cfg.num_beams or 1) != 1:
        return "sampling and beam search are not greedy decoding"
    if cfg.use_cache is False:
        return "use_cache=False"
    if cfg.max_new_tokens is None:
        return "max_new_tokens is not set"
    extra = sorted(k for k in cfg.to_diff_dict() if k not in _GREEDY_FIELDS)
    if extra:
        return f"generation settings {extra} change greedy decoding"
    eos = cfg.eos_token_id
    eos = () if eos is None else tuple(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else (eos[0] if eos else 0)
    return GreedySettings(max_new_tokens=int(cfg.max_new_tokens), min_new_tokens=int(cfg.min_new_tokens or 0),
                          eos_token_ids=eos, pad_token_id=int(pad))


def _left_padded_cache(cache, keep: torch.Tensor):
    """Packed keys/values ``(1, h, N, d)`` per layer -> a DynamicCache of ``(b, h, T, d)`` laid out as ``keep``."""
    from transformers import DynamicCache

    b, t = keep.shape
    data = []
    for layer in cache.layers:
        pair = []
        for x in (layer.keys, layer.values):
            full = x.new_zeros(b, x.shape[1], t, x.shape[3])
            full.transpose(1, 2)[keep] = x[0].transpose(0, 1)  # (N, h, d) into the real (row, position) slots
            pair.append(full)
        data.append(tuple(pair))
    return DynamicCache(ddp_cache_data=data)


@torch.no_grad()
def packed_greedy_generate(llm: nn.Module, merged: MergedInputs, settings: GreedySettings) -> torch.Tensor:
    """Greedy decoding of a left-padded merged batch with a padding-free prefill.

    Args:
        llm: a transformers causal LM (or its peft wrapper) whose masks come from ``masking_utils``.
        merged: prompts merged with their audio, **left**-padded: ``inputs_embeds`` ``(b, T, d)``,
            ``attention_mask`` ``(b, T)``.
        settings: from :func:`greedy_settings`.

    Returns:
        ``(b, n)`` new token ids, ``n <= max_new_tokens`` (fewer when every row has emitted eos); rows that
        finished early are filled with ``pad_token_id``, as transformers' ``generate`` does.
    """
    from transformers import DynamicCache

    mask = merged.attention_mask
    if bool(mask[:, -1].eq(0).any()):
        raise ValueError("packed_greedy_generate needs a left-padded batch (every row's last position real)")
    b = mask.shape[0]
    lens = mask.sum(1)
    packed = pack_merged(merged)
    last = lens.cumsum(0) - 1  # each sample's last token in the packed row
    # transformers derives per-sample masks from packed position ids only without a cache, so the block-diagonal
    # causal mask is given explicitly (additive, as eager and SDPA attention both take it).
    sample = torch.repeat_interleave(torch.arange(b, device=mask.device), lens)
    n = sample.shape[0]
    causal = torch.ones(n, n, dtype=torch.bool, device=mask.device).tril_()
    allowed = causal & (sample[:, None] == sample[None, :])
    dtype = packed.inputs_embeds.dtype
    mask4d = torch.zeros(1, 1, n, n, dtype=dtype, device=mask.device).masked_fill_(~allowed, torch.finfo(dtype).min)
    out = llm(inputs_embeds=packed.inputs_embeds, attention_mask=mask4d, position_ids=packed.position_ids,
              past_key_values=DynamicCache(), use_cache=True, logits_to_keep=last)
    logits = out.logits[0]  # (b, V)
    cache = _left_padded_cache(out.past_key_values, packed.keep)
    del out, packed

    eos = torch.tensor(settings.eos_token_ids, dtype=torch.long, device=mask.device)
    pos = lens[:, None].clone()  # next position id of every row
    unfinished = torch.ones(b, dtype=torch.bool, device=mask.device)
    tokens = []
    for step in range(settings.max_new_tokens):
        scores = logits.float()
        if step < settings.min_new_tokens and len(eos):
            scores[:, eos] = -float("inf")
        tok = scores.argmax(-1)
        tok = torch.where(unfinished, tok, torch.full_like(tok, settings.pad_token_id))
        tokens.append(tok)
        if len(eos):
            unfinished &= ~torch.isin(tok, eos)
            if not bool(unfinished.any()):  # one host sync per token, as generate's stopping check
                break
        if step + 1 == settings.max_new_tokens:
            break
        mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
        out = llm(input_ids=tok[:, None], attention_mask=mask, position_ids=pos, past_key_values=cache,
                  use_cache=True, logits_to_keep=1)
        cache, logits = out.past_key_values, out.logits[:, -1]
        pos = pos + 1
    return torch.stack(tokens, dim=1)

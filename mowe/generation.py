"""Greedy generation whose prefill runs in length groups instead of one left-padded batch.

A batch of audio prompts differs in length by the audio (a 1 s clip and a 30 s clip are 25 and 750 tokens at
25 tokens/s), so transformers' ``generate`` on a left-padded batch spends much of its prefill on padding:
every prompt pays for the longest one, in the projections and, quadratically, in attention. Here the prefill
runs the prompts in groups of similar length (:func:`mowe.encoders.base.length_groups`, as the encoders do),
each padded only to its own longest prompt; each group's keys and values are then placed into one left-padded
KV cache, and greedy decoding continues from it exactly as ``generate`` would. The same tokens as ``generate``
up to float rounding of the prefill.

The settings come from the model's :class:`~transformers.GenerationConfig` (``model.generation_config``, saved
as ``generation_config.json`` beside the weights): :func:`default_generation_config` makes it from the LLM's
own, :func:`generation_settings` applies one call's overrides; nothing in ``generate`` hard-codes a budget.

Only plain greedy decoding is done here (argmax, ``eos_token_id`` stops a row, ``min_new_tokens``); every
other setting (beams, sampling, repetition penalties, logits processors, streamers, ...) is left to
``generate``: :func:`greedy_settings` says why a call cannot take this path.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from mowe.merge import MergedInputs
from mowe.tensors import length_groups

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "GreedySettings",
    "default_generation_config",
    "generation_settings",
    "greedy_settings",
    "grouped_greedy_generate",
]

#: ``max_new_tokens`` of a new model's generation config when the LLM's own sets none (edit
#: ``model.generation_config`` or pass ``max_new_tokens=`` to change it; it is saved with the model).
DEFAULT_MAX_NEW_TOKENS = 32

# GenerationConfig fields that plain greedy decoding reads, or that do not change what it produces.
_GREEDY_FIELDS = {
    "max_new_tokens",
    "min_new_tokens",
    "eos_token_id",
    "pad_token_id",
    "bos_token_id",
    "use_cache",
    "do_sample",
    "num_beams",
    "max_length",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "typical_p",
    "decoder_start_token_id",
    "output_attentions",
    "output_hidden_states",
    "cache_implementation",
    "_from_model_config",
    "transformers_version",
}


@dataclass(frozen=True)
class GreedySettings:
    """What plain greedy decoding needs: ``eos_token_ids`` (empty: never stop early), ``pad_token_id`` for
    rows that have finished, ``min_new_tokens`` before which eos is suppressed."""

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


def default_generation_config(llm: nn.Module):
    """A new model's :class:`~transformers.GenerationConfig`: the LLM's own made greedy with one beam (its
    sampling knobs cleared, other settings such as ``repetition_penalty`` kept), pad falling back to eos, and
       its
    ``max_new_tokens`` (else :data:`DEFAULT_MAX_NEW_TOKENS`)."""
    from transformers import GenerationConfig

    own = getattr(llm, "generation_config", None)
    cfg = copy.deepcopy(own) if own is not None else GenerationConfig()
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else cfg.eos_token_id
    if isinstance(pad, (list, tuple)):
        pad = pad[0] if pad else None
    cfg.update(
        do_sample=False,
        num_beams=1,
        temperature=None,
        top_p=None,
        top_k=None,
        min_p=None,
        typical_p=None,
        pad_token_id=pad,
        max_new_tokens=cfg.max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
    )
    return cfg


def generation_settings(base, override=None, **kwargs):
    """One ``generate`` call's settings: ``(GenerationConfig, other_kwargs)``.

    Args:
        base: the model's :class:`~transformers.GenerationConfig` (not changed).
        override: a ``GenerationConfig`` for this call instead of ``base``.
        kwargs: generation-config fields (None values are ignored, so ``max_new_tokens=None`` keeps the
            config's) and other ``generate`` arguments (``logits_processor``, ``streamer``, ...), returned
            apart.
    """
    cfg = copy.deepcopy(override if override is not None else base)
    unused = cfg.update(**{k: v for k, v in kwargs.items() if v is not None})
    cfg.validate()
    return cfg, unused


def greedy_settings(llm: nn.Module, generation_config=None, **generate_kwargs) -> GreedySettings | str:
    """The :class:`GreedySettings` of ``llm.generate(generation_config=generation_config,
    **generate_kwargs)``, or a sentence saying why that call is not plain greedy decoding (so it must go
       through transformers' ``generate``).
    ``generation_config`` None: the LLM's own."""
    if not _full_attention_only(llm.config):
        return "the LLM has sliding-window or non-causal-LM layers"
    cfg = copy.deepcopy(generation_config if generation_config is not None else llm.generation_config)
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
    return GreedySettings(
        max_new_tokens=int(cfg.max_new_tokens),
        min_new_tokens=int(cfg.min_new_tokens or 0),
        eos_token_ids=eos,
        pad_token_id=int(pad),
    )


@torch.no_grad()
def grouped_greedy_generate(
    llm: nn.Module, merged: MergedInputs, settings: GreedySettings, *, max_padding: float
) -> torch.Tensor:
    """Greedy decoding of a left-padded merged batch, with the prefill run in length groups.

    Args:
        llm: a transformers causal LM (or its peft wrapper) with full-attention layers.
        merged: prompts merged with their audio, **left**-padded: ``inputs_embeds`` ``(b, T, d)``,
            ``attention_mask`` ``(b, T)``, ``position_ids`` ``(b, T)``.
        settings: from :func:`greedy_settings`.
        max_padding: padding budget of a prefill group (see :func:`mowe.encoders.base.length_groups`); 0 runs
            only prompts of equal length together, ``inf`` is one padded batch as ``generate`` runs.

    Returns:
        ``(b, n)`` new token ids, ``n <= max_new_tokens`` (fewer when every row has emitted eos); rows that
        finished early are filled with ``pad_token_id``, as transformers' ``generate`` does.
    """
    from transformers import DynamicCache

    mask = merged.attention_mask
    b, t = mask.shape
    lens = mask.sum(1)
    host_lens = lens.tolist()  # one host copy: group sizes and trims are read from it, not per group
    if not torch.equal(mask.bool(), torch.arange(t, device=mask.device)[None, :] >= (t - lens)[:, None]):
        raise ValueError(
            "grouped_greedy_generate needs a left-padded batch (each row's real tokens at its end)"
        )
    keys: list[torch.Tensor] = []
    values: list[torch.Tensor] = []
    logits = None
    for group in length_groups(host_lens, max_padding):
        idx = torch.tensor(group, device=mask.device)
        width = max(host_lens[i] for i in group)
        out = llm(
            inputs_embeds=merged.inputs_embeds[idx, t - width :],
            attention_mask=mask[idx, t - width :],
            position_ids=merged.position_ids[idx, t - width :],
            use_cache=True,
            logits_to_keep=1,
        )
        if logits is None:
            logits = out.logits.new_empty(b, out.logits.shape[-1])
            for layer in out.cache.layers:
                keys.append(layer.keys.new_zeros(b, layer.keys.shape[1], t, layer.keys.shape[3]))
                values.append(layer.values.new_zeros(b, layer.values.shape[1], t, layer.values.shape[3]))
        logits[idx] = out.logits[:, -1]
        for layer, k, v in zip(out.cache.layers, keys, values):  # right-aligned, as left padding is
            k[idx, :, t - width :] = layer.keys
            v[idx, :, t - width :] = layer.values
        del out
    cache = DynamicCache(ddp_cache_data=list(zip(keys, values)))
    del keys, values

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
        out = llm(
            input_ids=tok[:, None],
            attention_mask=mask,
            position_ids=pos,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        cache, logits = out.cache, out.logits[:, -1]
        pos = pos + 1
    return torch.stack(tokens, dim=1)

"""Putting audio tokens into the text sequence at the audio placeholders.

Shape legend: ``b`` the batch (``input_ids`` etc.: one row per sample; audio tensors: one row per clip, all
samples' clips together, so more rows than samples when a sample holds several placeholders), ``L`` prompt
tokens, ``n`` audio tokens, ``T`` merged length, ``d`` LLM width.

Each sample's prompt holds one placeholder token per clip; clip ``i`` (in reading order across the batch)
replaces the ``i``-th placeholder by its ``n_i`` audio embeddings. The merged batch is re-padded on the
side asked for (left for generation), with position ids that restart at 0 after left padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mowe.constants import IGNORE_INDEX
from mowe.errors import MoWEInputError
from mowe.tensors import length_groups, resolve_bucket_padding

__all__ = [
    "MergedInputs",
    "PackedInputs",
    "cheapest_llm_layout",
    "grouped_llm_pass",
    "llm_pass_flops",
    "llm_sizes",
    "merge_audio_features",
    "pack_merged",
]


@dataclass
class MergedInputs:
    """LLM inputs after the merge.

    Attributes:
        inputs_embeds: ``(b, T, d)``.
        attention_mask: ``(b, T)`` long, 1 on real tokens.
        position_ids: ``(b, T)`` long, counting real tokens only.
        labels: ``(b, T)`` or None; -100 on audio and padding positions.
        audio_positions: ``(b, T)`` bool, True where an audio embedding sits.
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor | None
    audio_positions: torch.Tensor


def merge_audio_features(
    *,
    input_ids: torch.Tensor,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    audio_embeds: torch.Tensor,
    audio_lengths: torch.Tensor,
    audio_token_id: int,
    labels: torch.Tensor | None = None,
    padding_side: str = "right",
) -> MergedInputs:
    """Replace each audio placeholder by its clip's audio tokens.

    Args:
        input_ids: ``(b, L)`` token ids with one ``audio_token_id`` per clip; either padding side.
        inputs_embeds: ``(b, L, d)`` text embeddings of ``input_ids``.
        attention_mask: ``(b, L)``; 0 marks padding (on any side).
        audio_embeds: ``(b, n, d)`` connector output; tokens past ``audio_lengths[i]`` are ignored.
        audio_lengths: ``(b,)`` tokens per clip.
        audio_token_id: the placeholder id.
        labels: optional ``(b, L)`` targets; placeholders become -100.
        padding_side: ``"right"`` or ``"left"`` for the merged batch.

    Raises:
        MoWEInputError: placeholder count and clip count disagree (naming each sample's count), a
            placeholder sits on a padded position, or shapes disagree.
    """
    if padding_side not in ("left", "right"):
        raise MoWEInputError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    b, L = input_ids.shape
    if inputs_embeds.shape[:2] != (b, L) or attention_mask.shape != (b, L):
        raise MoWEInputError(
            f"input_ids {tuple(input_ids.shape)}, inputs_embeds {tuple(inputs_embeds.shape)} and "
            f"attention_mask "
            f"{tuple(attention_mask.shape)} must agree on (batch, length)"
        )
    if labels is not None and labels.shape != (b, L):
        raise MoWEInputError(f"labels must have shape {(b, L)}, got {tuple(labels.shape)}")
    mask = attention_mask.bool()
    is_audio = input_ids == audio_token_id
    c = audio_embeds.shape[0]
    per_sample = is_audio.sum(1)
    if (is_audio & ~mask).any():
        bad = int((is_audio & ~mask).any(1).nonzero()[0])
        raise MoWEInputError(f"sample {bad} has an audio placeholder on a padded (attention_mask=0) position")
    n_ph = int(per_sample.sum())
    if n_ph != c or audio_lengths.shape != (c,):
        counts = ", ".join(f"sample {i}: {int(n)}" for i, n in enumerate(per_sample.tolist()))
        raise MoWEInputError(
            f"the batch has {n_ph} audio placeholder(s) ({counts}) but {c} audio clip(s) were given "
            f"({tuple(audio_lengths.shape)[0] if audio_lengths.dim() else '?'} lengths); each clip needs "
            f"exactly "
            f"one placeholder token (id {audio_token_id}) in its sample's prompt"
        )
    if c and int(audio_lengths.max()) > audio_embeds.shape[1]:
        raise MoWEInputError(
            f"audio_lengths up to {int(audio_lengths.max())} exceed the {audio_embeds.shape[1]} audio tokens "
            f"given"
        )
    device = inputs_embeds.device
    # How many merged positions each input token occupies: 1 for text, n_i for clip i's placeholder, 0 for
    # pad.
    span = mask.long()
    if c:
        span = span.masked_scatter(is_audio, audio_lengths.to(device=device, dtype=torch.long))
    new_len = span.sum(1)  # (b,)
    T = int(new_len.max())
    start = span.cumsum(1) - span  # (b, L) first merged position of each token
    if padding_side == "left":
        start = start + (T - new_len)[:, None]
    d = inputs_embeds.shape[-1]
    out = inputs_embeds.new_zeros(b, T, d)
    out_mask = torch.zeros(b, T, dtype=torch.long, device=device)
    out_labels = (
        None if labels is None else torch.full((b, T), IGNORE_INDEX, dtype=labels.dtype, device=device)
    )
    audio_pos = torch.zeros(b, T, dtype=torch.bool, device=device)

    text = mask & ~is_audio
    rows, cols = text.nonzero(as_tuple=True)
    dst = start[rows, cols]
    out[rows, dst] = inputs_embeds[rows, cols]
    out_mask[rows, dst] = 1
    if out_labels is not None:
        out_labels[rows, dst] = labels[rows, cols]

    if c:
        # Placeholders in reading order (row-major) are clips 0..c-1.
        a_rows, a_cols = is_audio.nonzero(as_tuple=True)
        n = audio_embeds.shape[1]
        j = torch.arange(n, device=device)
        lens = audio_lengths.to(device)
        valid = j[None, :] < lens[:, None]  # (b, n)
        clip, tok = valid.nonzero(as_tuple=True)
        r = a_rows[clip]
        p = start[a_rows, a_cols][clip] + tok
        out[r, p] = audio_embeds[clip, tok].to(out.dtype)
        out_mask[r, p] = 1
        audio_pos[r, p] = True

    position_ids = (out_mask.cumsum(1) - 1).clamp(min=0)
    return MergedInputs(out, out_mask, position_ids, out_labels, audio_pos)


@dataclass
class PackedInputs:
    """A merged batch packed into one padding-free row (``N`` = real tokens of the whole batch).

    Attributes:
        inputs_embeds: ``(1, N, d)``.
        position_ids: ``(1, N)``, restarting at 0 for every sample: transformers' attention masks keep samples
            apart from these (``masking_utils.find_packed_sequence_indices``) when no attention mask is given.
        shift_labels: ``(1, N)``, the label of the *next* token of the same sample (-100 at each sample's last
            token), so a sample's last token is never trained to predict the next sample's first.
        keep: ``(b, T)`` bool, where the packed tokens came from (to unpack per-token outputs).
    """

    inputs_embeds: torch.Tensor
    position_ids: torch.Tensor
    shift_labels: torch.Tensor | None
    keep: torch.Tensor


def pack_merged(merged: MergedInputs) -> PackedInputs:
    """Pack a merged batch (either padding side) into one row without padding, for padding-free training.

    The LLM then runs on ``N`` real tokens instead of ``b * T``; with packed position ids every sample attends
    only to itself, so the loss equals the padded batch's (same tokens, same mean) up to float rounding.
    """
    keep = merged.attention_mask.bool()
    pos = merged.position_ids[keep][None]
    shift = None
    if merged.labels is not None:
        # Shift inside each row, then drop padding: the label after a row's last real token is padding (-100)
        # with right padding; with left padding the row's last token is real and gets the -100 appended.
        nxt = torch.cat(
            [merged.labels[:, 1:], merged.labels.new_full((merged.labels.shape[0], 1), IGNORE_INDEX)], dim=1
        )
        shift = nxt[keep][None]
    return PackedInputs(
        inputs_embeds=merged.inputs_embeds[keep][None], position_ids=pos, shift_labels=shift, keep=keep
    )


# Fixed cost of one LLM call per layer (dispatch, masks, small ops), in FLOP-equivalents; how it was measured
# is in benchmarks/RESULTS.md ("Per-call overhead of the LLM").
CALL_OVERHEAD_FLOPS = 1e8


def llm_pass_flops(
    attention_mask: torch.Tensor,
    *,
    hidden_size: int,
    intermediate_size: int,
    layout: str,
    varlen_attention: bool = False,
    group_padding: float = 0.05,
    call_overhead: float = CALL_OVERHEAD_FLOPS,
) -> float:
    """FLOPs per layer of one LLM pass over a batch laid out as ``layout`` (a model to choose by, not a
    count).

    Per token and layer the projections cost about ``2 * (4 d^2 + 3 d f)`` FLOPs and attention ``4 d`` per
    attended position. Layouts:

    - ``"padded"``: every row runs ``T`` tokens attending over ``T``;
    - ``"packed"``: one row of the ``N`` real tokens; attention over ``N`` with a dense mask (SDPA, eager),
      over each sample alone with variable-length kernels (``varlen_attention``, flash-attention);
    - ``"groups"``: rows of similar length together (:func:`mowe.encoders.base.length_groups` with
      ``group_padding``), each group padded to its own longest row.

    Each call (one for ``padded`` and ``packed``, one per group) adds ``call_overhead``, so that many small
    groups of a small LLM are not preferred to one padded batch for a few tokens of padding.
    """
    b, t = attention_mask.shape
    per_token = 2.0 * (4 * hidden_size**2 + 3 * hidden_size * intermediate_size)
    per_pair = 4.0 * hidden_size
    lens = attention_mask.sum(1).double()
    n = float(lens.sum())
    if layout == "padded":
        return call_overhead + b * t * (per_token + t * per_pair)
    if layout == "packed":
        pairs = float((lens**2).sum()) if varlen_attention else n * n
        return call_overhead + n * per_token + pairs * per_pair
    if layout == "groups":
        host = [int(x) for x in lens.tolist()]
        return sum(
            call_overhead
            + len(g) * max(host[i] for i in g) * (per_token + max(host[i] for i in g) * per_pair)
            for g in length_groups(host, group_padding)
        )
    raise ValueError(f"layout must be 'padded', 'packed' or 'groups', got {layout!r}")


def cheapest_llm_layout(
    attention_mask: torch.Tensor,
    *,
    hidden_size: int,
    intermediate_size: int,
    varlen_attention: bool = False,
    group_padding: float = 0.05,
) -> bool | str:
    """The layout of :func:`llm_pass_flops` that costs least for this batch, as ``MoWEAudioLLM.forward`` takes
    it: False (one padded batch), True (one packed row) or ``"groups"``; ties keep the earlier, simpler
       one."""
    kw = {
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "varlen_attention": varlen_attention,
        "group_padding": group_padding,
    }
    cost = {
        choice: llm_pass_flops(attention_mask, layout=name, **kw)
        for choice, name in ((False, "padded"), (True, "packed"), ("groups", "groups"))
    }
    return min(cost, key=cost.get)


def llm_sizes(llm) -> dict:
    """The sizes :func:`cheapest_llm_layout` needs, read from a transformers causal LM's config."""
    cfg = llm.config
    d = getattr(cfg, "hidden_size", None) or cfg.n_embd
    f = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * d
    varlen = "flash" in str(getattr(cfg, "_attn_implementation", "") or "")
    return {"hidden_size": d, "intermediate_size": f, "varlen_attention": varlen}


def grouped_llm_pass(
    llm, merged: MergedInputs, padding_side: str, *, num_items_in_batch=None
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """``llm`` over groups of similarly long rows of ``merged``, each trimmed to its own longest row.

    Returns the loss (the mean over all label tokens of the batch, as one padded pass gives: each group's
    summed loss is divided by the batch's label count, or by ``num_items_in_batch`` when given: the count of a
    larger global batch this one is part of) and logits ``(b, T, V)``, zeros on padding.
    """
    mask, labels = merged.attention_mask, merged.labels
    b, t = mask.shape
    host = mask.sum(1).tolist()
    items = None if labels is None else (labels[:, 1:] != IGNORE_INDEX).sum()
    if num_items_in_batch is not None:
        items = num_items_in_batch
    loss, logits = None, None
    for group in length_groups(host, resolve_bucket_padding("auto", mask.device)):
        idx = torch.tensor(group, device=mask.device)
        width = max(host[i] for i in group)
        cols = slice(t - width, t) if padding_side == "left" else slice(0, width)
        kw = {} if labels is None else {"labels": labels[idx, cols], "num_items_in_batch": items}
        out = llm(
            inputs_embeds=merged.inputs_embeds[idx, cols],
            attention_mask=mask[idx, cols],
            position_ids=merged.position_ids[idx, cols],
            use_cache=False,
            **kw,
        )
        if logits is None:
            logits = out.logits.new_zeros(b, t, out.logits.shape[-1])
        logits[idx, cols] = out.logits
        if out.loss is not None:
            loss = out.loss if loss is None else loss + out.loss
    return loss, logits

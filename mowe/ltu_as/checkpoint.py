"""Load and write LTU-AS's released checkpoint format (YuanGongND/ltu, e.g. ``ltuas_long_noqa_a6.bin``).

The official file is a PEFT-wrapped LLaMA's state dict (adapter name ``default``):

* ``base_model.model.model.audio_encoder.{time_tr,layer_tr}.*``: the TLTR's two Whisper-style residual blocks
  (``attn.query``/``attn.key`` (no bias)/``attn.value``/``attn.out``, ``attn_ln``, ``mlp.0``, ``mlp.2``,
  ``mlp_ln``);
* ``base_model.model.model.audio_proj.1.*``: the Linear after the affine-free LayerNorm ``audio_proj.0``;
* ``base_model.model.model.layers.{i}.self_attn.{q,v}_proj.lora_{A,B}.default.weight``: LoRA;
* possibly the LLM's own weights (mapped into the LLM) and buffers the official save keeps
  (``...position_ids``, ``...rotary_emb.inv_freq``), accepted and ignored.

Every other key, and every missing one, is a :class:`~mowe.errors.CheckpointError` naming them. mowe's TLTR
packs q/k/v into one ``in_proj_weight``/``in_proj_bias``; the official key projection has no bias, so that
slice is zero.

Example:
    >>> ckpt = "ltuas_long_noqa_a6.bin"
    >>> model = from_ltu_as(ckpt, whisper="large-v1.pt", llm="vicuna_ltuas/")  # doctest: +SKIP
    >>> to_ltu_as(model, "back.bin")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import torch

from mowe.builders import build_encoder
from mowe.checkpoints.placeholder import load_llm_tokenizer, pick_audio_token_id
from mowe.config import LLMConfig
from mowe.errors import CheckpointError
from mowe.hub import load_torch_file
from mowe.ltu_as.preset import ltu_as
from mowe.model import MoWEAudioLLM
from mowe.state_dicts import alias_groups, check_aliases, peft_base_key

__all__ = ["from_ltu_as", "load_ltu_as", "load_ltu_as_state_dict", "ltu_as_state_dict", "to_ltu_as"]

PREFIX = "base_model.model.model."
_TLTR = {"time_tr": "connector.time_block.", "layer_tr": "connector.layer_block."}
# official name inside a residual block -> mowe name inside _PreNormBlock (q/k/v handled apart: mowe packs
# them)
_BLOCK = {
    "attn.out.weight": "attn.out_proj.weight",
    "attn.out.bias": "attn.out_proj.bias",
    "attn_ln.weight": "attn_norm.weight",
    "attn_ln.bias": "attn_norm.bias",
    "mlp.0.weight": "mlp.0.weight",
    "mlp.0.bias": "mlp.0.bias",
    "mlp.2.weight": "mlp.2.weight",
    "mlp.2.bias": "mlp.2.bias",
    "mlp_ln.weight": "mlp_norm.weight",
    "mlp_ln.bias": "mlp_norm.bias",
}
_QKV = ("attn.query.weight", "attn.query.bias", "attn.key.weight", "attn.value.weight", "attn.value.bias")
_PROJ = {"audio_proj.1.weight": "connector.proj.weight", "audio_proj.1.bias": "connector.proj.bias"}
_IGNORED = re.compile(r"(position_ids|rotary_emb\.inv_freq)$")


def _official_audio_keys() -> list[str]:
    keys = [f"{PREFIX}audio_encoder.{blk}.{name}" for blk in _TLTR for name in (*_QKV, *_BLOCK)]
    return keys + [PREFIX + k for k in _PROJ]


def ltu_as_state_dict(model) -> dict[str, torch.Tensor]:
    """The official keys of ``model`` (a faithful :func:`mowe.ltu_as.ltu_as` model): TLTR, projection, LoRA.

    Raises:
        CheckpointError: the model has parts the official format cannot hold (a TLTR bottleneck, a key bias).
    """
    sd = model.state_dict()
    if any(k.startswith("connector.down.") for k in sd):
        raise CheckpointError(
            "this TLTR has a hidden_dim bottleneck (connector.down.*); LTU-AS's format has none"
        )
    out = {}
    for blk, mine in _TLTR.items():
        w, b = sd[mine + "attn.in_proj_weight"], sd[mine + "attn.in_proj_bias"]
        d = w.shape[1]
        if bool(b[d : 2 * d].any()):
            raise CheckpointError(
                f"{mine}attn.in_proj_bias has a non-zero key bias; LTU-AS's key projection has no "
                f"bias (build the TLTR with key_bias=False)"
            )
        off = f"{PREFIX}audio_encoder.{blk}."
        out.update(
            {
                off + "attn.query.weight": w[:d],
                off + "attn.query.bias": b[:d],
                off + "attn.key.weight": w[d : 2 * d],
                off + "attn.value.weight": w[2 * d :],
                off + "attn.value.bias": b[2 * d :],
            }
        )
        out.update({off + theirs: sd[mine + ours] for theirs, ours in _BLOCK.items()})
    out.update({PREFIX + theirs: sd[ours] for theirs, ours in _PROJ.items()})
    out.update({k[len("llm.") :]: v for k, v in sd.items() if k.startswith("llm.") and ".lora_" in k})
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def to_ltu_as(model, path: str | os.PathLike) -> None:
    """Write ``model``'s TLTR, projection and LoRA weights as an official LTU-AS checkpoint
    (``torch.save``)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(ltu_as_state_dict(model), path)


def load_ltu_as_state_dict(model, state: dict[str, torch.Tensor], *, where: str = "checkpoint") -> None:
    """Load an official LTU-AS state dict into ``model`` strictly (see the module docstring for the keys)."""
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for blk, mine in _TLTR.items():
        off = f"{PREFIX}audio_encoder.{blk}."
        got = {n: state.get(off + n) for n in _QKV}
        if all(v is not None for v in got.values()):
            w = torch.cat([got["attn.query.weight"], got["attn.key.weight"], got["attn.value.weight"]])
            key_bias = torch.zeros_like(got["attn.query.bias"])
            mapped[mine + "attn.in_proj_weight"] = w
            mapped[mine + "attn.in_proj_bias"] = torch.cat(
                [got["attn.query.bias"], key_bias, got["attn.value.bias"]]
            )
            used.update(off + n for n in _QKV)
        for theirs, ours in _BLOCK.items():
            if off + theirs in state:
                mapped[mine + ours] = state[off + theirs]
                used.add(off + theirs)
    for theirs, ours in _PROJ.items():
        if PREFIX + theirs in state:
            mapped[ours] = state[PREFIX + theirs]
            used.add(PREFIX + theirs)
    lora_own = {k for k in own if k.startswith("llm.") and ".lora_" in k}
    for k, v in state.items():
        if k in used or _IGNORED.search(k):
            continue
        # LLM keys: LoRA as they are; base weights also under peft's ``base_layer`` of a wrapped Linear.
        cand = peft_base_key("llm." + k, own)
        if cand is not None:
            mapped[cand] = v
            used.add(k)
    unexpected = sorted(k for k in state if k not in used and not _IGNORED.search(k))
    missing = sorted(k for k in _official_audio_keys() if k not in state)
    missing += sorted(k[len("llm.") :] for k in lora_own if k not in mapped)
    if unexpected or missing:
        raise CheckpointError(
            f"{where}: not an LTU-AS checkpoint for this model: {len(unexpected)} unexpected keys "
            f"{unexpected[:8]}, {len(missing)} missing keys {missing[:8]}"
        )
    bad = sorted(k for k, v in mapped.items() if v.shape != own[k].shape)
    if bad:
        shapes = [(k, tuple(mapped[k].shape), tuple(own[k].shape)) for k in bad[:5]]
        raise CheckpointError(f"{where}: shape mismatch (key, checkpoint, model) for {shapes}")
    # LLM weights the file repeats under several names (tied embeddings) must agree: they load into one
    # tensor.
    check_aliases(mapped, alias_groups(model), where=where, current=own)
    model.load_state_dict(mapped, strict=False)


def from_ltu_as(
    checkpoint: str | os.PathLike,
    *,
    whisper: str,
    llm: str,
    dtype: torch.dtype = torch.float32,
    audio_token_id: int | None = None,
    faithful: bool = True,
    tokenizer: Any = None,
):
    """Build the LTU-AS model (:func:`mowe.ltu_as.ltu_as`) and load the released checkpoint into it.

    Args:
        checkpoint: the official ``.bin`` (read with ``weights_only=True``).
        whisper: openai-whisper ``.pt`` (LTU-AS used ``large-v1.pt``), or a transformers id / folder.
        llm: the LLaMA/Vicuna folder or hub id the checkpoint was trained on.
        dtype: the LLM's and the connector's dtype (float32 by default, as a parity check needs).
        audio_token_id: the placeholder id in prompts. Default: ``<|audio|>`` added to the LLM's tokenizer as
            a special token (in place; an id past its vocabulary, which no text produces), or, when the LLM
            folder has no tokenizer, the first id past the LLM's vocabulary. The LLM gets no row for it (its
            embedding is never read), so the logits keep LTU-AS's vocabulary.
        faithful: the preset's ``faithful`` switch (see :func:`mowe.ltu_as.ltu_as`).
        tokenizer: the LLM's tokenizer (or its folder / hub id) when it is not in ``llm``.

    Returns:
        A :class:`mowe.MoWEAudioLLM` in eval mode.

    Raises:
        CheckpointError: the file is unreadable or does not fit (keys named). AudioPlaceholderError: an
            ``audio_token_id`` that the tokenizer's text produces.
    """
    return load_ltu_as(
        checkpoint,
        whisper=whisper,
        llm=llm,
        dtype=dtype,
        audio_token_id=audio_token_id,
        faithful=faithful,
        tokenizer=tokenizer,
    )[0]


def load_ltu_as(checkpoint, *, whisper, llm, dtype, audio_token_id, faithful, tokenizer):
    """``(model, tokenizer or None)``: :func:`from_ltu_as`, and the tokenizer holding the model's placeholder
    (what ``mowe convert ltu-as`` saves beside the model)."""
    from transformers import AutoConfig

    path = os.fspath(checkpoint)
    state = load_torch_file(path, what="LTU-AS checkpoint")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a flat state dict of tensors, got {type(state).__name__}")
    names = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
    cfg = ltu_as(faithful=faithful, whisper=os.fspath(whisper), llm=os.fspath(llm)).config
    cfg = cfg.replace(llm=LLMConfig(name_or_path=os.fspath(llm), dtype=names[dtype]))
    strong = build_encoder(cfg.strong, name="strong")
    layers = int(strong.num_layers)
    # The TLTR takes as many layers as this Whisper has blocks (32 for large); read it from the built encoder.
    connector = dataclasses.replace(cfg.connector, options={**cfg.connector.options, "num_layers_in": layers})
    tok = load_llm_tokenizer(llm, tokenizer)
    audio_token_id = pick_audio_token_id(
        tok, audio_token_id, vocab_rows=AutoConfig.from_pretrained(os.fspath(llm)).vocab_size
    )
    cfg = cfg.replace(connector=connector, audio_token_id=audio_token_id)
    model = MoWEAudioLLM.from_config(cfg, encoders={"strong": strong})
    model.connector.to(dtype)
    load_ltu_as_state_dict(
        model, {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}, where=path
    )
    return model.eval(), tok

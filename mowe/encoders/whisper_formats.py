"""Whisper checkpoints in the formats people have on disk, mapped to transformers' parameter names.

Three sources give one :class:`WhisperCheckpoint` (a ``WhisperConfig`` plus a state dict keyed like
``transformers.WhisperForConditionalGeneration``):

* a **CTranslate2** folder (``model.bin`` + ``config.json`` [+ ``tokenizer.json``]), the faster-whisper
  format;
* an **openai-whisper** ``.pt`` file (``{"dims": ..., "model_state_dict": ...}``), the format LTU-AS used
  (read by :func:`load_openai_whisper`);
* a **transformers** folder or hub id (read by ``transformers`` itself; only routed here for ``convert``).

Layout notes (CTranslate2's Whisper spec): attention projections are stacked. Self-attention keeps
``[q; k; v]`` in ``self_attention/linear_0`` and the output projection in ``linear_1``; cross-attention keeps
``q`` in ``attention/linear_0``, ``[k; v]`` in ``linear_1`` and the output in ``linear_2``. Whisper's key
projection has no bias (a key bias adds the same logit to every key of a query, which softmax cancels), so
the k rows of a stacked bias are dropped.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from mowe.encoders.ctranslate2 import CT2Model, dequantize, read_ctranslate2
from mowe.errors import CheckpointError
from mowe.hub import load_torch_file

__all__ = [
    "WhisperCheckpoint",
    "is_ctranslate2_dir",
    "is_openai_whisper_file",
    "load_openai_whisper",
    "load_whisper_checkpoint",
    "openai_whisper_to_hf",
    "whisper_special_tokens",
]

_ENC, _DEC = "model.encoder.", "model.decoder."


@dataclass
class WhisperCheckpoint:
    """A Whisper model read from any supported format.

    Attributes:
        config: the transformers ``WhisperConfig`` it corresponds to.
        state_dict: tensors keyed as in ``WhisperForConditionalGeneration`` (only ``model.encoder.*`` when
            loaded with ``encoder_only=True``); ``proj_out.weight`` is omitted (tied to the token embedding).
        generation: ``GenerationConfig`` fields (special token ids, suppress lists, alignment heads).
        tokenizer_file: a ``tokenizer.json`` shipped next to the weights, if any.
        source_format: ``"ctranslate2"`` or ``"openai"``.
    """

    config: WhisperConfig
    state_dict: dict[str, torch.Tensor]
    generation: dict = field(default_factory=dict)
    tokenizer_file: str | None = None
    source_format: str = ""


def is_ctranslate2_dir(path: str | os.PathLike) -> bool:
    """True for a folder holding a CTranslate2 ``model.bin``."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "model.bin"))


def is_openai_whisper_file(path: str | os.PathLike) -> bool:
    """True for a ``.pt`` file (openai-whisper's checkpoint format)."""
    return os.path.isfile(path) and os.fspath(path).endswith(".pt")


def whisper_special_tokens(vocab_size: int, tokenizer_file: str | None = None) -> dict:
    """Special token ids of a Whisper vocabulary, from ``tokenizer.json`` when given, else from its size.

    openai-whisper's layout: ``<|endoftext|>`` (50256 English-only, 50257 multilingual), then
    ``<|startoftranscript|>``, one token per language (``vocab_size - 51765 - multilingual``), translate,
    transcribe, startoflm, startofprev, nospeech, notimestamps, then the timestamps.
    """
    multilingual = vocab_size >= 51865
    eot = 50257 if multilingual else 50256
    n_lang = vocab_size - 51765 - int(multilingual)
    after = eot + 2 + n_lang
    ids = {
        "<|endoftext|>": eot,
        "<|startoftranscript|>": eot + 1,
        "<|translate|>": after,
        "<|transcribe|>": after + 1,
        "<|startoflm|>": after + 2,
        "<|startofprev|>": after + 3,
        "<|notimestamps|>": after + 5,
    }
    langs: dict[str, int] = {}
    if tokenizer_file:
        with open(tokenizer_file, encoding="utf-8") as f:
            added = {t["content"]: t["id"] for t in json.load(f).get("added_tokens", [])}
        ids.update({k: added[k] for k in ids if k in added})
        langs = {k: v for k, v in added.items() if ids["<|startoftranscript|>"] < v < ids["<|translate|>"]}
    out = dict(
        eot=ids["<|endoftext|>"],
        sot=ids["<|startoftranscript|>"],
        translate=ids["<|translate|>"],
        transcribe=ids["<|transcribe|>"],
        prev=ids["<|startofprev|>"],
        no_timestamps=ids["<|notimestamps|>"],
        multilingual=multilingual,
        lang_to_id=langs,
    )
    return out


def _generation_fields(vocab_size: int, tokenizer_file: str | None, extra: dict) -> dict:
    sp = whisper_special_tokens(vocab_size, tokenizer_file)
    gen = dict(
        decoder_start_token_id=sp["sot"],
        bos_token_id=sp["eot"],
        eos_token_id=sp["eot"],
        pad_token_id=sp["eot"],
        no_timestamps_token_id=sp["no_timestamps"],
        prev_sot_token_id=sp["prev"],
        is_multilingual=sp["multilingual"],
        max_length=448,
        max_initial_timestamp_index=50,
        return_timestamps=False,
    )
    if sp["multilingual"]:
        gen.update(
            lang_to_id=sp["lang_to_id"],
            task_to_id={"translate": sp["translate"], "transcribe": sp["transcribe"]},
        )
    gen.update(extra)
    return gen


def _config(**dims) -> WhisperConfig:
    sp = whisper_special_tokens(dims["vocab_size"])
    return WhisperConfig(
        **dims,
        pad_token_id=sp["eot"],
        bos_token_id=sp["eot"],
        eos_token_id=sp["eot"],
        decoder_start_token_id=sp["sot"],
        tie_word_embeddings=True,
    )


# --------------------------------------------------------------------------------------------- CTranslate2
def _ct2_layers(model: CT2Model, prefix: str) -> int:
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/weight" in model.variables:
        n += 1
    return n


def _ct2_linear(
    model: CT2Model, src: str, dst: str, out: dict, dtype: torch.dtype, *, parts: tuple[str, ...] = ()
):
    """``src/weight`` and ``src/bias`` into ``dst`` names; ``parts`` splits stacked rows into several
    targets."""
    w = dequantize(model, f"{src}/weight", dtype)
    b = dequantize(model, f"{src}/bias", dtype)  # every linear and conv of Whisper's spec has one
    if not parts:
        out[f"{dst}.weight"], out[f"{dst}.bias"] = w, b
        return
    if w.shape[0] % len(parts):
        raise CheckpointError(
            f"{model.path}: variable {src}/weight has {w.shape[0]} rows, not {len(parts)} "
            f"equal stacked projections"
        )
    for name, wi, bi in zip(parts, w.chunk(len(parts)), b.chunk(len(parts))):
        out[f"{dst}.{name}.weight"] = wi.contiguous()
        if name != "k_proj":  # Whisper's k_proj has no bias (see module docstring)
            out[f"{dst}.{name}.bias"] = bi.contiguous()


def _ct2_norm(model: CT2Model, src: str, dst: str, out: dict, dtype: torch.dtype):
    out[f"{dst}.weight"] = dequantize(model, f"{src}/gamma", dtype)
    out[f"{dst}.bias"] = dequantize(model, f"{src}/beta", dtype)


def _ct2_block(model: CT2Model, src: str, dst: str, out: dict, dtype: torch.dtype, *, cross: bool):
    _ct2_linear(
        model,
        f"{src}/self_attention/linear_0",
        f"{dst}.self_attn",
        out,
        dtype,
        parts=("q_proj", "k_proj", "v_proj"),
    )
    _ct2_linear(model, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj", out, dtype)
    _ct2_norm(model, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm", out, dtype)
    if cross:
        _ct2_linear(model, f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj", out, dtype)
        _ct2_linear(
            model, f"{src}/attention/linear_1", f"{dst}.encoder_attn", out, dtype, parts=("k_proj", "v_proj")
        )
        _ct2_linear(model, f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj", out, dtype)
        _ct2_norm(model, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm", out, dtype)
    _ct2_linear(model, f"{src}/ffn/linear_0", f"{dst}.fc1", out, dtype)
    _ct2_linear(model, f"{src}/ffn/linear_1", f"{dst}.fc2", out, dtype)
    _ct2_norm(model, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm", out, dtype)


def _load_ctranslate2(folder: str, *, dtype: torch.dtype, encoder_only: bool) -> WhisperCheckpoint:
    keep = (lambda n: n.startswith("encoder/")) if encoder_only else None
    m = read_ctranslate2(folder, select=keep, expect_spec="WhisperSpec")
    out: dict[str, torch.Tensor] = {}
    _ct2_linear(m, "encoder/conv1", _ENC + "conv1", out, dtype)
    _ct2_linear(m, "encoder/conv2", _ENC + "conv2", out, dtype)
    out[_ENC + "embed_positions.weight"] = dequantize(m, "encoder/position_encodings/encodings", dtype)
    n_enc = _ct2_layers(m, "encoder")
    if n_enc == 0:
        m.get("encoder/layer_0/ffn/linear_0/weight")  # raises, naming the variable
    for i in range(n_enc):
        _ct2_block(m, f"encoder/layer_{i}", f"{_ENC}layers.{i}", out, dtype, cross=False)
    _ct2_norm(m, "encoder/layer_norm", _ENC + "layer_norm", out, dtype)
    if "decoder/embeddings/weight" not in m.shapes:
        m.get("decoder/embeddings/weight")  # raises, naming the variable
    vocab, d = m.shapes["decoder/embeddings/weight"]
    dims = dict(
        vocab_size=int(vocab),
        d_model=int(d),
        num_mel_bins=int(m.get("encoder/conv1/weight").shape[1]),
        encoder_layers=n_enc,
        encoder_attention_heads=int(m.get("encoder/num_heads")),
        encoder_ffn_dim=int(m.get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        max_source_positions=int(m.get("encoder/position_encodings/encodings").shape[0]),
    )
    if encoder_only:
        dims.update(
            decoder_layers=1,
            decoder_attention_heads=dims["encoder_attention_heads"],
            decoder_ffn_dim=dims["encoder_ffn_dim"],
        )
    else:
        n_dec = _ct2_layers(m, "decoder")
        out[_DEC + "embed_tokens.weight"] = dequantize(m, "decoder/embeddings/weight", dtype)
        out[_DEC + "embed_positions.weight"] = dequantize(m, "decoder/position_encodings/encodings", dtype)
        for i in range(n_dec):
            _ct2_block(m, f"decoder/layer_{i}", f"{_DEC}layers.{i}", out, dtype, cross=True)
        _ct2_norm(m, "decoder/layer_norm", _DEC + "layer_norm", out, dtype)
        dims.update(
            decoder_layers=n_dec,
            decoder_attention_heads=int(m.get("decoder/num_heads")),
            decoder_ffn_dim=int(m.get("decoder/layer_0/ffn/linear_0/weight").shape[0]),
            max_target_positions=int(m.get("decoder/position_encodings/encodings").shape[0]),
        )
    extra: dict = {}
    cfg_file = os.path.join(folder, "config.json")
    if os.path.isfile(cfg_file):
        with open(cfg_file, encoding="utf-8") as f:
            ct2_cfg = json.load(f)
        # CTranslate2 keeps Whisper's decoding lists in its config.json; transformers keeps them in
        # generation.
        for src, dst in (
            ("suppress_ids", "suppress_tokens"),
            ("suppress_ids_begin", "begin_suppress_tokens"),
            ("alignment_heads", "alignment_heads"),
        ):
            if src in ct2_cfg:
                extra[dst] = ct2_cfg[src]
    tok = os.path.join(folder, "tokenizer.json")
    tok = tok if os.path.isfile(tok) else None
    config = _config(**dims)
    return WhisperCheckpoint(
        config, out, _generation_fields(config.vocab_size, tok, extra), tok, "ctranslate2"
    )


# --------------------------------------------------------------------------------------------- openai-whisper
def _load_openai(path: str, *, dtype: torch.dtype, encoder_only: bool) -> WhisperCheckpoint:
    # openai-whisper's key names -> transformers' (load_openai_whisper, below).
    config, state = load_openai_whisper(path)
    state = {k: v.to(dtype) for k, v in state.items() if not encoder_only or k.startswith(_ENC)}
    return WhisperCheckpoint(config, state, _generation_fields(config.vocab_size, None, {}), None, "openai")


def load_whisper_checkpoint(
    path: str | os.PathLike, *, dtype: torch.dtype = torch.float32, encoder_only: bool = False
) -> WhisperCheckpoint:
    """Read a CTranslate2 Whisper folder or an openai-whisper ``.pt`` file.

    Args:
        path: the folder or file.
        dtype: dtype of the returned floating tensors (quantised weights are dequantised first).
        encoder_only: read only the encoder's tensors (and what the config needs).

    Raises:
        CheckpointError: unknown format, unknown spec, truncated file or a missing variable (named).
    """
    path = os.fspath(path)
    if is_ctranslate2_dir(path):
        return _load_ctranslate2(path, dtype=dtype, encoder_only=encoder_only)
    if is_openai_whisper_file(path):
        return _load_openai(path, dtype=dtype, encoder_only=encoder_only)
    raise CheckpointError(f"{path}: neither a CTranslate2 folder (model.bin) nor an openai-whisper .pt file")


# ------------------------------------------------------------------------------------ openai-whisper .pt
# files
_DIMS = {
    "n_mels": "num_mel_bins",
    "n_audio_ctx": "max_source_positions",
    "n_audio_state": "d_model",
    "n_audio_head": "encoder_attention_heads",
    "n_audio_layer": "encoder_layers",
    "n_vocab": "vocab_size",
    "n_text_ctx": "max_target_positions",
    "n_text_head": "decoder_attention_heads",
    "n_text_layer": "decoder_layers",
}
# openai module names -> transformers module names (the block-level part of a key).
_RENAMES = [
    (r"^(encoder|decoder)\.blocks\.(\d+)\.", r"model.\1.layers.\2."),
    (r"\.attn\.query\.", ".self_attn.q_proj."),
    (r"\.attn\.key\.", ".self_attn.k_proj."),
    (r"\.attn\.value\.", ".self_attn.v_proj."),
    (r"\.attn\.out\.", ".self_attn.out_proj."),
    (r"\.cross_attn\.query\.", ".encoder_attn.q_proj."),
    (r"\.cross_attn\.key\.", ".encoder_attn.k_proj."),
    (r"\.cross_attn\.value\.", ".encoder_attn.v_proj."),
    (r"\.cross_attn\.out\.", ".encoder_attn.out_proj."),
    (r"\.attn_ln\.", ".self_attn_layer_norm."),
    (r"\.cross_attn_ln\.", ".encoder_attn_layer_norm."),
    (r"\.mlp\.0\.", ".fc1."),
    (r"\.mlp\.2\.", ".fc2."),
    (r"\.mlp_ln\.", ".final_layer_norm."),
    (r"^encoder\.conv(\d)\.", r"model.encoder.conv\1."),
    (r"^encoder\.ln_post\.", "model.encoder.layer_norm."),
    (r"^encoder\.positional_embedding$", "model.encoder.embed_positions.weight"),
    (r"^decoder\.positional_embedding$", "model.decoder.embed_positions.weight"),
    (r"^decoder\.token_embedding\.", "model.decoder.embed_tokens."),
    (r"^decoder\.ln\.", "model.decoder.layer_norm."),
]


def openai_whisper_to_hf(checkpoint: dict, *, where: str = "checkpoint") -> tuple[WhisperConfig, dict]:
    """An openai-whisper checkpoint ``{"dims": ..., "model_state_dict": ...}`` -> transformers config and
    keys.

    Tensors keep their stored values and dtype (the positional tables included); ``where`` names the file in
    errors.
    """
    if not isinstance(checkpoint, dict) or "dims" not in checkpoint or "model_state_dict" not in checkpoint:
        raise CheckpointError(
            f"{where}: not an openai-whisper checkpoint (needs 'dims' and 'model_state_dict')"
        )
    dims = dict(checkpoint["dims"])
    text_state = dims.pop("n_text_state", dims.get("n_audio_state"))
    if text_state != dims.get("n_audio_state"):  # transformers' Whisper has one width for both halves
        raise CheckpointError(
            f"{where}: n_text_state {text_state} != n_audio_state {dims.get('n_audio_state')}"
        )
    unknown = sorted(set(dims) - set(_DIMS))
    if unknown:
        raise CheckpointError(f"{where}: unknown dims {unknown}")
    kw = {_DIMS[k]: int(v) for k, v in dims.items()}
    kw.update(encoder_ffn_dim=4 * kw["d_model"], decoder_ffn_dim=4 * kw["d_model"])
    n_vocab = kw["vocab_size"]
    # Special-token ids of openai's two vocabularies (English-only 51864, multilingual 51865 and up).
    eot = 50256 if n_vocab == 51864 else 50257
    kw.update(eos_token_id=eot, pad_token_id=eot, bos_token_id=eot, decoder_start_token_id=eot + 1)
    config = WhisperConfig(**kw)
    state = {}
    for key, value in checkpoint["model_state_dict"].items():
        new = key
        for pattern, repl in _RENAMES:
            new = re.sub(pattern, repl, new)
        if not new.startswith("model."):
            raise CheckpointError(f"{where}: unknown openai-whisper key {key!r}")
        state[new] = value
    return config, state


def load_openai_whisper(path: str | os.PathLike, *, model: bool = False):
    """Read an openai-whisper ``.pt`` (``weights_only=True``).

    Returns ``(WhisperConfig, state dict in transformers naming)``, or with ``model=True`` a float32
    ``WhisperForConditionalGeneration`` holding every stored tensor (decoder included).
    """
    path = os.fspath(path)
    ckpt = load_torch_file(path, what="openai-whisper checkpoint")
    config, state = openai_whisper_to_hf(ckpt, where=path)
    if not model:
        return config, state
    hf = WhisperForConditionalGeneration(config)
    try:
        missing, unexpected = hf.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise CheckpointError(f"{path}: weights do not match its dims ({e})") from e
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to the token embedding
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match its dims (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    hf.tie_weights()
    return hf.float().eval()

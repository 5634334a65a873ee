"""SALMONN's released checkpoint format (bytedance/SALMONN): load it into mowe, and write it back.

The official training code saves ``{"model": state_dict}`` holding only what trains, under these names:

* ``ln_speech.{weight,bias}``, ``ln_audio.{weight,bias}``: the LayerNorms on Whisper and BEATs features;
* ``speech_query_tokens`` ``(1, q, h)`` and ``speech_Qformer.bert.*``: the window Q-Former, a BERT whose
  embeddings keep only ``embeddings.LayerNorm`` and whose layers keep ``attention``, ``crossattention``,
  ``intermediate_query`` and ``output_query`` (every layer cross-attends);
* ``speech_llama_proj.{weight,bias}``: the Linear into the LLM;
* ``llama_model.base_model.model.<module>.lora_{A,B}.default.weight``: PEFT LoRA on the LLM (``q_proj`` and
  ``v_proj`` for LLaMA; files from PEFT before 0.3 lack the ``.default`` adapter name, and load too);
* buffers the official save keeps but nothing reads: ``speech_Qformer.bert.embeddings.position_ids`` and the
  LLaMA layers' ``rotary_emb.inv_freq``. They are accepted and ignored;
* the other names of frozen tied tensors: the save drops frozen parameters by the names ``named_parameters()``
  lists, which names a tied tensor once, so BEATs' relative-attention table of layers 1+ (layer 0's, shared)
  stays as ``beats.encoder.layers.{i}.self_attn.relative_attention_bias.weight`` (11 keys for 12 layers). Such
  ``beats.*``, ``speech_encoder.*`` and ``llama_model.*`` copies must equal the tensor loaded from the BEATs /
  Whisper / LLM given (:func:`mowe.state_dicts.check_frozen_copies`); one that does not is an error naming it.

Whisper, BEATs and the base LLM are frozen there and not in the file: :func:`from_salmonn` takes them by path.
The result is the :func:`mowe.salmonn.salmonn` ``faithful=True`` layout, sized from the checkpoint.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mowe.checkpoints.placeholder import seed_vocabulary
from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig, LoRAConfig, MoWEConfig, RouterConfig
from mowe.connectors.norm import PerStreamNorm
from mowe.connectors.qformer import WindowQFormerConnector
from mowe.encoders.beats import BEATsEncoder
from mowe.errors import CheckpointError, MoWEInputError
from mowe.model import MoWEAudioLLM
from mowe.state_dicts import check_frozen_copies, peft_base_key
from mowe.tensors import DTYPES

__all__ = ["from_salmonn", "load_salmonn", "salmonn_config", "to_salmonn"]

PAD_TOKEN = "[PAD]"  # the pad token the official code adds to the LLaMA tokenizer (and a row to the LLM)
_QF = "speech_Qformer.bert."
_LLM = "llama_model."
_IGNORED = re.compile(r"(^|\.)position_ids$|(^|\.)rotary_emb\.inv_freq$")
_LORA_NO_ADAPTER = re.compile(r"\.(lora_[AB])\.weight$")
_LAYER = re.compile(re.escape(_QF) + r"encoder\.layer\.(\d+)\.")

# Per Q-Former layer: official sub-module -> mowe sub-module, for the parts that map one to one.
_LAYER_PARTS = {
    "attention.output.dense": "self_attn.out_proj",
    "attention.output.LayerNorm": "self_norm",
    "crossattention.output.dense": "cross_attn.out_proj",
    "crossattention.output.LayerNorm": "cross_norm",
    "intermediate_query.dense": "ffn.0",
    "output_query.dense": "ffn.2",
    "output_query.LayerNorm": "ffn_norm",
}


# --------------------------------------------------------------------------------------------- name mapping
def _connector_to_official(sd: Mapping[str, torch.Tensor], connector: nn.Module) -> dict[str, torch.Tensor]:
    """mowe connector state (keys without the ``connector.`` prefix) -> official names."""
    out = {
        "ln_speech.weight": sd["input_norm.norms.0.weight"],
        "ln_speech.bias": sd["input_norm.norms.0.bias"],
        "ln_audio.weight": sd["input_norm.norms.1.weight"],
        "ln_audio.bias": sd["input_norm.norms.1.bias"],
        "speech_query_tokens": sd["queries"].unsqueeze(0),
        _QF + "embeddings.LayerNorm.weight": sd["query_norm.weight"],
        _QF + "embeddings.LayerNorm.bias": sd["query_norm.bias"],
        "speech_llama_proj.weight": sd["proj.weight"],
        "speech_llama_proj.bias": sd["proj.bias"],
    }
    for i, layer in enumerate(connector.layers):
        off, own = f"{_QF}encoder.layer.{i}.", f"layers.{i}."
        for name, attn in (("attention", "self_attn"), ("crossattention", "cross_attn")):
            mha = getattr(layer, attn)
            if mha._qkv_same_embed_dim:
                weights = sd[f"{own}{attn}.in_proj_weight"].chunk(3)
            else:
                weights = [sd[f"{own}{attn}.{p}_proj_weight"] for p in "qkv"]
            for part, w, b in zip(
                ("query", "key", "value"), weights, sd[f"{own}{attn}.in_proj_bias"].chunk(3)
            ):
                out[f"{off}{name}.self.{part}.weight"], out[f"{off}{name}.self.{part}.bias"] = w, b
        for theirs, ours in _LAYER_PARTS.items():
            for p in ("weight", "bias"):
                out[f"{off}{theirs}.{p}"] = sd[f"{own}{ours}.{p}"]
    return out


def _official_to_connector(
    state: Mapping[str, torch.Tensor], connector: nn.Module
) -> dict[str, torch.Tensor]:
    """Official names -> mowe connector state (the inverse of :func:`_connector_to_official`)."""
    out = {
        "input_norm.norms.0.weight": state["ln_speech.weight"],
        "input_norm.norms.0.bias": state["ln_speech.bias"],
        "input_norm.norms.1.weight": state["ln_audio.weight"],
        "input_norm.norms.1.bias": state["ln_audio.bias"],
        "queries": state["speech_query_tokens"].reshape(state["speech_query_tokens"].shape[-2:]),
        "query_norm.weight": state[_QF + "embeddings.LayerNorm.weight"],
        "query_norm.bias": state[_QF + "embeddings.LayerNorm.bias"],
        "proj.weight": state["speech_llama_proj.weight"],
        "proj.bias": state["speech_llama_proj.bias"],
    }
    for i, layer in enumerate(connector.layers):
        off, own = f"{_QF}encoder.layer.{i}.", f"layers.{i}."
        for name, attn in (("attention", "self_attn"), ("crossattention", "cross_attn")):
            w = [state[f"{off}{name}.self.{p}.weight"] for p in ("query", "key", "value")]
            b = [state[f"{off}{name}.self.{p}.bias"] for p in ("query", "key", "value")]
            if getattr(layer, attn)._qkv_same_embed_dim:
                out[f"{own}{attn}.in_proj_weight"] = torch.cat(w)
            else:
                for p, wp in zip("qkv", w):
                    out[f"{own}{attn}.{p}_proj_weight"] = wp
            out[f"{own}{attn}.in_proj_bias"] = torch.cat(b)
        for theirs, ours in _LAYER_PARTS.items():
            for p in ("weight", "bias"):
                out[f"{own}{ours}.{p}"] = state[f"{off}{theirs}.{p}"]
    return out


def _lora_to_official(model: nn.Module) -> dict[str, torch.Tensor]:
    return {_LLM + k: v for k, v in model.llm.state_dict().items() if "lora_" in k}


def _normalise_lora_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """PEFT < 0.3 saved ``...lora_A.weight``; later versions ``...lora_A.default.weight``: use the latter."""
    return {
        (_LORA_NO_ADAPTER.sub(r".\1.default.weight", k) if k.startswith(_LLM) else k): v
        for k, v in state.items()
    }


# --------------------------------------------------------------------------------------------- reading
def _read_state(checkpoint: str | os.PathLike | Mapping) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(checkpoint, Mapping):
        ckpt, where = checkpoint, "<checkpoint dict>"
    else:
        where = os.fspath(checkpoint)
        if not os.path.isfile(where):
            raise CheckpointError(f"SALMONN checkpoint {where} does not exist or is not a file")
        try:
            ckpt = torch.load(where, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(
                f"SALMONN checkpoint {where} could not be read with weights_only=True "
                f"(truncated, not a torch.save file, or holding code objects): {e}"
            ) from e
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model"), Mapping):
        found = sorted(map(str, ckpt)) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise CheckpointError(
            f"SALMONN checkpoint {where} must be a dict with a 'model' state dict; found {found}"
        )
    state = {k: v for k, v in ckpt["model"].items() if not _IGNORED.search(k)}
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"SALMONN checkpoint {where}: {bad[:5]} are not tensors")
    return _normalise_lora_names(state), where


def _where(path: str | os.PathLike) -> str:
    """Local files and folders as absolute paths (a saved model reloads from any directory); hub ids as
    given."""
    path = os.fspath(path)
    return os.path.abspath(path) if os.path.exists(path) else path


def _need(state: Mapping[str, torch.Tensor], key: str, where: str) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(f"SALMONN checkpoint {where} lacks {key!r}")
    return state[key]


def salmonn_config(
    checkpoint: str | os.PathLike | Mapping,
    *,
    whisper: str,
    beats: str,
    llm: str,
    num_heads: int = 12,
    lora_alpha: int = 32,
    lora_dropout: float = 0.1,
    window: int = 17,
    audio_token_id: int | None = None,
    dtype: str = "float32",
    tokenizer: Any = None,
) -> MoWEConfig:
    """The :class:`MoWEConfig` of a SALMONN checkpoint: the ``salmonn(faithful=True)`` layout, with the
    Q-Former and LoRA sizes read from the file (``num_heads`` and ``lora_alpha`` are not stored in it:
       BERT-base's 12 heads
    and SALMONN's alpha 32 are the defaults). Arguments as :func:`from_salmonn` (a tokenizer given or found in
    the LLM folder gets ``[PAD]`` and ``<|audio|>`` added, in place)."""
    state, where = _read_state(checkpoint)
    _, vocab_size, audio_token_id = seed_vocabulary(llm, tokenizer, audio_token_id, pad_token=PAD_TOKEN)
    return _config_from_state(
        state,
        where,
        whisper=whisper,
        beats=beats,
        llm=llm,
        num_heads=num_heads,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        window=window,
        audio_token_id=audio_token_id,
        dtype=dtype,
        vocab_size=vocab_size,
    )


def _config_from_state(
    state: Mapping[str, torch.Tensor],
    where: str,
    *,
    whisper: str,
    beats: str,
    llm: str,
    num_heads: int,
    lora_alpha: int,
    lora_dropout: float,
    window: int,
    audio_token_id: int,
    dtype: str,
    vocab_size: int | None,
) -> MoWEConfig:
    queries = _need(state, "speech_query_tokens", where)
    if queries.dim() != 3 or queries.shape[0] != 1:
        raise CheckpointError(
            f"SALMONN checkpoint {where}: speech_query_tokens has shape {tuple(queries.shape)}, "
            f"expected (1, queries, hidden)"
        )
    layers = sorted({int(m.group(1)) for k in state if (m := _LAYER.match(k))})
    if not layers or layers != list(range(len(layers))):
        raise CheckpointError(f"SALMONN checkpoint {where}: Q-Former layers {layers} are not 0..n-1")
    ffn = _need(state, f"{_QF}encoder.layer.0.intermediate_query.dense.weight", where).shape[0]
    dims = [int(_need(state, f"{n}.weight", where).shape[0]) for n in ("ln_speech", "ln_audio")]
    lora_a = {k: v for k, v in state.items() if k.startswith(_LLM) and ".lora_A." in k}
    if not lora_a:
        raise CheckpointError(f"SALMONN checkpoint {where} holds no LoRA weights (llama_model.*.lora_A.*)")
    ranks = {int(v.shape[0]) for v in lora_a.values()}
    if len(ranks) != 1:
        raise CheckpointError(
            f"SALMONN checkpoint {where}: LoRA ranks differ across modules: {sorted(ranks)}"
        )
    targets = tuple(sorted({k.split(".lora_A.")[0].rsplit(".", 1)[-1] for k in lora_a}))
    if dtype not in DTYPES:
        raise MoWEInputError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    span = {"min_seconds": 1.0, "max_seconds": 30.0}  # the official loader's clip span
    whisper, beats, llm = (_where(p) for p in (whisper, beats, llm))
    qf = {
        "hidden_dim": int(queries.shape[2]),
        "num_heads": num_heads,
        "num_layers": len(layers),
        "num_queries": int(queries.shape[1]),
        "window": window,
        "stride": window,
        "ffn_dim": int(ffn),
        "stream_dims": dims,
        "partial_window": "drop",
    }
    return MoWEConfig(
        strong=EncoderConfig("whisper", name_or_path=whisper, full_window=True, **span),
        weak_encoders={"beats": EncoderConfig("beats", name_or_path=beats, **span)},
        router=RouterConfig(data_dependent=False, top_k=1, aux_loss_weight=0.0, align="pad"),
        connector=ConnectorConfig("qformer", qf),
        llm=LLMConfig(name_or_path=llm, dtype=dtype, vocab_size=vocab_size),
        lora=LoRAConfig(r=ranks.pop(), alpha=lora_alpha, dropout=lora_dropout, target_modules=targets),
        audio_token_id=audio_token_id,
    )


def from_salmonn(
    checkpoint: str | os.PathLike | Mapping,
    *,
    whisper: str,
    beats: str,
    llm: str,
    num_heads: int = 12,
    lora_alpha: int = 32,
    lora_dropout: float = 0.1,
    window: int = 17,
    audio_token_id: int | None = None,
    dtype: str = "float32",
    tokenizer: Any = None,
):
    """Load a released SALMONN checkpoint into a :class:`~mowe.MoWEAudioLLM`.

    Args:
        checkpoint: the official ``.pth`` file (e.g. ``salmonn_v1.pth``), or its loaded dict.
        whisper: the Whisper the checkpoint was trained with (``openai/whisper-large-v2``): hub id or folder.
        beats: the official BEATs file (``BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt``).
        llm: the base LLM (Vicuna 13B v1.1 for SALMONN-13B): hub id or folder.
        num_heads: Q-Former attention heads (not stored in the file; 12 as BERT-base).
        lora_alpha: LoRA alpha (not stored in the file; 32 as SALMONN). ``lora_dropout``: 0.1 as SALMONN.
        window: frames per Q-Former window and stride (17 = 0.333333 s at 50 Hz, as SALMONN).
        audio_token_id: the placeholder id prompts use for the audio. Default: ``<|audio|>`` added to the
            LLM's tokenizer as a special token after ``[PAD]`` (an id past the vocabulary, which no text
            produces; no LLM row), or the first id past the vocabulary when the LLM folder has no tokenizer.
        dtype: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"`` for the LLM and the trained parts.
        tokenizer: the LLM's tokenizer (or its folder / hub id) when it is not in ``llm``; ``[PAD]`` and
            ``<|audio|>`` are added to it in place.

    The LLM gets SALMONN's vocabulary: the official code adds ``[PAD]`` to the tokenizer and resizes the LLM
    to the tokenizer's length, one row more than the base LLM. That row is drawn at random on every official
    start and is in no file; mowe fills it with the mean of the other rows
    (:func:`mowe.builders.resize_vocab`), the centre of what transformers' ``mean_resizing`` draws, so a
    reload reproduces the logits, that column included.

    Returns:
        The model, in eval mode, computing what the official code computes (see :func:`mowe.salmonn.salmonn`).

    Raises:
        CheckpointError: the file is unreadable, a key is missing or not SALMONN's (named), a frozen tensor it
            repeats differs from the one given, or a shape does not fit the Whisper / BEATs / LLM given.
        AudioPlaceholderError: an ``audio_token_id`` that the tokenizer's text produces.
    """
    return load_salmonn(
        checkpoint,
        whisper=whisper,
        beats=beats,
        llm=llm,
        num_heads=num_heads,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        window=window,
        audio_token_id=audio_token_id,
        dtype=dtype,
        tokenizer=tokenizer,
    )[0]


def load_salmonn(checkpoint, *, audio_token_id, tokenizer, **kw):
    """``(model, tokenizer or None)``: :func:`from_salmonn`, and the tokenizer holding its placeholder (what
    ``mowe convert salmonn`` saves beside the model)."""
    state, where = _read_state(checkpoint)
    tok, vocab_size, audio_token_id = seed_vocabulary(
        kw["llm"], tokenizer, audio_token_id, pad_token=PAD_TOKEN
    )
    cfg = _config_from_state(state, where, audio_token_id=audio_token_id, vocab_size=vocab_size, **kw)
    try:
        model = MoWEAudioLLM.from_config(cfg)
    except MoWEInputError as e:
        raise CheckpointError(f"SALMONN checkpoint {where} does not fit the encoders / LLM given: {e}") from e
    _load_official(model, state, where)
    if kw["dtype"] != "float32":
        model.connector.to(DTYPES[kw["dtype"]])
    return model.eval(), tok


_TOWER_NAMES = {"speech_encoder.": "Whisper", "beats.": "BEATs", _LLM: "LLM"}


def _frozen_towers(model: nn.Module) -> dict[str, nn.Module]:
    """Official key prefix -> the mowe module holding the same frozen tensors under the same inner names."""
    from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFWhisperEncoder

    def find(root: nn.Module, cls: type) -> nn.Module | None:
        return next((m for m in root.modules() if isinstance(m, cls)), None)

    towers = {"speech_encoder.": find(model.strong_encoder, HFWhisperEncoder), _LLM: model.llm}
    if model.weak_encoders is not None:
        towers["beats."] = find(model.weak_encoders, BEATsEncoder)
    return {p: m for p, m in towers.items() if m is not None}


def _frozen_copies(
    model: nn.Module, state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Sort the file's keys that are not trained parts: ``({prefix: {module key: file key}}, unknown keys)``.

    The official save drops frozen parameters by the names ``named_parameters()`` lists, so the other names of
    a tied frozen tensor stay in the file (BEATs' relative-position table of layers 1+, an LLM's tied
    ``lm_head``).
    """
    towers = _frozen_towers(model)
    own = {p: m.state_dict() for p, m in towers.items()}
    copies: dict[str, dict[str, str]] = {p: {} for p in towers}
    unknown = []
    for k in state:
        if k in expected:
            continue
        prefix = next((p for p in towers if k.startswith(p)), None)
        inner = None if prefix is None else peft_base_key(k[len(prefix) :], own[prefix])
        if inner is None:
            unknown.append(k)
        else:
            copies[prefix][inner] = k
    return copies, sorted(unknown)


def _load_official(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    expected = _official_names(model)
    copies, unknown = _frozen_copies(model, state, expected)
    missing = sorted(set(expected) - set(state))
    if unknown or missing:
        raise CheckpointError(
            f"SALMONN checkpoint {where} does not match this model: "
            f"{len(unknown)} unexpected key(s) {unknown[:8]}, {len(missing)} missing {missing[:8]}"
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if state[k].shape != v.shape
    ]
    if wrong:
        raise CheckpointError(
            f"SALMONN checkpoint {where}: shapes do not fit the encoders / LLM given: {wrong[:5]}"
        )
    for prefix, module in _frozen_towers(model).items():
        check_frozen_copies(
            {inner: state[k] for inner, k in copies[prefix].items()},
            module,
            where=f"SALMONN checkpoint {where}",
            names=copies[prefix],
            prefix=prefix,
            what=f"the {_TOWER_NAMES[prefix]} given",
        )
    with torch.no_grad():
        for k, v in _official_to_connector(state, model.connector).items():
            model.connector.get_parameter(k).copy_(v)
        for k, v in expected.items():
            if k.startswith(_LLM):
                model.llm.get_parameter(k[len(_LLM) :]).copy_(state[k])


# --------------------------------------------------------------------------------------------- writing
def _check_layout(model: nn.Module) -> None:

    con = model.connector
    problems = []
    if not isinstance(con, WindowQFormerConnector):
        problems.append(f"the connector is a {type(con).__name__}, not a WindowQFormerConnector")
    else:
        if not isinstance(con.input_norm, PerStreamNorm) or len(con.input_norm.dims) != 2:
            problems.append(
                "the Q-Former lacks two per-stream LayerNorms (build with stream_dims=[whisper, beats])"
            )
        if con.partial_window != "drop":
            problems.append("the Q-Former keeps partial windows (SALMONN drops them: partial_window='drop')")
        if con.window != con.stride:
            problems.append(f"window {con.window} != stride {con.stride}")
    pool = model.weak_encoders
    if pool is None or len(pool) != 1 or pool.align != "pad" or pool.layout != "fixed":
        problems.append("the weak pool must be one encoder (BEATs) with layout='fixed' and align='pad'")
    if not any("lora_" in k for k in model.llm.state_dict()):
        problems.append("the LLM has no LoRA adapters")
    if problems:
        raise MoWEInputError(
            "to_salmonn: this model has no SALMONN equivalent: "
            + "; ".join(problems)
            + " (build it with mowe.salmonn.salmonn(faithful=True) or from_salmonn)"
        )


def _official_names(model: nn.Module) -> dict[str, torch.Tensor]:
    _check_layout(model)
    return {
        **_connector_to_official(model.connector.state_dict(), model.connector),
        **_lora_to_official(model),
    }


def to_salmonn(model: nn.Module, path: str | os.PathLike) -> None:
    """Write a model's trained parts as a SALMONN checkpoint (``{"model": state_dict}``, official names), so
    the official inference code can run it with the same Whisper, BEATs and LLM.

    Raises:
        MoWEInputError: the model is not in SALMONN's layout (``salmonn(faithful=True)`` /
        :func:`from_salmonn`).
    """
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in _official_names(model).items()}
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save({"model": state}, tmp)
    os.replace(tmp, path)

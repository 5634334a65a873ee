"""Building parts from config entries: encoders, connectors, the LLM (+ LoRA), routers.

Each builder returns a plain module; the model composes them. Hard-coded sizes live only in presets. An entry
with ``component`` set is built by import path (:mod:`mowe.components`); ``allow`` says which packages outside
mowe may be imported for that (``True``: any, for configs the caller wrote).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mowe.components import AllowList, instantiate
from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig, LoRAConfig, RouterConfig
from mowe.connectors import basic
from mowe.connectors.pooled import StatsPoolConnector
from mowe.connectors.qformer import WindowQFormerConnector
from mowe.connectors.tltr import TLTRConnector
from mowe.data.tokenizer import add_audio_token
from mowe.encoders.base import set_trainable
from mowe.encoders.beats import BEATsEncoder
from mowe.encoders.hubert import HubertEncoder
from mowe.encoders.pitch import PitchEncoder
from mowe.encoders.span import ClipSpan
from mowe.encoders.speaker import SpeakerEncoder
from mowe.encoders.whisper import WhisperEncoder
from mowe.encoders.whisper_window import WindowedWhisperEncoder
from mowe.encoders.windows import check_window_seconds
from mowe.errors import ConfigError, MoWEInputError
from mowe.gguf import GGUFHeader, check_gguf_file
from mowe.hub import check_local_source, naming_refused_pickles, resolve_file
from mowe.routers import DataDependentRouter, DataIndependentRouter, MixtureRouter, PromptAwareRouter
from mowe.tensors import DTYPES

__all__ = [
    "build_connector",
    "build_encoder",
    "build_llm",
    "build_router",
    "encoder_key",
    "llm_load_kwargs",
    "llm_tokenizer",
    "llm_vocab_size",
    "resize_vocab",
]


def build_encoder(
    cfg: EncoderConfig, *, name: str, custom: Mapping[str, nn.Module] | None = None, allow: AllowList = True
) -> nn.Module:
    """An encoder module from its config entry; ``custom`` supplies modules for ``family="custom"`` entries.

    ``min_seconds`` / ``max_seconds`` put a :class:`~mowe.encoders.span.ClipSpan` in front of the encoder;
    ``dtype`` casts its weights.
    """
    if cfg.component and not (custom and name in custom):
        enc = _build_component_encoder(cfg, name=name, allow=allow)
    else:
        enc = _build_bare_encoder(cfg, name=name, custom=custom)
    if cfg.window_seconds is not None and cfg.family != "hubert":  # the HuBERT family takes it when built
        try:
            check_window_seconds(
                enc, cfg.window_seconds, who=f"encoder {name!r}", what=f"{encoder_key(name)}.window_seconds"
            )
        except MoWEInputError as e:
            raise ConfigError(str(e)) from e
        enc.window_seconds = float(cfg.window_seconds)  # mowe cuts longer clips into windows of it
    if cfg.min_seconds > 0 or cfg.max_seconds is not None:
        enc = ClipSpan(encoder=enc, min_seconds=cfg.min_seconds, max_seconds=cfg.max_seconds)
    if cfg.dtype is not None:
        for p in enc.parameters():  # weights only: buffers such as mel filters stay float32
            p.data = p.data.to(DTYPES[cfg.dtype])
    return enc


def encoder_key(name: str) -> str:
    """The config key path of encoder ``name`` (``"model.strong"``, ``"model.weak_encoders.<name>"``):
    build-time errors name keys as the run-file and ``config.json`` loaders do."""
    return "model.strong" if name == "strong" else f"model.weak_encoders.{name}"


def _build_component_encoder(cfg: EncoderConfig, *, name: str, allow: AllowList) -> nn.Module:
    where = encoder_key(name)
    enc = instantiate(cfg.component, cfg.kwargs, where=where, allow=allow, offered={"freeze": cfg.freeze})
    if not isinstance(enc, nn.Module):
        raise ConfigError(
            f"{where}: component {cfg.component!r} built a {type(enc).__name__}, not an nn.Module"
        )
    if cfg.freeze:  # an encoder that does not take `freeze` itself
        set_trainable(enc, False)
    return enc


def _build_bare_encoder(
    cfg: EncoderConfig, *, name: str, custom: Mapping[str, nn.Module] | None
) -> nn.Module:
    fam = cfg.family
    if fam == "custom":
        if not custom or name not in custom:
            raise ConfigError(
                f"{encoder_key(name)}: family 'custom' needs the module itself, e.g. "
                f"from_config(cfg, encoders={{{name!r}: MyEncoder()}}) or from_pretrained(path, encoders=...)"
            )
        return custom[name]
    if custom and name in custom:
        return custom[name]
    if fam == "component":
        raise ConfigError(
            f"{encoder_key(name)}: family 'component' but no component: give its import path, "
            f"e.g. {{component: my_pkg.encoders.Conv50}}"
        )
    if cfg.name_or_path:
        check_local_source(cfg.name_or_path, what=f"{encoder_key(name)}.name_or_path")
    if fam == "whisper":
        kw = {
            "pad_to_30s": cfg.pad_to_30s,
            "output_all_layers": cfg.output_all_layers,
            "freeze": cfg.freeze,
            "bucket_padding": cfg.bucket_padding,
            "full_window": cfg.full_window,
        }
        if cfg.name_or_path:
            return WhisperEncoder.from_pretrained(cfg.name_or_path, **kw)
        return WhisperEncoder.from_preset(cfg.preset or "tiny", **kw, **cfg.overrides)
    if fam == "whisper_window":  # a fixed window, every block's raw output (mowe.encoders.whisper_window)
        if cfg.name_or_path:
            return WindowedWhisperEncoder.from_pretrained(cfg.name_or_path, freeze=cfg.freeze)
        return WindowedWhisperEncoder.from_preset(cfg.preset or "tiny", freeze=cfg.freeze, **cfg.overrides)
    if fam == "hubert":
        kw = {"freeze": cfg.freeze, "bucket_padding": cfg.bucket_padding}
        if cfg.window_seconds is not None:
            kw["window_seconds"] = cfg.window_seconds
        if cfg.name_or_path:
            return HubertEncoder.from_pretrained(cfg.name_or_path, **kw)
        return HubertEncoder.from_preset(cfg.preset or "hubert-base", **kw, **cfg.overrides)
    if fam == "beats":
        if cfg.name_or_path:
            return BEATsEncoder.from_checkpoint(cfg.name_or_path, freeze=cfg.freeze)
        return BEATsEncoder.from_preset(cfg.preset or "base", freeze=cfg.freeze, **cfg.overrides)
    if fam in (
        "speaker",
        "pitch",
    ):  # pretrained only: name_or_path is a weight file (pitch: or "tiny"/"full")
        load = SpeakerEncoder.from_pretrained if fam == "speaker" else PitchEncoder.from_pretrained
        where = cfg.name_or_path or (None if fam == "speaker" else cfg.preset or "tiny")
        try:
            return load(where, freeze=cfg.freeze, **cfg.overrides)
        except TypeError as e:
            raise ConfigError(
                f"{encoder_key(name)}.overrides: {cfg.overrides} do not fit family {fam!r}: {e}"
            ) from e
    raise ConfigError(
        f"{encoder_key(name)}.family: unknown family {fam!r} (whisper, whisper_window, hubert, "
        f"beats, speaker, pitch, custom)"
    )


def build_connector(cfg: ConnectorConfig, *, in_dim: int, out_dim: int, allow: AllowList = True) -> nn.Module:
    """A connector of ``cfg.kind`` (or ``cfg.component``) from ``in_dim`` features to the LLM width
    ``out_dim``."""
    if cfg.component:
        return instantiate(
            cfg.component,
            cfg.kwargs,
            where="model.connector",
            allow=allow,
            offered={"in_dim": in_dim, "out_dim": out_dim},
        )

    kinds = {
        "linear": basic.LinearConnector,
        "mlp": basic.MLPConnector,
        "stack": basic.FrameStackConnector,
        "conv": basic.ConvConnector,
        "stats": StatsPoolConnector,
    }
    if cfg.kind == "qformer":
        cls = WindowQFormerConnector
    elif cfg.kind == "tltr":
        cls = TLTRConnector
    elif cfg.kind in kinds:
        cls = kinds[cfg.kind]
    else:
        raise ConfigError(
            f"model.connector.kind: {cfg.kind!r} is unknown; choose one of "
            f"{sorted(kinds) + ['qformer', 'tltr']}"
        )
    try:
        return cls(in_dim=in_dim, out_dim=out_dim, **cfg.options)
    except TypeError as e:
        raise ConfigError(f"model.connector.options: {cfg.options} do not fit {cls.__name__}: {e}") from e


def build_router(
    cfg: RouterConfig,
    *,
    strong_dim: int,
    num_encoders: int,
    prompt_dim: int | None = None,
    allow: AllowList = True,
) -> nn.Module:
    """The routers the config enables, combined with top-k selection, or ``cfg.component``.

    ``prompt_dim``: the LLM's embedding width, needed when ``cfg.prompt_aware`` (the prompt-aware router then
    takes the data-dependent router's place). A component gets ``num_encoders``, ``top_k``, ``in_dim``
    (``strong_dim``) and ``prompt_dim`` when its constructor names them (router contract:
    :mod:`mowe.components`).
    """
    if cfg.component:
        return instantiate(
            cfg.component,
            cfg.kwargs,
            where="model.router",
            allow=allow,
            offered={
                "num_encoders": num_encoders,
                "top_k": cfg.top_k,
                "in_dim": strong_dim,
                "prompt_dim": prompt_dim,
            },
        )

    routers: list[nn.Module] = []
    if cfg.data_independent:
        routers.append(DataIndependentRouter(num_encoders=num_encoders))
    if cfg.prompt_aware:
        if prompt_dim is None:
            raise ConfigError(
                "model.router.prompt_aware: needs the LLM's embedding width: "
                "build_router(..., prompt_dim=...)"
            )
        routers.append(
            PromptAwareRouter(
                in_dim=strong_dim, prompt_dim=prompt_dim, num_encoders=num_encoders, hidden_dim=cfg.hidden_dim
            )
        )
    elif cfg.data_dependent:
        routers.append(
            DataDependentRouter(in_dim=strong_dim, num_encoders=num_encoders, hidden_dim=cfg.hidden_dim)
        )
    if not routers:
        raise ConfigError("model.router: enable data_independent, data_dependent and/or prompt_aware")
    return MixtureRouter(routers=routers, num_encoders=num_encoders, top_k=cfg.top_k, noise_std=cfg.noise_std)


def build_llm(cfg: LLMConfig, lora: LoRAConfig) -> nn.Module:
    """``AutoModelForCausalLM`` by hub id, folder or config dict, then LoRA / full / frozen training
    set-up."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if cfg.dtype not in DTYPES:
        raise ConfigError(f"model.llm.dtype: {cfg.dtype!r} is not one of {sorted(DTYPES)}")
    dtype = DTYPES[cfg.dtype]
    if cfg.name_or_path:
        check_local_source(cfg.name_or_path, what="model.llm.name_or_path")
        _check_gguf(cfg)
        with naming_refused_pickles(cfg.name_or_path, what="LLM"), _memoised_gguf_reading(cfg):
            llm = AutoModelForCausalLM.from_pretrained(
                cfg.name_or_path, **llm_load_kwargs(cfg), **_gguf_kwargs(cfg)
            )
    elif cfg.config:
        conf = dict(cfg.config)
        if "model_type" not in conf:
            raise ConfigError("model.llm.config: needs a 'model_type' (e.g. 'llama', 'qwen2', 'gpt2')")
        extra = {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
        llm = AutoModelForCausalLM.from_config(AutoConfig.for_model(**conf), dtype=dtype, **extra)
        if isinstance(cfg.device_map, str) and cfg.device_map != "auto":
            llm.to(cfg.device_map)
    else:
        raise ConfigError(
            "model.llm: set name_or_path (hub id or folder) or config (a transformers config dict)"
        )
    llm.mowe_source = cfg.name_or_path
    if cfg.vocab_size is not None:
        resize_vocab(llm, cfg.vocab_size)
    if cfg.gradient_checkpointing:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        llm.config.use_cache = False
    return apply_training_mode(llm, cfg.train, lora)


def llm_load_kwargs(cfg: LLMConfig) -> dict:
    """``AutoModelForCausalLM.from_pretrained`` keywords of an :class:`LLMConfig`: ``dtype``, and
    ``attn_implementation`` / ``revision`` / ``device_map`` when set, then ``from_pretrained_kwargs``.

    Raises:
        ConfigError: ``from_pretrained_kwargs`` repeats a key that has its own field (names it).
    """
    kw: dict = {"dtype": DTYPES[cfg.dtype]}
    for name in ("gguf_file", "attn_implementation", "revision", "device_map"):
        if getattr(cfg, name) is not None:
            kw[name] = getattr(cfg, name)
    for key in cfg.from_pretrained_kwargs:
        if key in ("dtype", "torch_dtype", "gguf_file", "attn_implementation", "revision", "device_map"):
            raise ConfigError(
                f"model.llm.from_pretrained_kwargs.{key}: set model.llm.{key.replace('torch_', '')} instead"
            )
    return {**kw, **cfg.from_pretrained_kwargs}


def _gguf_kwargs(cfg: LLMConfig) -> dict:
    """Ask transformers to dequantise a GGUF file's weights fully: LoRA, training, ``save_pretrained`` and
    ``export_llm`` need plain weights (transformers may otherwise keep them packed, which it cannot train or
       save)."""
    if cfg.gguf_file is None or "quantization_config" in cfg.from_pretrained_kwargs:
        return {}
    try:
        from transformers import GgufConfig
    except ImportError:  # a transformers without the GGUF quantizer dequantises every GGUF model on load
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


@contextlib.contextmanager
def _memoised_gguf_reading(cfg: LLMConfig):
    """During one GGUF load, memoise two pure functions of the ``gguf`` package that transformers' GGUF loader
    (the one it uses for Llama, Mistral, Qwen2, ...) calls over and over: ``get_tensor_name_map(arch,
       n_blocks)``, built
    anew for every module of the model (~400 times for SmolLM2), and ``GGUFReader(path)``, which parses the
    whole header (every token) once for the config and again for the weights. Measured on SmolLM2-135M, one
    thread: 15.2 s of CPU per load -> 7.7 s, same weights. The ``gguf`` module is restored on exit."""
    try:
        import gguf
    except ImportError:  # _check_gguf has named the missing package already
        gguf = None
    names = [
        n for n in ("get_tensor_name_map", "GGUFReader") if cfg.gguf_file is not None and hasattr(gguf, n)
    ]
    saved = {n: getattr(gguf, n) for n in names}
    for n, f in saved.items():
        setattr(gguf, n, functools.lru_cache(maxsize=8)(f))
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(gguf, n, f)


def _check_gguf(cfg: LLMConfig) -> GGUFHeader | None:
    """A GGUF file named by ``cfg`` must be a whole GGUF file (CheckpointError naming it otherwise); its
    header."""
    if cfg.gguf_file is None:
        return None
    path = resolve_file(cfg.name_or_path, cfg.gguf_file)
    return check_gguf_file(path if path is not None else os.path.join(cfg.name_or_path, cfg.gguf_file))


def llm_tokenizer(cfg: LLMConfig, *, audio_token: str | None = "<|audio|>") -> Any:
    """The tokenizer that belongs to ``cfg``'s LLM (from its folder, hub id or GGUF file), with
    ``audio_token`` added as a special token unless it is one already
       (:func:`mowe.data.tokenizer.add_audio_token`: an id no text
    produces; AudioPlaceholderError otherwise).

    The LLM needs no row for the placeholder (mowe never looks it up); ``dataclasses.replace(cfg,
    vocab_size=len(tokenizer))`` gives it one anyway, as the mean of the others (see :func:`resize_vocab`).

    Example::

        folder, file = mowe.gguf.packaged_smollm2()
        cfg = LLMConfig(name_or_path=folder, gguf_file=file)
        tok = llm_tokenizer(cfg)                       # SmolLM2's tokenizer + <|audio|>
        cfg = dataclasses.replace(cfg, vocab_size=len(tok))
    """
    from transformers import AutoTokenizer

    if not cfg.name_or_path:
        raise ConfigError(
            "model.llm.name_or_path: a tokenizer is read from the LLM's folder or hub id; none is set"
        )
    check_local_source(cfg.name_or_path, what="model.llm.name_or_path")
    _check_gguf(cfg)
    kw = {k: v for k, v in (("gguf_file", cfg.gguf_file), ("revision", cfg.revision)) if v is not None}
    tok = AutoTokenizer.from_pretrained(cfg.name_or_path, **kw)
    if audio_token is not None:
        add_audio_token(tok, audio_token)
    return tok


def llm_vocab_size(cfg: LLMConfig) -> int:
    """How many token rows the LLM that ``cfg`` names has, read from its config (a GGUF file's metadata)
    without loading its weights; ``cfg.vocab_size`` when set."""
    if cfg.vocab_size is not None:
        return cfg.vocab_size
    if not cfg.name_or_path:
        return int((cfg.config or {}).get("vocab_size", 0))
    from transformers import AutoConfig

    check_local_source(cfg.name_or_path, what="llm.name_or_path")
    header = _check_gguf(cfg)
    if header is not None and header.vocab_size is not None:  # transformers' config reader parses every token
        return int(header.vocab_size)
    kw = {k: v for k, v in (("gguf_file", cfg.gguf_file), ("revision", cfg.revision)) if v is not None}
    conf = AutoConfig.from_pretrained(cfg.name_or_path, **kw)
    return int(conf.get_text_config(decoder=True).vocab_size)


@torch.no_grad()
def resize_vocab(llm: nn.Module, vocab_size: int) -> None:
    """Give ``llm`` ``vocab_size`` token rows; rows added are the mean of the existing rows (input embedding
    and an untied output layer alike), so the result depends only on the loaded weights.

    Raises:
        ConfigError: ``vocab_size`` is smaller than the LLM's vocabulary (rows would be dropped).
    """
    old = llm.get_input_embeddings().weight.shape[0]
    if vocab_size < old:
        raise ConfigError(f"model.llm.vocab_size: {vocab_size} is smaller than the LLM's {old} token rows")
    if vocab_size == old:
        return
    llm.resize_token_embeddings(vocab_size, mean_resizing=False)
    layers = [llm.get_input_embeddings()]
    out = llm.get_output_embeddings()
    if out is not None and out.weight is not layers[0].weight:
        layers.append(out)
    for layer in layers:
        w = layer.weight
        w[old:] = w[:old].mean(dim=0, keepdim=True)
        bias = getattr(layer, "bias", None)
        if bias is not None:
            bias[old:] = bias[:old].mean()


def apply_training_mode(llm: nn.Module, train: str, lora: LoRAConfig) -> nn.Module:
    """``"lora"``: frozen base + peft adapters; ``"full"``: all weights train; ``"frozen"``: none do."""
    if train == "lora":
        from peft import LoraConfig, get_peft_model

        for p in llm.parameters():
            p.requires_grad_(False)
        pcfg = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules) if lora.target_modules else None,
            task_type="CAUSAL_LM",
        )
        source = getattr(llm, "mowe_source", None)
        llm = get_peft_model(llm, pcfg)
        llm.mowe_source = source
        return llm
    if train in ("full", "frozen"):
        for p in llm.parameters():
            p.requires_grad_(train == "full")
        return llm
    raise ConfigError(f"model.llm.train: must be 'lora', 'full' or 'frozen', got {train!r}")

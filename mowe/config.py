"""Configuration as nested frozen dataclasses, strict on unknown keys, round-tripping through JSON.

Configs describe *what to build*; the modules themselves never receive a config object (they take
keyword arguments), so every part stays usable on its own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from mowe.errors import ConfigError

__all__ = [
    "ConnectorConfig",
    "EncoderConfig",
    "LLMConfig",
    "LoRAConfig",
    "MoWEConfig",
    "RouterConfig",
    "from_dict",
    "to_dict",
]


@dataclass(frozen=True)
class EncoderConfig:
    """One encoder.

    Attributes:
        family: ``"whisper"``, ``"hubert"`` (HuBERT / wav2vec2 / WavLM), ``"beats"`` or ``"custom"`` (a module
            you pass in when building).
        name_or_path: hub id or local folder (BEATs: the checkpoint file) to load pretrained weights from.
        preset: size preset for random weights when ``name_or_path`` is unset (e.g. ``"tiny"``, ``"large-v3"``,
            ``"hubert-base"``).
        overrides: config fields that change the preset (e.g. ``{"d_model": 64}`` for a test-size model).
        freeze: keep the encoder frozen.
        pad_to_30s: Whisper only: faithful 30 s padding (True) or real-length encoding (False).
        output_all_layers: Whisper only: also return every layer's hidden states (LTU-AS).
        bucket_padding: Whisper (real-length path) and HuBERT family: encode a batch in groups of similar
            length, each wasting at most this fraction of its real audio on padding; None pads the whole batch
            to its longest clip; ``"auto"``: 0.05 on CPU, 0.25 on accelerators. Same features either way;
            only the cost changes.
        full_window: Whisper only, with ``pad_to_30s``: output all 1500 frames of the 30 s window (SALMONN).
        min_seconds: clips shorter than this are zero-padded to it before this encoder (SALMONN: 1.0).
        max_seconds: clips longer than this are cut to it before this encoder (SALMONN: 30.0); None: no cut.
    """

    family: str = "whisper"
    name_or_path: str | None = None
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    freeze: bool = True
    pad_to_30s: bool = True
    output_all_layers: bool = False
    bucket_padding: float | str | None = "auto"
    full_window: bool = False
    min_seconds: float = 0.0
    max_seconds: float | None = None


@dataclass(frozen=True)
class RouterConfig:
    """Routing over the weak pool (MoWE-Audio sec. 3: both routers, top-k, load-balance loss weight 0.1).

    ``prompt_aware``: the data-dependent router also sees the instruction (a
    :class:`~mowe.routers.PromptAwareRouter` takes its place; its prompt width is read from the LLM).
    ``layout``, ``slot_dim`` and ``align`` shape the pool's output (:class:`~mowe.encoders.WeakEncoderPool`):
    ``align="pad"`` pairs weak and strong frames by index (SALMONN) instead of resampling by time.
    """

    data_independent: bool = True
    data_dependent: bool = True
    hidden_dim: int = 256
    top_k: int = 1
    noise_std: float = 0.0
    aux_loss_weight: float = 0.1
    layout: str = "fixed"
    slot_dim: int | None = None
    prompt_aware: bool = False
    align: str = "interpolate"


@dataclass(frozen=True)
class ConnectorConfig:
    """Connector kind (``linear``, ``mlp``, ``stack``, ``conv``, ``qformer``, ``tltr``) and its keyword options."""

    kind: str = "stack"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoRAConfig:
    """LoRA through peft. ``target_modules=None`` uses peft's default for the model type (q/v projections)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] | None = None


@dataclass(frozen=True)
class LLMConfig:
    """The causal LM.

    Attributes:
        name_or_path: hub id or local folder for ``AutoModelForCausalLM.from_pretrained``.
        config: a transformers config as a dict (with ``model_type``) to build random weights instead.
        train: ``"lora"``, ``"full"`` or ``"frozen"``.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        gradient_checkpointing: enable it on the LLM.
    """

    name_or_path: str | None = None
    config: dict[str, Any] | None = None
    train: str = "lora"
    dtype: str = "float32"
    gradient_checkpointing: bool = False


@dataclass(frozen=True)
class MoWEConfig:
    """A whole MoWE audio LLM. ``weak`` maps names to encoders, in pool order (empty: base-only model)."""

    strong: EncoderConfig = field(default_factory=EncoderConfig)
    weak: dict[str, EncoderConfig] = field(default_factory=dict)
    router: RouterConfig = field(default_factory=RouterConfig)
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    audio_token_id: int = 0

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        text = json.dumps(to_dict(self), indent=2, sort_keys=False)
        if path is not None:
            with open(path, "w") as f:
                f.write(text + "\n")
        return text

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike) -> MoWEConfig:
        """Read a config from a JSON file path or a JSON string; unknown keys are an error naming the key."""
        s = str(path_or_text)
        if s.lstrip().startswith("{"):
            where = "<string>"
            try:
                data = json.loads(s)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{where}: not valid JSON ({e})") from e
        else:
            where = s
            try:
                with open(s, encoding="utf-8") as f:
                    data = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ConfigError(f"{s}: not valid UTF-8 JSON ({e})") from e
            except OSError as e:
                raise ConfigError(f"{s}: cannot read config file ({e})") from e
        return from_dict(cls, data, where=where)

    def replace(self, **changes) -> MoWEConfig:
        return dataclasses.replace(self, **changes)


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain JSON-able dicts/lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(cls: type, data: Any, *, where: str = "config") -> Any:
    """Build dataclass ``cls`` from nested dicts; unknown keys and wrong types raise ConfigError naming the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} for {cls.__name__} (known: {sorted(names)})")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {type(value).__name__}")
        vt = args[1] if args else Any
        return {k: _convert(vt, v, f"{where}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return tuple(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value

"""Configuration as nested frozen dataclasses and the ONE strict loader every config goes through.

Configs describe *what to build*; the modules themselves never receive a config object (they take
keyword arguments), so every part stays usable on its own.

The loader (:func:`from_dict`, :func:`read_config_file`, :func:`apply_overrides`) is used for model configs,
run files, ``--set`` overrides, training stages, :class:`~mowe.training.config.TrainConfig`, the BEATs
architecture dict and ``processor_config.json``. It raises exactly one :class:`~mowe.errors.ConfigError` whose
message starts with the key path (``train.seed``, ``model.router.top_k``) for each of the three mistakes:

* an unknown key (``train.sed: unknown key 'sed' ...``),
* a wrong type (``train.seed: expected int, got 'x'``),
* a bad choice for a ``typing.Literal`` field (``train.mixed_precision: expected one of ['no', 'bf16'], got
  'fp8'``).

YAML is read with a resolver that also takes ``1e-4`` (no dot) as a float, as YAML 1.2 and JSON do.

Renamed keys: a dataclass may list old key names in a ``RENAMED_KEYS`` class attribute (old -> new); the
loader reads an old key as the new one and warns (``DeprecationWarning`` naming the new key). The weak pool is
``weak_encoders`` everywhere (``MoWEConfig.weak_encoders``, ``model.weak_encoders``, the stage part
``"weak_encoders"``); configs saved with the old key ``weak`` still load.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import types
import typing
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from mowe.errors import ConfigError
from mowe.io import read_text
from mowe.validation import check_yaml_expansion, validate

__all__ = [
    "ConnectorConfig",
    "EncoderConfig",
    "InferenceConfig",
    "LLMConfig",
    "LoRAConfig",
    "MoWEConfig",
    "RouterConfig",
    "apply_overrides",
    "check_fields",
    "from_dict",
    "parse_value",
    "read_config_file",
    "to_dict",
]


@dataclass(frozen=True)
class EncoderConfig:
    """One encoder.

    Attributes:
        family: ``"whisper"``, ``"hubert"`` (HuBERT / wav2vec2 / WavLM), ``"beats"``, ``"custom"`` (a module
            you pass in when building), or ``"component"`` (set for you when ``component`` is given).
        name_or_path: hub id or local folder (BEATs: the checkpoint file) to load pretrained weights from.
        preset: size preset for random weights when ``name_or_path`` is unset (e.g. ``"tiny"``,
            ``"large-v3"``, ``"hubert-base"``).
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
        component: import path of your own encoder class or factory (``"my_pkg.encoders.Conv50"``), built with
            ``kwargs`` instead of ``family`` (see :mod:`mowe.components`); in a file, the entry's other keys
            that are not fields here become ``kwargs``.
        kwargs: keyword arguments of ``component``.
        dtype: cast the built encoder's weights to ``"float32"``, ``"bfloat16"`` or ``"float16"``; None: as
        built.
        window_seconds: HuBERT family: clips longer than this are encoded in windows of this many seconds,
            their frames stitched in time, so attention memory stays bounded (None: the family's default, 30
            s; see "Long audio" in the README). Routing per window (``RouterConfig.window_seconds``) replaces
            it.
    """

    family: str = "whisper"
    name_or_path: str | None = None
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    freeze: bool = True
    pad_to_30s: bool = True
    output_all_layers: bool = False
    bucket_padding: float | Literal["auto"] | None = "auto"
    full_window: bool = False
    min_seconds: float = 0.0
    max_seconds: float | None = None
    component: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    dtype: Literal["float32", "bfloat16", "float16"] | None = None
    window_seconds: float | None = None

    def __post_init__(self) -> None:
        # An entry built by import path says so in its saved config.json, not the default "whisper".
        if self.component is not None and self.family == "whisper":
            object.__setattr__(self, "family", "component")


@dataclass(frozen=True)
class RouterConfig:
    """Routing over the weak pool (MoWE-Audio sec. 3: both routers, top-k, load-balance loss weight 0.1).

    ``prompt_aware``: the data-dependent router also sees the instruction (a
    :class:`~mowe.routers.PromptAwareRouter` takes its place; its prompt width is read from the LLM).
    ``layout``, ``slot_dim`` and ``align`` shape the pool's output (:class:`~mowe.encoders.WeakEncoderPool`):
    ``align="pad"`` pairs weak and strong frames by index (SALMONN) instead of resampling by time.
    ``component``: import path of your own router (``{"component": "my_pkg.DurationRouter", ...kwargs}``) in
    place of the built-in ones; ``top_k``, ``aux_loss_weight``, ``layout``, ``slot_dim`` and ``align`` still
    apply (see :mod:`mowe.components` for the router contract).
    ``window_seconds``: route each window of this many seconds on its own (pooled strong features per window,
    top-k per window, the weak encoders run only on the windows that chose them); None (default): one decision
    per clip. It must be a multiple of the strong encoder's frame hop and fit every encoder's maximum input
    (see "Long audio" in the README).
    """

    data_independent: bool = True
    data_dependent: bool = True
    hidden_dim: int = 256
    top_k: int = 1
    noise_std: float = 0.0
    aux_loss_weight: float = 0.1
    layout: Literal["fixed", "topk"] = "fixed"
    slot_dim: int | None = None
    prompt_aware: bool = False
    align: Literal["interpolate", "pad"] = "interpolate"
    component: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    window_seconds: float | None = None


@dataclass(frozen=True)
class ConnectorConfig:
    """Connector kind (``linear``, ``mlp``, ``stack``, ``conv``, ``stats``, ``qformer``, ``tltr``) and its
    keyword options,
    or ``component``: the import path of your own connector, built with ``kwargs`` (see
    :mod:`mowe.components`).

    Token budget (:class:`~mowe.connectors.TokenBudget`; None: no cap): the frames are average-pooled in time
    before the connector, by the smallest factor that keeps the audio tokens within the cap, so the pooling
    grows with the audio and an hour fits a chosen LLM context.

    * ``max_tokens``: at most this many audio tokens per clip.
    * ``max_tokens_per_window``: at most this many per window of ``RouterConfig.window_seconds`` (30 s when
      routing is per clip); a clip then gets at most ``windows * max_tokens_per_window``.
    """

    kind: Literal["linear", "mlp", "stack", "conv", "stats", "qformer", "tltr"] = "stack"
    options: dict[str, Any] = field(default_factory=dict)
    component: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    max_tokens: int | None = None
    max_tokens_per_window: int | None = None


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
        gguf_file: a GGUF file inside ``name_or_path`` (``from_pretrained(name_or_path, gguf_file=...)``): the
            model and its tokenizer are read from it and dequantised to ``dtype``; saving references the file
            instead of copying its weights (:func:`mowe.gguf.packaged_smollm2` finds a packaged one).
        vocab_size: resize the token embeddings (and an untied output layer) to this many rows after loading,
            for tokens added to the tokenizer such as the ``<|audio|>`` placeholder. New rows are the mean of
            the existing ones, so a rebuild from the saved config reproduces them exactly. None: as loaded.
        config: a transformers config as a dict (with ``model_type``) to build random weights instead.
        train: ``"lora"``, ``"full"`` or ``"frozen"``.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        gradient_checkpointing: enable it on the LLM.
        attn_implementation: transformers' attention kernel (``"eager"``, ``"sdpa"``, ``"flash_attention_2"``,
        ...);
            None: transformers' default. The model's packed (varlen) path reads it.
        revision: branch, tag or commit of ``name_or_path`` on the hub.
        device_map: ``from_pretrained``'s placement (``"auto"``, ``"cpu"``, ``"cuda:0"`` or a module -> device
        map).
        from_pretrained_kwargs: any other ``from_pretrained`` keyword (e.g. ``{"low_cpu_mem_usage": true}``).
    """

    name_or_path: str | None = None
    gguf_file: str | None = None
    vocab_size: int | None = None
    config: dict[str, Any] | None = None
    train: Literal["lora", "full", "frozen"] = "lora"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None
    revision: str | None = None
    device_map: str | dict[str, Any] | None = None
    from_pretrained_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InferenceConfig:
    """How a trained model is prompted and run at test time, saved with it and applied when it is loaded.

    Attributes:
        prompt_template: the system's prompt format (``{audio}``, ``{instruction}``, optional ``{system}``),
            used by :meth:`~mowe.model.MoWEAudioLLM.processor_for`; None: the tokenizer's chat template.
        lora_scale: LoRA scale factor set by ``from_pretrained`` (SALMONN's activation trick; 1.0: as
        trained).
    """

    prompt_template: str | None = None
    lora_scale: float = 1.0


@dataclass(frozen=True)
class MoWEConfig:
    """A whole MoWE audio LLM. ``weak_encoders`` maps names to encoders, in pool order (empty: base-only
    model).

    Configs saved before the rename hold the key ``weak``; it is read as ``weak_encoders``, with a warning.
    """

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"weak": "weak_encoders"}

    strong: EncoderConfig = field(default_factory=EncoderConfig)
    weak_encoders: dict[str, EncoderConfig] = field(default_factory=dict)
    router: RouterConfig = field(default_factory=RouterConfig)
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    audio_token_id: int = 0
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        text = json.dumps(to_dict(self), indent=2, sort_keys=False)
        if path is not None:
            with open(path, "w") as f:
                f.write(text + "\n")
        return text

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike) -> MoWEConfig:
        """Read a config from a JSON file path or a JSON string; unknown keys are an error naming the key.

        A saved model's ``config.json`` also holds transformers' keys (``model_type``, ``architectures``,
        ...): read it with :func:`mowe.hf.config.read_mowe_config`, which sets them aside.
        """
        s = str(path_or_text)
        where = "<string>" if s.lstrip().startswith("{") else s
        if where == "<string>":
            try:
                data = json.loads(s)
            except json.JSONDecodeError as e:
                raise ConfigError(f"<string>: not valid JSON ({e})") from e
        else:
            data = read_config_file(s)
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
        try:
            return from_dict(cls, data, where="model")
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from e

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


# ============================================================================================ the loader
def from_dict(cls: type, data: Any, *, where: str = "config", int_bools: bool = False) -> Any:
    """Build dataclass ``cls`` from nested dicts, strictly.

    Args:
        cls: a dataclass; its type hints (``int``, ``float``, ``str``, ``bool``, ``Literal[...]``, unions,
            ``list`` / ``tuple`` / ``dict`` of those, nested dataclasses, ``Any``) say what each key accepts.
        data: a mapping (e.g. parsed JSON / YAML).
        where: the key path of ``data``, prefixed to every error (``"train"``, ``"model.router"``).
        int_bools: also accept 0 / 1 for ``bool`` fields (checkpoints of the official BEATs code store flags
        so).

    Raises:
        ConfigError: ``"<where>.<key>: ..."`` for an unknown key, a missing required key, a wrong type or a
            bad ``Literal`` choice (one error, the first found).
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where or 'config'}: expected an object for {cls.__name__}, got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = [f.name for f in fields]
    data = _rename_keys(cls, data, where)
    data = _fold_component_kwargs(data, names, where)
    for key in data:
        if key not in names:
            raise ConfigError(
                f"{_join(where, key)}: unknown key {key!r} for {cls.__name__} (known: {sorted(names)})"
            )
    for f in fields:
        if (
            f.name not in data
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ):
            raise ConfigError(f"{_join(where, f.name)}: missing key {f.name!r} for {cls.__name__}")
    kwargs = {k: _convert(hints[k], v, _join(where, k), int_bools) for k, v in data.items()}
    obj = cls(**kwargs)
    validate(obj, where)  # value domains: ranges, positivity, divisibility, finiteness (mowe.validation)
    return obj


def _rename_keys(cls: type, data: dict, where: str) -> dict:
    """Old key names (``cls.RENAMED_KEYS``, old -> new) read as the new ones, in place, with a
    DeprecationWarning."""
    renamed = getattr(cls, "RENAMED_KEYS", {})
    if not any(old in data for old in renamed):
        return data
    out = {}
    for key, value in data.items():
        new = renamed.get(key, key)
        if new != key:
            if new in data:
                raise ConfigError(
                    f"{_join(where, key)}: the old name of {new!r}, which is given too; keep only {new!r}"
                )
            warnings.warn(
                f"{_join(where, key)}: the key {key!r} is deprecated; use {new!r} (read as {new!r} now)",
                DeprecationWarning,
                stacklevel=4,
            )
        out[new] = value
    return out


def _fold_component_kwargs(data: dict, names: list[str], where: str) -> dict:
    """``{"component": "pkg.Class", "width": 8, "freeze": false}`` -> keys that are not fields go to
    ``kwargs``.

    Only for dataclasses with ``component`` and ``kwargs`` fields and only when ``component`` is set, so a
    typo in a built-in entry is still an unknown key.
    """
    if "component" not in names or "kwargs" not in names or data.get("component") is None:
        return data
    extra = {k: v for k, v in data.items() if k not in names}
    if not extra:
        return data
    given = data.get("kwargs") or {}
    if not isinstance(given, dict):
        raise ConfigError(f"{_join(where, 'kwargs')}: expected an object, got {type(given).__name__}")
    for k in extra:
        if k in given:
            raise ConfigError(f"{_join(where, k)}: given both as a key and in 'kwargs'")
    return {**{k: v for k, v in data.items() if k in names}, "kwargs": {**given, **extra}}


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def check_fields(obj: Any, *, where: str, int_bools: bool = False) -> None:
    """Type-check every field of dataclass instance ``obj`` with the loader's rules, normalising in place.

    For a dataclass built directly in Python (not through :func:`from_dict`): call it from ``__post_init__``
    so that ``TrainConfig(mixed_precision="fp8")`` fails like the same value in a file. Works on frozen
    dataclasses (ints become floats for ``float`` fields, lists become tuples for ``tuple`` fields).
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        new = _convert(hints[f.name], value, f"{where}.{f.name}", int_bools)
        if new is not value:
            object.__setattr__(obj, f.name, new)
    validate(obj, where)


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return f"one of {list(args)}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if dataclasses.is_dataclass(tp):
        return f"an object ({tp.__name__})"
    if origin in (list, tuple, Sequence):
        return "a list"
    if origin is dict:
        return "an object"
    if tp is bool:
        return "true/false"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, where: str, int_bools: bool = False) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        for a in args:
            if value == a and type(value) is type(a):
                return a
        raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, where, int_bools)
            except ConfigError as e:
                # A nested error (deeper key path) is more useful than "expected X or Y".
                if not str(e).startswith(f"{where}:"):
                    raise
        raise ConfigError(f"{where}: expected {_describe(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, where=where, int_bools=int_bools)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {type(value).__name__}")
        kt, vt = args if args else (Any, Any)
        out = {}
        for k, v in value.items():
            _convert(kt, k, f"{where} key {k!r}", int_bools)
            out[k] = _convert(vt, v, _join(where, k), int_bools)
        return out
    if origin in (list, tuple, Sequence):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected a list of {len(args)}, got {len(value)} items")
            items = [_convert(a, v, f"{where}[{i}]", int_bools) for i, (a, v) in enumerate(zip(args, value))]
        else:
            et = args[0] if args else Any
            items = [_convert(et, v, f"{where}[{i}]", int_bools) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        if int_bools and isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value if isinstance(value, float) else float(value)
        raise ConfigError(f"{where}: expected float, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected int, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected str, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


# ============================================================================================ files
def _yaml_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader that also reads ``1e-4`` (no dot) as a float, as YAML 1.2 and JSON do."""

        def construct_document(self, node):  # aliases may not expand past a small budget (no alias bombs)
            check_yaml_expansion(node)
            return super().construct_document(node)

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(
            r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""",
            re.VERBOSE,
        ),
        list("-+0123456789."),
    )
    return Loader


def parse_value(text: str) -> Any:
    """One ``--set`` value, parsed as YAML (``1e-4`` is a float, ``[a, b]`` a list, ``null`` None)."""
    import yaml

    try:
        return yaml.load(text, Loader=_yaml_loader())
    except yaml.YAMLError as e:
        raise ConfigError(f"not a valid YAML value: {text!r} ({e})") from e


def read_config_file(path: str | os.PathLike) -> Any:
    """Parse a JSON (``.json``) or YAML (anything else) config file.

    Raises:
        ConfigError: the file cannot be read or parsed (naming the file).
    """
    path = os.fspath(path)
    try:
        text = read_text(path, encoding="utf-8-sig")  # no hang on a FIFO / device; a BOM is accepted
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid UTF-8 ({e})") from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror or e})") from e
    try:
        if path.endswith(".json"):
            return json.loads(text)
        import yaml

        return yaml.load(text, Loader=_yaml_loader())
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    except Exception as e:  # json / yaml errors have many types
        raise ConfigError(
            f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML/JSON'} ({e})"
        ) from e


def apply_overrides(tree: dict[str, Any], overrides: Sequence[str], *, flag: str = "--set") -> dict[str, Any]:
    """Apply ``section.key=value`` overrides in place (values parsed by :func:`parse_value`); returns
    ``tree``.

    The result still goes through :func:`from_dict`, so an override of an unknown key or with a wrong type
    fails there with the key path.
    """
    for item in overrides:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"{flag} {item!r}: expected section.key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = tree
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{flag} {item!r}: {p!r} is not a mapping")
        try:
            node[parts[-1]] = parse_value(value)
        except ConfigError as e:
            raise ConfigError(f"{flag} {key.strip()}: {e}") from e
    return tree

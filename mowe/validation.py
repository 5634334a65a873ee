"""Value checks for every config field with a domain, run once when the strict loader builds a config.

:func:`mowe.config.from_dict` checks keys and types; :func:`validate` then checks values against the rule
table of the dataclass it built (ranges, positivity, divisibility of head counts, finiteness), so a bad value
fails at load with a :class:`~mowe.errors.ConfigError` that names the key path and the allowed range::

    model.lora.r: must be an integer >= 1, got 0
    train.seed: must be an integer in [0, 4294967295], got 1180591620717411303424
    model.llm.config.num_key_value_heads: must divide num_attention_heads (4), got 3

Rules are keyed by the dataclass's ``module.qualname`` (no imports of the config modules here). The same
checks serve the CLI's own flags (:func:`check_flag`) and the transformers-style dicts a config carries
(``llm.config``, encoder ``overrides``, connector ``options``). :func:`check_yaml_expansion` bounds what YAML
aliases may expand to (the loader calls it before building any Python object).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mowe.errors import ConfigError

__all__ = [
    "LORA_SCALE",
    "MAX_AUDIO_SECONDS",
    "MAX_SEED",
    "RULES",
    "YAML_EXPANSION_BUDGET",
    "Rule",
    "check_flag",
    "check_yaml_expansion",
    "int_at_least",
    "int_in",
    "real_in",
    "validate",
]

MAX_SEED = 2**32 - 1  # numpy's seed range; torch and python take it too
#: Extra YAML nodes aliases may add by expansion (a billion-laughs file is refused before it is built).
YAML_EXPANSION_BUDGET = 10_000


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Rule:
    """One value check: ``field`` must satisfy ``ok``; ``allowed`` says so in words (``"an integer >=
    1"``)."""

    field: str
    ok: Callable[[Any], bool]
    allowed: str
    optional: bool = False  # None is allowed

    def check(self, value: Any, where: str) -> None:
        if value is None and self.optional:
            return
        if not self.ok(value):
            raise ConfigError(
                f"{where}: must be {self.allowed}{' or null' if self.optional else ''}, got {value!r}"
            )


def int_at_least(name: str, lo: int, *, optional: bool = False) -> Rule:
    return Rule(
        name,
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo,
        f"an integer >= {lo}",
        optional,
    )


def int_in(name: str, lo: int, hi: int) -> Rule:
    return Rule(
        name,
        lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi,
        f"an integer in [{lo}, {hi}]",
    )


def real_in(
    name: str, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False, optional: bool = False
) -> Rule:
    def ok(v: Any) -> bool:
        if not _num(v) or not math.isfinite(v):
            return False
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)

    hi_s = "inf)" if math.isinf(hi) else f"{hi:g}{')' if hi_open else ']'}"
    return Rule(name, ok, f"a finite number in {'(' if lo_open else '['}{lo:g}, {hi_s}", optional)


_INF = math.inf
#: The longest clip, wherever it is set (processor options, a run file's data section, ManifestDataset).
MAX_AUDIO_SECONDS = real_in("max_audio_seconds", 0, _INF, lo_open=True, optional=True)
#: A LoRA scaling multiplier, wherever it is set (a stage, a saved model's inference settings,
#: ``--lora-scale``).
LORA_SCALE = real_in("lora_scale", 0, _INF)

# Transformers-style config dicts: sizes that must be positive integers, and (width, heads) pairs whose
# second entry must divide the first.
_POSITIVE_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "head_dim",
    "d_model",
    "encoder_layers",
    "encoder_attention_heads",
    "encoder_ffn_dim",
    "n_embd",
    "n_layer",
    "n_head",
    "n_positions",
    "num_mel_bins",
    "max_source_positions",
    "n_inner",
)
_DIVIDES = (
    ("hidden_size", "num_attention_heads"),
    ("num_attention_heads", "num_key_value_heads"),
    ("d_model", "encoder_attention_heads"),
    ("n_embd", "n_head"),
)
# Connector / encoder options that are sizes or counts.
_POSITIVE_OPTIONS = (
    "stack",
    "hidden_dim",
    "kernel_size",
    "stride",
    "num_queries",
    "num_layers",
    "num_heads",
    "window",
    "out_dim",
    "intermediate_size",
    "num_query_tokens",
    "window_size",
)


def check_model_dict(d: Any, where: str) -> None:
    """Positive sizes, finite numbers and head divisibility in a transformers-style config dict."""
    if not isinstance(d, dict):
        return
    for k, v in d.items():
        if _num(v) and not math.isfinite(v):
            raise ConfigError(f"{where}.{k}: must be a finite number, got {v!r}")
        if (
            k in _POSITIVE_KEYS
            and v is not None
            and not (isinstance(v, int) and not isinstance(v, bool) and v >= 1)
        ):
            raise ConfigError(f"{where}.{k}: must be an integer >= 1, got {v!r}")
        if k.endswith(("dropout", "_prob")) and _num(v) and not 0 <= v <= 1:
            raise ConfigError(f"{where}.{k}: must be a finite number in [0, 1], got {v!r}")
    for width, heads in _DIVIDES:
        w, h = d.get(width), d.get(heads)
        if isinstance(w, int) and isinstance(h, int) and h >= 1 and w % h:
            raise ConfigError(f"{where}.{heads}: must divide {width} ({w}), got {h}")


def _check_options(d: Any, where: str) -> None:
    if not isinstance(d, dict):
        return
    for k, v in d.items():
        if _num(v) and not math.isfinite(v):
            raise ConfigError(f"{where}.{k}: must be a finite number, got {v!r}")
        if k in _POSITIVE_OPTIONS and _num(v) and v < 1:
            raise ConfigError(f"{where}.{k}: must be an integer >= 1, got {v!r}")


def _encoder_extra(obj: Any, where: str) -> None:
    check_model_dict(obj.overrides, f"{where}.overrides")
    if obj.max_seconds is not None and obj.max_seconds < obj.min_seconds:
        raise ConfigError(
            f"{where}.max_seconds: must be >= min_seconds ({obj.min_seconds}), got {obj.max_seconds}"
        )


def _llm_extra(obj: Any, where: str) -> None:
    check_model_dict(obj.config, f"{where}.config")
    if obj.gguf_file is not None and not obj.name_or_path:
        raise ConfigError(
            f"{where}.gguf_file: needs {where}.name_or_path, the folder or hub id that holds the file"
        )


def _folder_ok(v: Any) -> bool:
    """``v`` is, or can become, a folder: its nearest existing ancestor (or itself) is a directory."""
    p = os.path.abspath(os.path.expanduser(str(v)))
    while not os.path.lexists(p):
        parent = os.path.dirname(p)
        if parent == p:
            return True
        p = parent
    return os.path.isdir(p)


def _bucket(v: Any) -> bool:
    return v is None or v == "auto" or (_num(v) and math.isfinite(v) and v >= 0)


RULES: dict[str, list[Rule]] = {
    "mowe.config.EncoderConfig": [
        real_in("min_seconds", 0, _INF),
        real_in("max_seconds", 0, _INF, lo_open=True, optional=True),
        Rule("bucket_padding", _bucket, "a finite number >= 0, 'auto'", optional=True),
        real_in("window_seconds", 0, _INF, lo_open=True, optional=True),
    ],
    "mowe.config.RouterConfig": [
        int_at_least("hidden_dim", 1),
        int_at_least("top_k", 1),
        real_in("noise_std", 0, _INF),
        real_in("aux_loss_weight", 0, _INF),
        int_at_least("slot_dim", 1, optional=True),
        real_in("window_seconds", 0, _INF, lo_open=True, optional=True),
    ],
    "mowe.config.ConnectorConfig": [
        int_at_least("max_tokens", 1, optional=True),
        int_at_least("max_tokens_per_window", 1, optional=True),
    ],
    "mowe.config.LLMConfig": [int_at_least("vocab_size", 1, optional=True)],
    "mowe.config.LoRAConfig": [
        int_at_least("r", 1),
        real_in("alpha", 0, _INF, lo_open=True),
        real_in("dropout", 0, 1, hi_open=True),
    ],
    "mowe.config.MoWEConfig": [int_at_least("audio_token_id", 0)],
    "mowe.training.config.TrainConfig": [
        *(
            int_at_least(n, 1)
            for n in ("batch_size", "grad_accum", "log_every", "keep_last_checkpoints", "length_group_mult")
        ),
        *(int_at_least(n, 0) for n in ("eval_every", "save_every", "num_workers")),
        int_in("seed", 0, MAX_SEED),
        real_in("adam_eps", 0, 1, lo_open=True),
        Rule("adam_betas", lambda b: all(_num(x) and 0 <= x < 1 for x in b), "two numbers in [0, 1)"),
        real_in("weight_decay", 0, _INF),
        real_in("max_grad_norm", 0, _INF, lo_open=True, optional=True),
        int_at_least("feature_cache_max_bytes", 1, optional=True),
        real_in("max_nonfinite_fraction", 0, 1),
        Rule("output_dir", _folder_ok, "a folder path, not an existing file (nor a path under one)"),
    ],
    # The one check of each stage value, for a run file's stage and a Stage built in Python alike.
    "mowe.curriculum.Stage": [
        int_at_least("steps", 1),
        int_at_least("warmup_steps", 0),
        real_in("lr", 0, 10, lo_open=True),
        dataclasses.replace(LORA_SCALE, optional=True),
    ],
    "mowe.config.InferenceConfig": [LORA_SCALE],
    "mowe.data.processor_options.ProcessorOptions": [
        MAX_AUDIO_SECONDS,
        int_in("seed", 0, MAX_SEED),
        real_in("max_duration_seconds", 0, _INF, lo_open=True, optional=True),
    ],
    "mowe.training.run_file.DataSection": [MAX_AUDIO_SECONDS],
    "mowe.training.run_file.BPEOptions": [int_at_least("vocab_size", 1)],
}

# Whole-object checks (cross-field or dict-valued fields), after the per-field rules.
_EXTRA: dict[str, Callable[[Any, str], None]] = {
    "mowe.config.EncoderConfig": _encoder_extra,
    "mowe.config.LLMConfig": lambda o, w: _llm_extra(o, w),
    "mowe.config.ConnectorConfig": lambda o, w: _check_options(o.options, f"{w}.options"),
}


def validate(obj: Any, where: str = "config") -> None:
    """Check ``obj``'s field values against its class's rules; nested dataclasses are checked when built.

    Raises:
        ConfigError: ``"<where>.<field>: must be <allowed range>, got <value>"``.
    """
    cls = type(obj)
    key = f"{cls.__module__}.{cls.__qualname__}"
    for rule in RULES.get(key, ()):
        if hasattr(obj, rule.field):
            rule.check(getattr(obj, rule.field), f"{where}.{rule.field}" if where else rule.field)
    extra = _EXTRA.get(key)
    if extra is not None:
        extra(obj, where or "config")


def check_flag(flag: str, value: Any, *, minimum: int = 1) -> None:
    """A CLI integer flag must be ``>= minimum``; raises :class:`ConfigError` naming the flag."""
    if value is not None and (not isinstance(value, int) or value < minimum):
        raise ConfigError(f"{flag}: must be an integer >= {minimum}, got {value!r}")


def check_yaml_expansion(node: Any, *, budget: int = YAML_EXPANSION_BUDGET) -> None:
    """Refuse a composed YAML node graph whose aliases expand to more than ``budget`` extra nodes.

    ``node`` is a ``yaml.Node`` (scalars, sequences, mappings, possibly shared through aliases). The expanded
    size is counted with memoisation, so a billion-laughs document is measured in microseconds, never built.

    Raises:
        ConfigError: too many nodes after alias expansion, or an alias that refers to itself.
    """
    sizes: dict[int, int] = {}
    distinct: set[int] = set()
    visiting: set[int] = set()
    limit = budget + 1_000_000  # a hard stop for the count itself

    def size(n: Any) -> int:
        i = id(n)
        if i in sizes:
            return sizes[i]
        if i in visiting:
            raise ConfigError("YAML: an alias refers to the node that contains it (recursive structure)")
        visiting.add(i)
        distinct.add(i)
        total = 1
        value = n.value
        if isinstance(value, list):
            for item in value:
                for child in item if isinstance(item, tuple) else (item,):
                    total += size(child)
                    if total > limit:
                        break
        visiting.discard(i)
        sizes[i] = total
        return total

    try:
        expanded = size(node)
    except RecursionError as e:
        raise ConfigError("YAML: nested too deeply") from e
    if expanded - len(distinct) > budget:
        raise ConfigError(
            f"YAML: aliases expand the document to more than {len(distinct) + budget} nodes "
            f"(an alias bomb?); at most {budget} extra nodes from aliases are allowed"
        )

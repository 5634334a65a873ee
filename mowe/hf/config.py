"""``MoWEPretrainedConfig``: a transformers ``PreTrainedConfig`` (model_type ``"mowe"``) around a
:class:`MoWEConfig`.

Why a wrapper and not ``class MoWEConfig(PreTrainedConfig)``: transformers 5 configs are *mutable* dataclasses
whose ``__init__`` accepts and stores any unknown keyword (``accept_kwargs=True``), carry a dozen inherited
fields (``dtype``, ``id2label``, ``return_dict``, ...) and set private attributes in ``__post_init__``.
``MoWEConfig`` is a *frozen*, hashable-by-value dataclass read by mowe's one strict loader, where an unknown
key or a wrong type is an error naming its key path; a subclass could not stay frozen (a frozen dataclass
cannot inherit a mutable one), and its ``dataclasses.fields`` / ``to_dict`` / ``replace`` / ``==`` would all
change. So ``MoWEConfig`` stays the one
source of truth and this class carries it for the Auto classes: its parts are plain JSON (``strong``,
``weak_encoders``, ``router``, ``connector``, ``llm``, ``lora``, ``audio_token_id``, ``inference``), checked
by the strict loader on construction, and :meth:`MoWEPretrainedConfig.to_mowe_config` (or ``.mowe``) gives the
``MoWEConfig`` back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from transformers import PreTrainedConfig

from mowe.config import MoWEConfig, from_dict, read_config_file, to_dict
from mowe.errors import ConfigError

__all__ = ["HF_KEYS", "MoWEPretrainedConfig", "mowe_config_json", "read_mowe_config"]

_PARTS = tuple(f.name for f in dataclasses.fields(MoWEConfig))

#: Top-level keys of a saved ``config.json`` that belong to transformers, not to :class:`MoWEConfig`.
HF_KEYS = frozenset(
    {
        "model_type",
        "transformers_version",
        "architectures",
        "_name_or_path",
        "name_or_path",
        "torch_dtype",
        "output_attentions",
        "attn_implementation",
    }
    | {f.name for f in dataclasses.fields(PreTrainedConfig)}
)


class MoWEPretrainedConfig(PreTrainedConfig):
    """The transformers face of a :class:`~mowe.config.MoWEConfig` (``AutoConfig.from_pretrained`` returns
    one).

    Example:
        >>> hf = MoWEPretrainedConfig.from_mowe(cfg)                   # doctest: +SKIP
        >>> hf.to_mowe_config() == cfg                                  # doctest: +SKIP
        True

    Raises:
        ConfigError: a part has an unknown key or a wrong type (naming its key path, e.g.
        ``config.router.top_k``).
    """

    model_type = "mowe"

    strong: dict[str, Any] | None = None
    weak_encoders: dict[str, Any] | None = None
    router: dict[str, Any] | None = None
    connector: dict[str, Any] | None = None
    llm: dict[str, Any] | None = None
    lora: dict[str, Any] | None = None
    audio_token_id: int = 0
    inference: dict[str, Any] | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.architectures is None:
            self.architectures = ["MoWEAudioLLM"]
        mowe = self.to_mowe_config()  # strict: raises ConfigError naming the key
        for name, value in to_dict(mowe).items():  # defaults filled in, so every part is explicit
            object.__setattr__(self, name, value)
        for old in MoWEConfig.RENAMED_KEYS:  # read under its new name above; not kept under the old one
            if old in self.__dict__:
                delattr(self, old)

    @classmethod
    def from_mowe(cls, config: MoWEConfig, **kwargs) -> MoWEPretrainedConfig:
        """Wrap a :class:`MoWEConfig` (``kwargs``: other ``PreTrainedConfig`` fields)."""
        return cls(**to_dict(config), **kwargs)

    def to_mowe_config(self) -> MoWEConfig:
        """The :class:`MoWEConfig` these parts describe, through the strict loader."""
        parts = {k: getattr(self, k) for k in _PARTS if getattr(self, k, None) is not None}
        # A config.json from before a rename (``weak``): transformers keeps unknown keys as attributes.
        parts.update(
            {
                old: self.__dict__[old]
                for old, new in MoWEConfig.RENAMED_KEYS.items()
                if self.__dict__.get(old) is not None and new not in parts
            }
        )
        return from_dict(MoWEConfig, parts, where="model")

    @property
    def mowe(self) -> MoWEConfig:
        return self.to_mowe_config()


def mowe_config_json(config: MoWEConfig) -> str:
    """The ``config.json`` text :func:`mowe.hf.saving.save_model` writes: the MoWEConfig's keys, plus
    ``model_type``, ``architectures`` and ``transformers_version`` so that ``AutoConfig`` / ``AutoModel``
       recognise the folder."""
    import transformers

    data = {
        "model_type": "mowe",
        "architectures": ["MoWEAudioLLM"],
        **to_dict(config),
        "transformers_version": transformers.__version__,
    }
    return json.dumps(data, indent=2) + "\n"


def read_mowe_config(source: str | os.PathLike | dict[str, Any], *, where: str | None = None) -> MoWEConfig:
    """A :class:`MoWEConfig` from a saved ``config.json`` (path or parsed dict), old or new format.

    Transformers' own keys (``model_type``, ``transformers_version``, ``architectures``, inherited config
    fields) are set aside; everything else goes through the strict loader.

    Raises:
        ConfigError: not JSON, a ``model_type`` other than ``"mowe"``, an unknown key or a wrong type (naming
        it).
    """
    if isinstance(source, dict):
        data = dict(source)
    else:
        where = where or os.fspath(source)
        data = read_config_file(source)
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    kind = data.get("model_type", "mowe")
    if kind != "mowe":
        raise ConfigError(
            f"{where or 'config'}: model_type is {kind!r}, not 'mowe'; is this a mowe model folder?"
        )
    # Keys are named as everywhere else (model.router.top_k), after the file: "<file>: model.router.top_k:
    # ...".
    parts = {k: v for k, v in data.items() if k not in HF_KEYS or k in _PARTS}
    try:
        return from_dict(MoWEConfig, parts, where="model")
    except ConfigError as e:
        if where is None:
            raise
        raise ConfigError(f"{where}: {e}") from e

"""Registration of ``"mowe"`` with transformers' Auto classes, run when ``import mowe`` happens.

``import mowe`` must stay cheap (importing transformers' auto modules costs seconds), so the registration waits:
each of ``configuration_auto`` (``AutoConfig``), ``modeling_auto`` (``AutoModel``) and ``processing_auto``
(``AutoProcessor``) is registered right after transformers first imports it, or at once if it already was.
A user of ``AutoModel.from_pretrained`` has imported them by then, so no ``trust_remote_code`` is needed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

__all__ = ["install", "register_auto_classes"]

_CONFIG = "transformers.models.auto.configuration_auto"
_MODEL = "transformers.models.auto.modeling_auto"
_PROCESSOR = "transformers.models.auto.processing_auto"


def _register_config() -> None:
    from transformers.models.auto.configuration_auto import AutoConfig

    from mowe.hf.config import MoWEPretrainedConfig

    AutoConfig.register("mowe", MoWEPretrainedConfig, exist_ok=True)


def _ready(module: str, name: str) -> bool:
    """Whether ``module`` is fully imported (a module still being imported may be what imports transformers)."""
    return hasattr(sys.modules.get(module), name)


class LazyMoWEAudioLLM:
    """What AutoModel maps ``"mowe"`` to unless :mod:`mowe.model` was imported first: importing it from this hook
    could be circular (mowe's own modules import transformers' auto modules). Hands every call to the real class."""

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        from mowe.model import MoWEAudioLLM

        return MoWEAudioLLM.from_pretrained(*args, **kwargs)

    @classmethod
    def _from_config(cls, config, **kwargs):
        from mowe.model import MoWEAudioLLM

        return MoWEAudioLLM.from_config(config.to_mowe_config() if hasattr(config, "to_mowe_config") else config,
                                        **kwargs)

    from_config = _from_config


def _register_model() -> None:
    from transformers.models.auto.modeling_auto import AutoModel

    from mowe.hf.config import MoWEPretrainedConfig

    if not _ready("mowe.model", "MoWEAudioLLM"):
        LazyMoWEAudioLLM.config_class = MoWEPretrainedConfig
        AutoModel.register(MoWEPretrainedConfig, LazyMoWEAudioLLM, exist_ok=True)
        return
    from mowe.model import MoWEAudioLLM

    AutoModel.register(MoWEPretrainedConfig, MoWEAudioLLM, exist_ok=True)


def _lazy_processor_load(cls, *args, **kwargs):
    from mowe.data.processor import MoWEProcessor

    return MoWEProcessor.from_pretrained(*args, **kwargs)


def _register_processor() -> None:
    from transformers.models.auto.processing_auto import AutoProcessor

    from mowe.hf.config import MoWEPretrainedConfig

    if _ready("mowe.data.processor", "MoWEProcessor"):
        from mowe.data.processor import MoWEProcessor as cls
    else:  # found by name ("processor_class": "MoWEProcessor"), loads the real class when called
        cls = type("MoWEProcessor", (), {"from_pretrained": classmethod(_lazy_processor_load),
                                          "__module__": __name__})
    AutoProcessor.register(MoWEPretrainedConfig, cls, exist_ok=True)


def register_model_class(cls: type) -> None:
    """Map ``"mowe"`` to ``cls`` in AutoModel if transformers' ``modeling_auto`` is loaded (replacing the proxy)."""
    if _MODEL in sys.modules and hasattr(sys.modules[_MODEL], "AutoModel"):
        from mowe.hf.config import MoWEPretrainedConfig

        sys.modules[_MODEL].AutoModel.register(MoWEPretrainedConfig, cls, exist_ok=True)


_HOOKS = {_CONFIG: _register_config, _MODEL: _register_model, _PROCESSOR: _register_processor}


def register_auto_classes() -> None:
    """Register ``"mowe"`` with AutoConfig, AutoModel and AutoProcessor now (imports transformers)."""
    for hook in _HOOKS.values():
        hook()


class _AfterExec(importlib.abc.Loader):
    """Runs the real loader, then a registration hook."""

    def __init__(self, loader, hook):
        self.loader, self.hook = loader, hook

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.hook()

    def __getattr__(self, name):
        return getattr(self.loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        hook = _HOOKS.get(fullname)
        if hook is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _AfterExec(spec.loader, hook)
                return spec
        return None


def install() -> None:
    """Register now for the auto modules already imported; hook the others (idempotent)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    for name, hook in _HOOKS.items():
        if name in sys.modules:
            hook()

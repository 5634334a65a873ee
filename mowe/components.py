"""Your own encoders, routers and connectors, named by import path in configs, run files and ``config.json``.

An encoder, router or connector entry may be ``{"component": "my_pkg.module.Class", ...keyword arguments}``
(a class or any callable returning the module). The keys that are fields of the entry's config dataclass
(:class:`~mowe.config.EncoderConfig`: ``freeze``, ``min_seconds``, ...; :class:`~mowe.config.RouterConfig`:
``top_k``, ``aux_loss_weight``, ``layout``, ...) keep their meaning; every other key is a keyword argument of
the component (stored under ``kwargs``, so a saved ``config.json`` rebuilds the same module)::

    weak_encoders:
      conv50: {component: my_pkg.encoders.Conv50, out_dim: 16, freeze: false}
    router: {component: my_pkg.routers.DurationRouter, top_k: 1, buckets: 4}
    connector: {component: my_pkg.connectors.Pool2, stride: 2}

What mowe passes besides the entry's own keyword arguments, each only when the constructor has a parameter of
that name (read with :func:`inspect.signature`; ``**kwargs`` does not count):

* encoder: ``freeze`` (the entry's flag; an encoder without that parameter is frozen by mowe when ``freeze``
  is
  true, so ``freeze: false`` is needed to train it).
* router: ``num_encoders`` (pool size ``e``), ``top_k``, ``in_dim`` (the strong encoder's width ``d``) and
  ``prompt_dim`` (the LLM's embedding width).
* connector: ``in_dim`` (strong width + the pool's output width) and ``out_dim`` (the LLM's embedding width).

Router contract (what :class:`~mowe.routers.MixtureRouter`, mowe's own router, does)::

    router(features (b, t, d) float, lengths (b,) long) -> RouterOutput
    router(features, lengths, prompt (b, d_p))         -> RouterOutput   # only when router.needs_prompt is
    True

with :class:`~mowe.routers.RouterOutput` fields ``logits`` / ``probs`` ``(b, e)``, ``gates`` ``(b, e)`` (the
weight of each weak encoder's features, zero where not selected; gradient flows to the router through them),
``indices`` ``(b, k)`` long (the selected encoders, ``k == top_k``, most probable first; the pool runs only
those) and ``aux_loss`` (a scalar added to the loss times ``router.aux_loss_weight``; return a zero tensor
when there is none). ``features`` are the strong encoder's frames, valid up to ``lengths`` per clip (so clip
duration is ``lengths / strong.frame_rate``). With routing per window (``window_seconds``), the router is
called once on the windows of the batch as if they were clips (:func:`mowe.routers.route_per_window`), so the
same contract routes per window.

Trust: building a component imports its module, which runs its code. ``mowe train`` and
:meth:`~mowe.model.MoWEAudioLLM.from_config` build what the config names (you wrote it); loading a saved model
(:meth:`~mowe.model.MoWEAudioLLM.from_pretrained`, ``mowe infer`` / ``mowe eval``) builds components outside
``mowe`` only when the caller allows their package: ``allow_components=["my_pkg"]`` or
``--allow-components my_pkg``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from mowe.errors import ConfigError

__all__ = ["AllowList", "check_allowed", "config_components", "instantiate", "is_allowed", "resolve"]

# ``True``: any component (a config the caller wrote); a sequence of package names: mowe plus those.
AllowList = bool | Sequence[str] | None


def is_allowed(path: str, allow: AllowList) -> bool:
    """Whether ``path`` may be imported: ``mowe.*`` always, else only a package in ``allow`` or below it."""
    if allow is True or path == "mowe" or path.startswith("mowe."):
        return True
    if allow in (None, False):
        return False
    if isinstance(allow, str):
        allow = [allow]
    return any(path == p or path.startswith(p.rstrip(".") + ".") for p in allow)  # type: ignore[union-attr]


def check_allowed(path: str, allow: AllowList, *, where: str) -> None:
    """Raise a :class:`ConfigError` naming the component and how to allow it, unless :func:`is_allowed`."""
    if is_allowed(path, allow):
        return
    pkg = path.split(".")[0]
    raise ConfigError(
        f"{where}: component {path!r} is outside mowe and was not allowed; loading it would import "
        f"and run its code. If you trust it, pass allow_components=[{pkg!r}] "
        f"(MoWEAudioLLM.from_pretrained) or --allow-components {pkg} (mowe infer / mowe eval)"
    )


def resolve(path: str, *, where: str) -> Callable[..., Any]:
    """The object at import path ``"pkg.module.Name"`` (nested attributes allowed: ``"pkg.mod.Outer.Inner"``).

    Raises:
        ConfigError: (naming ``where`` and ``path``) a malformed path, no importable module prefix, a missing
            attribute, or an object that is not callable.
    """
    if not isinstance(path, str) or not path or any(not p.isidentifier() for p in path.split(".")):
        raise ConfigError(f"{where}: component {path!r} is not an import path like 'my_pkg.module.Class'")
    parts = path.split(".")
    if len(parts) < 2:
        raise ConfigError(
            f"{where}: component {path!r} needs a module and a name, like 'my_pkg.module.Class'"
        )
    module, error = None, None
    for cut in range(len(parts) - 1, 0, -1):  # the longest importable module prefix
        name = ".".join(parts[:cut])
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            # Only "this prefix does not exist" moves on; a module that fails inside is the user's bug to see.
            if e.name is not None and not (name == e.name or name.startswith(e.name + ".")):
                raise ConfigError(f"{where}: importing {name!r} for component {path!r} failed: {e}") from e
            error = error or e
            continue
        obj: Any = module
        for i, attr in enumerate(parts[cut:]):
            if not hasattr(obj, attr):
                raise ConfigError(
                    f"{where}: component {path!r}: {'.'.join(parts[: cut + i])!r} has no attribute {attr!r}"
                )
            obj = getattr(obj, attr)
        if not callable(obj):
            raise ConfigError(
                f"{where}: component {path!r} is a {type(obj).__name__}, not a class or function"
            )
        return obj
    raise ConfigError(
        f"{where}: component {path!r}: no module {parts[0]!r} can be imported ({error}); "
        f"is its package installed or on PYTHONPATH?"
    )


def instantiate(
    path: str,
    kwargs: Mapping[str, Any],
    *,
    where: str,
    allow: AllowList = True,
    offered: Mapping[str, Any] | None = None,
) -> Any:
    """Build component ``path`` with ``kwargs`` plus those ``offered`` values its signature names.

    Args:
        path: import path of a class or factory.
        kwargs: the entry's own keyword arguments (they win over ``offered``).
        where: key path for errors (``"model.router"``).
        allow: see :func:`is_allowed`; checked before anything is imported.
        offered: values mowe knows (``num_encoders``, ``in_dim``, ...), passed only to a constructor with a
            parameter of that name.

    Raises:
        ConfigError: not allowed, not resolvable, or the constructor rejects the arguments (naming them).
    """
    check_allowed(path, allow, where=where)
    factory = resolve(path, where=where)
    call = dict(kwargs)
    for name, value in (offered or {}).items():
        if name not in call and _accepts(factory, name):
            call[name] = value
    try:
        return factory(**call)
    except TypeError as e:
        raise ConfigError(f"{where}: component {path!r} rejected the arguments {sorted(call)}: {e}") from e


def _accepts(factory: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
    p = params.get(name)
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def config_components(config: Any) -> list[tuple[str, str]]:
    """``(key path, import path)`` of every component a :class:`~mowe.config.MoWEConfig` names, in build
    order."""
    out = []
    entries: Iterable[tuple[str, Any]] = [
        ("model.strong", config.strong),
        *((f"model.weak_encoders.{n}", c) for n, c in config.weak_encoders.items()),
        ("model.router", config.router),
        ("model.connector", config.connector),
    ]
    for where, entry in entries:
        if getattr(entry, "component", None):
            out.append((where, entry.component))
    return out

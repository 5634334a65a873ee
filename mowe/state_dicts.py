"""Tied and aliased tensors in state dicts: which keys name one tensor, and checking a file that repeats them.

``module.state_dict()`` lists a shared tensor once per name it is registered under: BEATs registers layer 0's
relative-position table under every layer, an LLM with tied embeddings holds one matrix as both
``embed_tokens.weight`` and ``lm_head.weight``. ``named_parameters()`` lists each tensor only once, so code
that saves "the trainable parameters" by those names (SALMONN's official save drops frozen parameters that
way) leaves
the other names of a frozen tied tensor in its file. Every loader in mowe reads such repeated keys the same
way:

* :func:`alias_groups` finds the groups of keys that name one tensor in a module (the first key of a group is
  its *source*, the name ``named_parameters()`` uses; the others are its *aliases*);
* :func:`check_aliases` checks that every alias a file holds equals its source (the source's entry in the
  file, or the module's own value when the file lacks it, e.g. a frozen tower loaded from its own checkpoint),
  and names the first key that does not; with ``fill=True`` it also adds aliases the file left out;
* :func:`check_frozen_copies` checks that tensors a file repeats from a frozen module (one loaded from its own
  source) equal what that module holds, naming the first that does not.

Example:
    >>> shared = torch.nn.Linear(2, 2)
    >>> m = torch.nn.ModuleDict({"a": shared, "b": shared})
    >>> alias_groups(m)
    [('a.weight', 'b.weight'), ('a.bias', 'b.bias')]
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Collection, Mapping, Sequence
from typing import TypeVar

import torch
from torch import nn

from mowe.errors import CheckpointError

__all__ = [
    "RENAMED_PREFIXES",
    "alias_groups",
    "check_aliases",
    "check_frozen_copies",
    "legacy_key",
    "peft_base_key",
    "rename_legacy_keys",
    "tensors_equal",
]

#: State-dict prefixes that were renamed, old -> current. Files written before a rename still load (every
#: loader passes what it read through :func:`rename_legacy_keys`), with a ``DeprecationWarning`` naming the
#: new prefix. ``pool.`` was the weak pool's attribute; it is ``weak_encoders`` everywhere now (config key,
#: module, stage part).
RENAMED_PREFIXES = {"pool.": "weak_encoders."}

V = TypeVar("V")


def rename_legacy_keys(
    state: Mapping[str, V], *, where: str, prefix: str = "", warn: bool = True
) -> dict[str, V]:
    """``state`` with every key under a renamed prefix (:data:`RENAMED_PREFIXES`, after ``prefix``) given its
    current name, in the same order; warns once (``DeprecationWarning``, naming ``where`` and the new prefix)
    when there was one (``warn=False``: a check that runs before the load, which warns). A file holding both
    the old and the new name of one key is refused.

    Raises:
        CheckpointError: a key present under both names.
    """
    out: dict[str, V] = {}
    renamed: dict[str, str] = {}
    for key, value in state.items():
        new = key
        for old, cur in RENAMED_PREFIXES.items():
            if key.startswith(prefix + old):
                new = prefix + cur + key[len(prefix + old) :]
                renamed[old] = cur
                break
        if new in out or (new != key and new in state):
            raise CheckpointError(
                f"{where}: holds {key!r} and {new!r}, the old and the new name of one weight"
            )
        out[new] = value
    for old, cur in renamed.items() if warn else ():
        warnings.warn(
            f"{where}: state-dict keys under {old!r} are deprecated; they now start with {cur!r} "
            f"(loaded as such; save again to write the new names)",
            DeprecationWarning,
            stacklevel=3,
        )
    return out


def legacy_key(key: str, *, prefix: str = "") -> str:
    """The name ``key`` had before a rename of :data:`RENAMED_PREFIXES` (``key`` itself if none applies)."""
    for old, cur in RENAMED_PREFIXES.items():
        if key.startswith(prefix + cur):
            return prefix + old + key[len(prefix + cur) :]
    return key


def _identity(t: torch.Tensor) -> tuple:
    if t.device.type == "meta":
        return ("id", id(t))
    return (
        t.device.type,
        t.untyped_storage().data_ptr(),
        t.storage_offset(),
        tuple(t.shape),
        tuple(t.stride()),
        t.dtype,
    )


def alias_groups(module: nn.Module, *, prefix: str = "") -> list[tuple[str, ...]]:
    """Groups of ``module.state_dict()`` keys (with ``prefix``) that name one tensor, in state-dict order.

    Only groups of two or more keys are returned; the first key of each is the source, the rest its aliases.
    Two keys are one tensor when they are the same object or the same view of the same storage.
    """
    seen: dict[tuple, list[str]] = {}
    for key, value in module.state_dict(keep_vars=True).items():
        if isinstance(value, torch.Tensor) and value.numel():
            seen.setdefault(_identity(value), []).append(prefix + key)
    return [tuple(keys) for keys in seen.values() if len(keys) > 1]


def tensors_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape and the same values once ``a`` is in ``b``'s dtype (a float32 file against a bfloat16 model
    compares the rounded values), NaNs equal to NaNs."""
    if tuple(a.shape) != tuple(b.shape):
        return False
    a, b = a.detach().to(device=b.device, dtype=b.dtype), b.detach()
    if a.is_floating_point() or a.is_complex():
        return bool(torch.allclose(a, b, rtol=0.0, atol=0.0, equal_nan=True))
    return bool(torch.equal(a, b))


def _difference(a: torch.Tensor, b: torch.Tensor) -> str:
    if tuple(a.shape) != tuple(b.shape):
        return f"shape {tuple(a.shape)} != {tuple(b.shape)}"
    if a.is_floating_point() or b.is_floating_point():
        diff = (a.detach().double().cpu() - b.detach().double().cpu()).abs().max()
        return f"max abs difference {float(diff):.3g}"
    return "different values"


def check_aliases(
    state: Mapping[str, torch.Tensor],
    groups: Sequence[Sequence[str]],
    *,
    where: str,
    current: Mapping[str, torch.Tensor] | None = None,
    fill: bool = False,
) -> dict[str, torch.Tensor]:
    """Check the aliases ``state`` holds against their sources; returns ``state`` (a new dict).

    Args:
        state: the file's tensors, keyed as the module's state dict.
        groups: from :func:`alias_groups` (same key prefix as ``state``).
        where: the file, for errors.
        current: the module's own tensors (e.g. ``module.state_dict()``): the reference for a group whose
            source the file lacks (a frozen tower loaded from elsewhere). Without it the group's first key in
            the file is the reference.
        fill: add the aliases of a group the file holds only in part (as the source's tensor), so a strict
            load finds every key.

    Raises:
        CheckpointError: ``"<where>: <alias> differs from <source> ..."``: an alias that does not equal its
            source (they are one tensor in the model, so loading both cannot keep both values).
    """
    out = dict(state)
    for group in groups:
        present = [k for k in group if k in state]
        if not present:
            continue
        if group[0] in state:
            ref_key, ref, said = group[0], state[group[0]], group[0]
        elif current is not None and group[0] in current:
            ref_key, ref, said = None, current[group[0]], f"{group[0]} (its source, as loaded into the model)"
        else:
            ref_key, ref, said = present[0], state[present[0]], present[0]
        for key in present:
            value = state[key]
            if key == ref_key or not isinstance(value, torch.Tensor):
                continue  # a non-tensor entry is reported by the caller's type check
            if not tensors_equal(value, ref):
                raise CheckpointError(
                    f"{where}: {key} differs from {said} ({_difference(value, ref)}), but the model holds "
                    f"the two "
                    f"as one tied tensor; the file is damaged or was written for other weights"
                )
        if fill:
            source = state[present[0]]
            for key in group:
                out.setdefault(key, source)
    return out


def peft_base_key(key: str, own: Collection[str]) -> str | None:
    """``key`` as a key of ``own`` (a state dict's keys), also when ``own`` is a PEFT-wrapped model, whose
    wrapped layers hold their base weights under ``base_layer`` (``q_proj.weight`` ->
       ``q_proj.base_layer.weight``, as
    PEFT >= 0.7 names them); None when neither exists."""
    if key in own:
        return key
    wrapped = re.sub(r"\.(weight|bias)$", r".base_layer.\1", key)
    return wrapped if wrapped in own else None


def check_frozen_copies(
    copies: Mapping[str, torch.Tensor],
    module: nn.Module,
    *,
    where: str,
    names: Mapping[str, str] | None = None,
    prefix: str = "",
    what: str = "the model",
) -> None:
    """Tensors a file repeats from a frozen ``module`` (one loaded from its own source) must equal the
    module's.

    Args:
        copies: the file's tensors keyed by ``module``'s state-dict keys.
        module: the frozen module.
        where: the file, for errors.
        names: module key -> the key as the file names it (for errors; default ``prefix`` + the module key).
        prefix: the file's key prefix of ``module`` (for errors).
        what: how to name the module in errors (``"the BEATs given"``).

    Raises:
        CheckpointError: a key ``module`` does not have, or a value that differs (names the file's key, the
            key of its source when it is an alias, and ``what``).
    """
    own = module.state_dict()
    source_of = {alias: g[0] for g in alias_groups(module) for alias in g[1:]}
    names = names or {}

    def name(key: str) -> str:
        return names.get(key, prefix + key)

    for key, value in copies.items():
        said = name(key)
        if key not in own:
            raise CheckpointError(f"{where}: {said} names no tensor of {what}")
        if not isinstance(value, torch.Tensor) or not tensors_equal(value, own[key]):
            diff = _difference(value, own[key]) if isinstance(value, torch.Tensor) else type(value).__name__
            src = source_of.get(key)
            alias = f" (an alias of {name(src)}, one tied tensor)" if src else ""
            raise CheckpointError(
                f"{where}: {said}{alias} differs from {what} ({diff}); the file repeats a frozen "
                f"tensor, which must equal the one loaded from its source"
            )

"""Reading weights by hub id or local path, the same code path for both.

``load_prefixed_state_dict`` pulls only the tensors under a key prefix out of a checkpoint (e.g. the
Whisper *encoder* out of a full encoder-decoder checkpoint) without materialising the rest: safetensors
files are opened lazily and only the matching keys are read.
A model folder by hub id or path (``resolve_model_dir``, through ``huggingface_hub``: with
``HF_HUB_OFFLINE=1`` or ``local_files_only=True`` only the local cache is read) and uploads (``push_folder``,
for ``push_to_hub``).
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from safetensors import safe_open

from mowe.errors import CheckpointError
from mowe.io import open_for_reading, strip_ansi

__all__ = [
    "check_local_source",
    "load_prefixed_state_dict",
    "load_torch_file",
    "looks_like_path",
    "naming_refused_pickles",
    "push_folder",
    "resolve_file",
    "resolve_model_dir",
]


def looks_like_path(name_or_path: str) -> bool:
    """True for what can only be meant as a local path: ``/x``, ``./x``, ``../x``, ``~/x``, ``a/b/c`` (hub ids
    have one slash), or ``dir/x`` where ``dir`` exists here."""
    s = os.fspath(name_or_path)
    if s.startswith(("/", "./", "../", "~", ".\\")) or s in (".", "..") or s.count("/") >= 2:
        return True
    parent = os.path.dirname(s)
    return bool(parent) and os.path.isdir(os.path.expanduser(parent))


def check_local_source(name_or_path: str, *, what: str) -> None:
    """A ``name_or_path`` that looks like a local path must exist (otherwise transformers would call it a
    malformed hub repo id).

    Raises:
        CheckpointError: ``"<what>: the local folder './models/llm' does not exist"``.
    """
    s = os.fspath(name_or_path)
    if looks_like_path(s) and not os.path.exists(os.path.expanduser(s)):
        raise CheckpointError(
            f"{what}: the local folder or file '{s}' does not exist (it looks like a path, not a "
            f"hub repo id); check the path"
        )


def resolve_file(name_or_path: str, filename: str) -> str | None:
    """Local file inside ``name_or_path`` if it is a folder, else the hub cache / download. None if absent."""
    if os.path.isdir(name_or_path):
        p = os.path.join(name_or_path, filename)
        return p if os.path.isfile(p) else None
    from transformers.utils import cached_file

    try:
        return cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False)
    except OSError:
        return None


def _checkpoint_files(name_or_path: str) -> list[str]:
    single = resolve_file(name_or_path, "model.safetensors")
    if single:
        return [single]
    index = resolve_file(name_or_path, "model.safetensors.index.json")
    if index:
        with open_for_reading(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        files = [resolve_file(name_or_path, s) for s in shards]
        missing = [s for s, f in zip(shards, files) if f is None]
        if missing:
            raise CheckpointError(f"{name_or_path}: shard(s) {missing} listed in the index are missing")
        return files  # type: ignore[return-value]
    legacy = resolve_file(name_or_path, "pytorch_model.bin")
    if legacy:
        return [legacy]
    raise CheckpointError(
        f"{name_or_path}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin found"
    )


def load_prefixed_state_dict(name_or_path: str, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Tensors whose key starts with the first prefix in ``prefixes`` that matches, prefix stripped.

    Args:
        name_or_path: hub id or local folder of a transformers checkpoint.
        prefixes: candidate key prefixes, tried in order (e.g. ``("model.encoder.", "encoder.")``).

    Raises:
        CheckpointError: no checkpoint file, or no key under any prefix.
    """
    files = _checkpoint_files(name_or_path)
    for prefix in prefixes:
        out: dict[str, torch.Tensor] = {}
        for path in files:
            if path.endswith(".bin"):
                # Legacy pickles are read with weights_only=True: no code runs from a stranger's file.
                sd = load_torch_file(path, what="pytorch_model.bin")
                if not isinstance(sd, dict):
                    raise CheckpointError(f"{path}: expected a state dict, got {type(sd).__name__}")
                out.update({k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)})
                continue
            try:
                with safe_open(path, framework="pt") as f:
                    for k in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                        if k.startswith(prefix):
                            out[k[len(prefix) :]] = f.get_tensor(k)
            except Exception as e:  # safetensors raises its own error types
                raise CheckpointError(f"{path}: cannot read safetensors file ({e})") from e
        if out:
            return out
    raise CheckpointError(f"{name_or_path}: no weights under any of the prefixes {prefixes}")


def _pickle_files(name_or_path: str) -> list[str]:
    """The legacy pickle weight files of a checkpoint folder or hub id (``pytorch_model*.bin``), as paths."""
    if os.path.isfile(name_or_path):
        return [name_or_path]
    if os.path.isdir(name_or_path):
        return sorted(
            os.path.join(name_or_path, f)
            for f in os.listdir(name_or_path)
            if f.startswith("pytorch_model") and f.endswith(".bin")
        )
    found = resolve_file(name_or_path, "pytorch_model.bin")
    return [found] if found else []


_REFUSAL = re.compile(r"(Unsupported global: GLOBAL [\w.]+|Unsupported operand[^.\n]*)")


@contextmanager
def naming_refused_pickles(name_or_path: str | os.PathLike, *, what: str) -> Iterator[None]:
    """Inside this block, a pickle weight file that ``torch.load(weights_only=True)`` refuses (transformers
    reads ``pytorch_model.bin`` that way) becomes a :class:`~mowe.errors.CheckpointError` naming the file and
       ``what``
    it is, instead of torch's message, which names no file.

    Raises:
        CheckpointError: ``"<folder>/pytorch_model.bin: the LLM's pickle weight file was refused by
            torch.load(weights_only=True) ..."``.
    """
    try:
        yield
    except pickle.UnpicklingError as e:
        source = os.fspath(name_or_path)
        files = _pickle_files(source)
        named = ", ".join(files) if files else f"a pickle weight file of {source}"
        reason = _REFUSAL.search(strip_ansi(str(e)))
        raise CheckpointError(
            f"{named}: the {what}'s pickle weight file was refused by torch.load(weights_only=True): it "
            f"holds "
            f"objects other than tensors ({reason.group(1).strip() if reason else 'see --debug'}), and "
            f"loading it "
            f"would run their code; use the safetensors weights, or convert the file where you trust it"
        ) from e


def load_torch_file(path: str | os.PathLike, *, what: str) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU, for a checkpoint described as ``what``.

    Raises:
        CheckpointError: the file does not exist or cannot be unpickled as plain tensors and containers
            (the message names the file and ``what`` it should have been). Nothing in it is executed.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: {what} file does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types; all mean "not a usable checkpoint"
        raise CheckpointError(f"{path}: not a loadable {what} file ({strip_ansi(str(e))})") from e


def resolve_model_dir(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    force_download: bool = False,
    subfolder: str | None = None,
) -> str:
    """A local folder holding the files of ``name_or_path`` (a folder, or a hub id such as ``"org/name"``).

    Args:
        name_or_path: a local folder, or a hub repository id.
        revision: branch, tag or commit of a hub repository (default ``"main"``).
        cache_dir: the hub cache to use instead of ``HF_HUB_CACHE``.
        local_files_only: never touch the network (``HF_HUB_OFFLINE=1`` does the same).
        token: hub token (None: the logged-in one, if any).
        force_download: fetch again even if cached.
        subfolder: a folder inside the repository / folder.

    Raises:
        CheckpointError: neither a folder nor a repository that can be found (names it and why).
    """
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        return os.path.join(path, subfolder) if subfolder else path
    if os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1 or os.path.exists(path):
        raise CheckpointError(
            f"{path}: missing: no such model folder (and not a hub id of the form 'org/name')"
        )
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id=path,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            force_download=force_download,
        )
    except Exception as e:  # HfHubHTTPError, LocalEntryNotFoundError, HFValidationError, OSError ...
        where = f" at revision {revision!r}" if revision else ""
        raise CheckpointError(
            f"{path}: not a local folder, and the hub repository{where} cannot be found or "
            f"read ({type(e).__name__}: {e})"
        ) from e
    return os.path.join(folder, subfolder) if subfolder else folder


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    **upload_kwargs: Any,
) -> Any:
    """Upload every file of ``folder`` to the hub repository ``repo_id`` (created if missing).

    Returns:
        huggingface_hub's ``CommitInfo`` of the upload.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, private=private, exist_ok=True, repo_type="model")
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=os.fspath(folder),
        repo_type="model",
        commit_message=commit_message or "Upload mowe model",
        revision=revision,
        create_pr=create_pr,
        **upload_kwargs,
    )

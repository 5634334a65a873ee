"""Model folders by hub id or path (through ``huggingface_hub``), and uploads (``push_to_hub``).

A hub id resolves to the cached snapshot of that repository (``snapshot_download``): with ``HF_HUB_OFFLINE=1`` or
``local_files_only=True`` only the local cache (``cache_dir`` or ``HF_HUB_CACHE``) is read. Frozen encoders and LLMs
that a saved model references by their own hub id resolve the same way, through transformers' ``from_pretrained``
(they use the environment's cache, ``HF_HUB_CACHE``).
"""

from __future__ import annotations

import os
from typing import Any

from mowe.errors import CheckpointError

__all__ = ["push_folder", "resolve_model_dir"]


def resolve_model_dir(name_or_path: str | os.PathLike, *, revision: str | None = None,
                      cache_dir: str | os.PathLike | None = None, local_files_only: bool = False,
                      token: str | bool | None = None, force_download: bool = False,
                      subfolder: str | None = None) -> str:
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
        raise CheckpointError(f"{path}: missing: no such model folder (and not a hub id of the form 'org/name')")
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id=path, revision=revision, cache_dir=cache_dir,
                                   local_files_only=local_files_only, token=token, force_download=force_download)
    except Exception as e:  # HfHubHTTPError, LocalEntryNotFoundError, HFValidationError, OSError ...
        where = f" at revision {revision!r}" if revision else ""
        raise CheckpointError(f"{path}: not a local folder, and the hub repository{where} cannot be found or "
                              f"read ({type(e).__name__}: {e})") from e
    return os.path.join(folder, subfolder) if subfolder else folder


def push_folder(folder: str | os.PathLike, repo_id: str, *, commit_message: str | None = None,
                private: bool | None = None, token: str | bool | None = None, revision: str | None = None,
                create_pr: bool = False, **upload_kwargs: Any) -> Any:
    """Upload every file of ``folder`` to the hub repository ``repo_id`` (created if missing).

    Returns:
        huggingface_hub's ``CommitInfo`` of the upload.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, private=private, exist_ok=True, repo_type="model")
    return api.upload_folder(repo_id=repo_id, folder_path=os.fspath(folder), repo_type="model",
                             commit_message=commit_message or "Upload mowe model", revision=revision,
                             create_pr=create_pr, **upload_kwargs)

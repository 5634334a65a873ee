"""Where a Hugging Face dataset comes from: ``load_from_disk`` folders, the ``audiofolder`` layout, parquet
and arrow files, and hub ids resolved offline through the cache.

:func:`is_hf_source` tells a manifest from a dataset (what ``data.train`` / ``mowe eval --data`` were given);
:func:`load_hf_source` opens it as a ``datasets.Dataset`` (or ``IterableDataset`` with ``streaming=True``).
The rows are read, never decoded, here: :mod:`mowe.data.hf_dataset` decodes the audio with mowe's own loader.

=======================================  ==================================================================
source                                   read with
=======================================  ==================================================================
folder with ``state.json`` /             ``datasets.load_from_disk`` (a ``DatasetDict`` folder: ``split``
``dataset_dict.json``                    picks one, default ``train``)
folder with ``metadata.csv`` /           the ``audiofolder`` layout: the metadata table (``file_name``
``metadata.jsonl`` / ``metadata.parquet``  column) becomes the rows, ``file_name`` the audio path. mowe reads
(in it or in ``<split>/``)               the layout itself: ``datasets``' audiofolder builder needs
                                         torchcodec to *encode* paths, which has no build for every torch
``*.parquet`` / ``*.arrow`` file         ``load_dataset("parquet" | "arrow", data_files=...)``
anything else                            a hub id: ``load_dataset(id, split=...)`` with ``HF_HUB_OFFLINE``
                                         and ``HF_DATASETS_OFFLINE`` set (the cache only; never the network)
=======================================  ==================================================================

``datasets`` is the optional extra ``mowe[datasets]``; without it every function here raises
:class:`~mowe.errors.MissingExtraError` naming it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mowe.errors import ConfigError, ManifestError, MissingExtraError
from mowe.hub import looks_like_path

__all__ = ["DATASETS_EXTRA", "HFSource", "import_datasets", "is_hf_source", "load_hf_source"]

DATASETS_EXTRA = "mowe[datasets]"
_DISK_MARKERS = ("state.json", "dataset_dict.json", "dataset_info.json")
_METADATA = ("metadata.csv", "metadata.jsonl", "metadata.parquet")
_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow"}


def import_datasets() -> Any:
    """The ``datasets`` module, or :class:`MissingExtraError` naming the extra to install."""
    try:
        # Function-level import: `datasets` (with pyarrow) is the optional extra mowe[datasets], imported only
        # by
        # the code paths that read Hugging Face datasets, so a plain install never needs it.
        import datasets
    except ImportError as e:
        raise MissingExtraError(
            f"reading Hugging Face datasets needs the optional extra: pip install '{DATASETS_EXTRA}' ({e})"
        ) from e
    return datasets


def is_hf_source(source: str | os.PathLike) -> bool:
    """True when ``source`` is read as a Hugging Face dataset, False for a JSONL manifest.

    A manifest is a file that is not parquet / arrow (also a FIFO such as bash's ``<(...)``), or a missing
    path ending in ``.jsonl`` / ``.json`` (the manifest reader then names it). A folder, a parquet / arrow
    file or something that is not a local path (a hub id) is a dataset.
    """
    s = os.path.expanduser(os.fspath(source))
    ext = os.path.splitext(s)[1].lower()
    if os.path.isdir(s) or ext in _FILE_BUILDERS:
        return True
    if os.path.exists(s) or ext in (".jsonl", ".json"):
        return False
    return not looks_like_path(s)


class HFSource:
    """An opened source: ``dataset`` (``datasets.Dataset`` or ``IterableDataset``), ``name`` (for messages),
    ``root`` (the folder relative audio paths are resolved against; None for a hub id) and ``kind``."""

    def __init__(self, dataset: Any, *, name: str, root: str | None, kind: str):
        self.dataset, self.name, self.root, self.kind = dataset, name, root, kind

    def __repr__(self) -> str:
        return f"HFSource({self.name!r}, kind={self.kind!r})"


def load_hf_source(
    source: str | os.PathLike, *, split: str | None = None, streaming: bool = False
) -> HFSource:
    """Open ``source`` (see the module table) without decoding anything.

    Args:
        source: a folder, a parquet / arrow file, or a hub id.
        split: the split of a ``DatasetDict`` folder, an audiofolder with split subfolders, or a hub dataset
            (default ``train``).
        streaming: return an ``IterableDataset`` (rows are read as they are iterated).

    Raises:
        MissingExtraError: ``datasets`` is not installed.
        ManifestError: the source cannot be read (names it), or the split does not exist (names the splits).
    """
    ds = import_datasets()
    s = os.path.expanduser(os.fspath(source))
    if os.path.isdir(s):
        if any(os.path.isfile(os.path.join(s, m)) for m in _DISK_MARKERS):
            return _from_disk(ds, s, split, streaming)
        return _audiofolder(ds, s, split, streaming)
    ext = os.path.splitext(s)[1].lower()
    if ext in _FILE_BUILDERS:
        if not os.path.isfile(s):
            raise ManifestError(f"dataset file '{s}' does not exist")
        with _reading(s):
            d = ds.load_dataset(
                _FILE_BUILDERS[ext], data_files=os.path.abspath(s), split="train", streaming=streaming
            )
        return HFSource(d, name=s, root=os.path.dirname(os.path.abspath(s)), kind=_FILE_BUILDERS[ext])
    return _from_hub(ds, s, split, streaming)


@contextmanager
def _reading(name: str) -> Iterator[None]:
    """Any failure of ``datasets`` while opening ``name`` becomes one ManifestError naming it."""
    try:
        yield
    except (ManifestError, ConfigError):
        raise
    except Exception as e:  # noqa: BLE001 - datasets / pyarrow raise many types for an unreadable source
        raise ManifestError(f"cannot read dataset '{name}': {type(e).__name__}: {e}") from e


def _pick_split(d: Any, name: str, split: str | None) -> Any:
    if not hasattr(d, "keys"):  # a single Dataset
        if split not in (None, "train"):
            raise ManifestError(f"dataset '{name}' has no splits; split {split!r} cannot be chosen")
        return d
    want = split or "train"
    if want not in d:
        raise ManifestError(f"dataset '{name}' has no split {want!r} (splits: {sorted(d.keys())})")
    return d[want]


def _from_disk(ds: Any, path: str, split: str | None, streaming: bool) -> HFSource:
    with _reading(path):
        d = _pick_split(ds.load_from_disk(path), path, split)
        if streaming:
            d = d.to_iterable_dataset()
    return HFSource(d, name=path, root=path, kind="load_from_disk")


def _audiofolder(ds: Any, path: str, split: str | None, streaming: bool) -> HFSource:
    folder = path
    if not any(os.path.isfile(os.path.join(folder, m)) for m in _METADATA):
        folder = os.path.join(path, split or "train")
    meta = [os.path.join(folder, m) for m in _METADATA if os.path.isfile(os.path.join(folder, m))]
    if not meta:
        raise ManifestError(
            f"dataset folder '{path}' is neither a save_to_disk folder (no {' / '.join(_DISK_MARKERS)}) "
            f"nor an audiofolder (no {' / '.join(_METADATA)} in it or in its "
            f"'{split or 'train'}' subfolder)"
        )
    if len(meta) > 1:
        raise ManifestError(f"audiofolder '{folder}' has several metadata files {meta}; keep one")
    builder = {"csv": "csv", "jsonl": "json", "parquet": "parquet"}[meta[0].rsplit(".", 1)[1]]
    with _reading(meta[0]):
        d = ds.load_dataset(builder, data_files=os.path.abspath(meta[0]), split="train", streaming=streaming)
    if "file_name" not in (d.column_names or []):
        raise ManifestError(
            f"{meta[0]}: an audiofolder metadata file needs a 'file_name' column (columns: {d.column_names})"
        )
    return HFSource(d, name=folder, root=folder, kind="audiofolder")


def _from_hub(ds: Any, repo_id: str, split: str | None, streaming: bool) -> HFSource:
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    offline = ds.config.HF_HUB_OFFLINE
    os.environ.update({k: "1" for k in saved})
    ds.config.HF_HUB_OFFLINE = True  # read at import time by datasets; set for this call only
    try:
        try:
            d = ds.load_dataset(repo_id, split=split or "train", streaming=streaming)
        except Exception as e:  # noqa: BLE001 - not cached, or not a dataset id: one message either way
            raise ManifestError(
                f"dataset '{repo_id}' is neither a local manifest / dataset nor a hub dataset in the "
                f"local cache (mowe reads hub datasets offline; download it once with "
                f"datasets.load_dataset({repo_id!r}) on a machine online): {type(e).__name__}: "
                f"{e}"
            ) from e
    finally:
        ds.config.HF_HUB_OFFLINE = offline
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return HFSource(d, name=repo_id, root=None, kind="hub")

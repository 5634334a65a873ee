"""Manifests out and back: a folder of JSONL manifests as a Hugging Face dataset, and a dataset as manifests.

* :func:`manifests_to_dataset`: every ``*.jsonl`` of a folder (or one manifest) becomes a split of a
  ``DatasetDict`` saved with ``save_to_disk``: columns ``id``, ``audio`` (an ``Audio`` feature holding the
  file's bytes unchanged and its relative path), ``instruction``, ``answer``, ``task``, ``duration`` (seconds,
  from the header) and ``meta`` (the line's ``meta`` as JSON text, "" when absent).
* :func:`dataset_to_manifests`: each split of a dataset (any source :mod:`mowe.data.hf_sources` opens) becomes
  ``<split>.jsonl`` in a folder, its clips written to ``audio/<split>/`` as the bytes the dataset stores.

The audio bytes are copied, never re-encoded, so a round trip gives byte-identical files and the same
examples. ``mowe data export SRC OUT`` is the command-line form.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from typing import Any

import soundfile as sf

from mowe.data.hf_dataset import DatasetColumns, RowReader
from mowe.data.hf_sources import HFSource, import_datasets, load_hf_source
from mowe.data.manifest import ManifestDataset
from mowe.errors import ConfigError, ManifestError
from mowe.io import read_bytes

__all__ = ["dataset_to_manifests", "manifests_to_dataset"]


def _manifests(source: str) -> dict[str, str]:
    if os.path.isdir(source):
        found = {
            os.path.splitext(n)[0]: os.path.join(source, n)
            for n in sorted(os.listdir(source))
            if n.endswith(".jsonl")
        }
        if not found:
            raise ManifestError(f"'{source}' holds no *.jsonl manifest")
        return found
    return {os.path.splitext(os.path.basename(source))[0]: source}


def manifests_to_dataset(source: str | os.PathLike, out_dir: str | os.PathLike) -> Any:
    """Write the manifest(s) at ``source`` (a folder of ``*.jsonl`` or one file) as a ``DatasetDict`` (one
    split per manifest, named after it) with ``save_to_disk`` into ``out_dir``; returns the ``DatasetDict``.

    Every line is checked as training would check it (:class:`~mowe.data.ManifestDataset`, bad lines raise).
    """
    ds = import_datasets()
    splits = {}
    for split, path in _manifests(os.fspath(source)).items():
        man = ManifestDataset(path, max_audio_seconds=None)
        metas = _metas(path)
        cols: dict[str, list[Any]] = {
            k: [] for k in ("id", "audio", "instruction", "answer", "task", "duration", "meta")
        }
        for i in range(len(man)):
            e = man.example_info(i)
            cols["id"].append(e["id"])
            cols["audio"].append(
                {"bytes": read_bytes(e["path"]), "path": os.path.relpath(e["path"], man.root)}
            )
            for k in ("instruction", "answer", "task", "duration"):
                cols[k].append(e[k])
            cols["meta"].append(metas.get(e["line"], ""))
        # Cast, not built with the Audio feature: encoding through the feature needs torchcodec even for
        # bytes.
        splits[split] = ds.Dataset.from_dict(cols).cast_column("audio", ds.Audio())
    dd = ds.DatasetDict(splits)
    dd.save_to_disk(os.fspath(out_dir))
    return dd


def _metas(path: str) -> dict[int, str]:
    out = {}
    for lineno, line in enumerate(read_bytes(path).removeprefix(b"\xef\xbb\xbf").split(b"\n"), start=1):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "meta" in obj:
            out[lineno] = json.dumps(obj["meta"], ensure_ascii=False)
    return out


def _safe(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "clip"
    return s[:80] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8] if len(s) > 80 else s


def _extension(data: bytes, path: str | None) -> str:
    ext = os.path.splitext(path or "")[1].lower()
    if ext:
        return ext
    try:
        return "." + sf.info(io.BytesIO(data)).format.lower()
    except Exception:  # noqa: BLE001 - the manifest reader names an unreadable clip when it is used
        return ".bin"


def dataset_to_manifests(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    columns: DatasetColumns | dict[str, str] | None = None,
) -> dict[str, str]:
    """Write every split of the dataset at ``source`` as ``<out_dir>/<split>.jsonl`` with its clips under
    ``<out_dir>/audio/<split>/``; returns ``{split: manifest path}``.

    Args:
        source: a ``save_to_disk`` folder (a ``DatasetDict`` gives one manifest per split), parquet / arrow
            file,
            audiofolder or hub id in the cache.
        columns: as :class:`~mowe.data.hf_dataset.DatasetColumns` (the dataset's column names).

    Raises:
        ManifestError: a bad row (names dataset, row and column). ConfigError: ``out_dir`` already has a
            manifest.
    """
    ds = import_datasets()
    cols = columns if isinstance(columns, DatasetColumns) else DatasetColumns.from_mapping(columns)
    source = os.fspath(source)
    out_dir = os.fspath(out_dir)
    splits = [None]
    if os.path.isfile(os.path.join(source, "dataset_dict.json")):
        splits = list(ds.load_from_disk(source).keys())
    written = {}
    for split in splits:
        src = load_hf_source(source, split=split)
        name = split or "train"
        target = os.path.join(out_dir, f"{name}.jsonl")
        if os.path.exists(target):
            raise ConfigError(f"'{target}' already exists; export into an empty folder")
        written[name] = _write_split(src, cols, out_dir, name)
    return written


def _write_split(src: HFSource, cols: DatasetColumns, out_dir: str, split: str) -> str:
    reader = RowReader(
        src,
        cols,
        sample_rate=16_000,
        max_audio_seconds=None,
        length_policy="truncate",
        on_bad_example="error",
    )
    hf = reader.prepare(src.dataset)
    has_meta = "meta" in (src.dataset.column_names or [])
    metas = src.dataset["meta"] if has_meta else None
    os.makedirs(os.path.join(out_dir, "audio", split), exist_ok=True)
    lines = []
    for i in range(len(hf)):
        r = reader.parse(i, hf[i])
        if r is None:  # not reached with on_bad_example="error"
            continue
        data = r.audio.get("bytes") if isinstance(r.audio, dict) else None
        if not data:
            data = read_bytes(reader.resolve_path(r.audio))
        path = r.audio if isinstance(r.audio, str) else r.audio.get("path")
        rel = os.path.join("audio", split, _safe(r.id) + _extension(data, path))
        with open(os.path.join(out_dir, rel), "wb") as f:
            f.write(data)
        line = {"id": r.id, "audio": rel, "instruction": r.instruction, "answer": r.answer, "task": r.task}
        if metas is not None and metas[i]:
            line["meta"] = json.loads(metas[i])
        lines.append(json.dumps(line, ensure_ascii=False))
    target = os.path.join(out_dir, f"{split}.jsonl")
    with open(target, "w", encoding="utf-8") as f:
        f.write("".join(x + "\n" for x in lines))
    return target

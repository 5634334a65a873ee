"""One entry for every data source: a JSONL manifest or a Hugging Face dataset, chosen by what the path is.

:func:`open_dataset` is what training (``data.train`` / ``data.dev`` in a run file) and ``mowe eval --data``
call: a manifest gives a :class:`~mowe.data.ManifestDataset`, anything
:func:`~mowe.data.hf_sources.is_hf_source` calls a dataset gives a
:class:`~mowe.data.hf_dataset.HFAudioDataset` (or, with ``streaming=True``, a
:class:`~mowe.data.hf_dataset.HFStreamDataset`). All three yield the same items.

Example:
    >>> ds = open_dataset("data/train_hf", columns={"answer": "label", "task": "=gender"})   # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from mowe.data.hf_dataset import DatasetColumns, HFAudioDataset, HFStreamDataset
from mowe.data.hf_sources import is_hf_source, load_hf_source
from mowe.data.manifest import ManifestDataset
from mowe.errors import ConfigError

__all__ = ["open_dataset", "parse_column_args"]


def open_dataset(
    source: str | os.PathLike,
    *,
    columns: DatasetColumns | Mapping[str, str] | None = None,
    split: str | None = None,
    streaming: bool = False,
    sample_rate: int = 16_000,
    max_audio_seconds: float | None = 30.0,
    length_policy: str = "truncate",
    on_bad_example: str = "error",
    tasks: Sequence[str] | None = None,
    audio_as_path: bool = False,
) -> Any:
    """A manifest or a Hugging Face dataset as mowe examples.

    Args:
        source: a ``.jsonl`` manifest, a dataset folder (``save_to_disk`` or audiofolder), a parquet / arrow
            file,
            or a hub id in the local cache.
        columns, split, streaming: for datasets only (a manifest given one of them is a ConfigError).
        sample_rate, max_audio_seconds, length_policy, on_bad_example, tasks: as
            :class:`~mowe.data.ManifestDataset`.
        audio_as_path: a manifest's examples hold their file's path, for the processor to decode window by
            window (:class:`~mowe.data.ManifestDataset`'s option; datasets decode their audio as before).
    """
    kw = {
        "sample_rate": sample_rate,
        "max_audio_seconds": max_audio_seconds,
        "length_policy": length_policy,
        "on_bad_example": on_bad_example,
        "tasks": tasks,
    }
    if not is_hf_source(source):
        given = [n for n, v in (("columns", columns), ("split", split), ("streaming", streaming)) if v]
        if given:
            raise ConfigError(
                f"'{os.fspath(source)}' is a JSONL manifest; {', '.join(given)} apply to Hugging Face "
                f"datasets only (a manifest's fields are audio, instruction, answer, task, id)"
            )
        return ManifestDataset(source, audio_as_path=audio_as_path, **kw)
    cols = (
        columns if isinstance(columns, DatasetColumns) else DatasetColumns.from_mapping(dict(columns or {}))
    )
    src = load_hf_source(source, split=split, streaming=streaming)
    return (HFStreamDataset if streaming else HFAudioDataset)(src, cols, **kw)


def parse_column_args(items: Sequence[str] | None, *, flag: str = "--column") -> dict[str, str]:
    """``["answer=label", "task==asr"]`` -> ``{"answer": "label", "task": "=asr"}`` (command-line column
    maps).

    Raises:
        ConfigError: an item without ``=``, naming the flag.
    """
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"{flag} {item!r}: expected FIELD=COLUMN (or FIELD==constant)")
        out[key] = value
    DatasetColumns.from_mapping(out, where=flag)
    return out

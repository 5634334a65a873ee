"""Reading the public audio benchmarks' own files as mowe examples (their scoring:
:mod:`mowe.evaluation.benchmarks`).

=================  ===============================================  ========================================
format             fields read                                      becomes
=================  ===============================================  ========================================
``mmau``           ``id``, ``audio_id`` (path), ``question``,        instruction: the question and the
                   ``choices`` (list), ``answer`` (a choice's        lettered choices; answer: the choice
                   text), ``task``                                  text; task: ``task``
``airbench``       ``uniq_id``, ``path``, ``question``,              the audio at
                   ``choice_a`` .. ``choice_d``, ``answer_gt``,      ``<task_name>_<dataset_name>/<path>``
                   ``task_name``, ``dataset_name``                  (AIR-Bench's layout); instruction: its
                                                                    inference prompt; task: task_name
``dynamic-superb`` ``file`` (id), ``audio``, ``instruction``,        task: the dataset's name (one task per
                   ``label``                                        Dynamic-SUPERB dataset) unless given
=================  ===============================================  ========================================

A source is a ``.json`` (a list of rows, as MMAU and AIR-Bench ship) or ``.jsonl`` file, or anything
:func:`~mowe.data.hf_sources.load_hf_source` opens. Relative audio paths resolve against the file's folder.
Items carry ``choices`` (the options, in order).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from mowe.data.hf_dataset import DatasetColumns, HFAudioDataset
from mowe.data.hf_sources import HFSource, import_datasets, load_hf_source
from mowe.errors import ConfigError, ManifestError

__all__ = ["BENCHMARK_READERS", "open_benchmark"]

_AIRBENCH_PROMPT = (
    "Choose the most suitable answer from options A, B, C, and D to respond the question in next line, "
    "you may only choose A or B or C or D."
)


def _need(row: dict[str, Any], keys: tuple[str, ...], fmt: str) -> None:
    missing = [k for k in keys if row.get(k) is None]
    if missing:
        raise KeyError(f"{fmt} row lacks {missing}")


def _mmau(row: dict[str, Any]) -> dict[str, Any]:
    _need(row, ("audio_id", "question", "choices", "answer"), "mmau")
    letters = "abcdefghij"
    options = "\n".join(f"({letters[i]}) {c}" for i, c in enumerate(row["choices"]))
    return {
        "id": str(row.get("id")),
        "audio": row["audio_id"],
        "answer": row["answer"],
        "task": row.get("task") or "mmau",
        "choices": [str(c) for c in row["choices"]],
        "instruction": f"{row['question']}\nChoose the correct option from the following options:\n{options}",
    }


def _airbench(row: dict[str, Any]) -> dict[str, Any]:
    _need(
        row,
        ("path", "question", "choice_a", "choice_b", "answer_gt", "task_name", "dataset_name"),
        "airbench",
    )
    choices = [row[k] for k in ("choice_a", "choice_b", "choice_c", "choice_d") if row.get(k) is not None]
    path = row["path"]
    if row["task_name"] == "Audio_Grounding":  # AIR-Bench ships this task's clips as .flac under a .wav name
        path = path[:-3] + "flac"
    lines = "\n".join(f"{'ABCD'[i]}. {c}" for i, c in enumerate(choices))
    return {
        "id": str(row.get("uniq_id")),
        "audio": f"{row['task_name']}_{row['dataset_name']}/{path}",
        "answer": row["answer_gt"],
        "task": row["task_name"],
        "choices": [str(c) for c in choices],
        "instruction": f"{_AIRBENCH_PROMPT}\n{row['question']}\n{lines}",
    }


def _dynamic_superb(row: dict[str, Any]) -> dict[str, Any]:
    _need(row, ("audio", "instruction", "label"), "dynamic-superb")
    return {
        "id": str(row.get("file")),
        "audio": row["audio"],
        "instruction": row["instruction"],
        "answer": row["label"],
        "choices": [],
    }


#: format -> row mapper (benchmark row -> id, audio, instruction, answer, [task], choices)
BENCHMARK_READERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "mmau": _mmau,
    "airbench": _airbench,
    "dynamic-superb": _dynamic_superb,
}


def _open(source: str, split: str | None) -> HFSource:
    if os.path.splitext(source)[1].lower() in (".json", ".jsonl"):
        ds = import_datasets()
        if not os.path.isfile(source):
            raise ManifestError(f"benchmark file '{source}' does not exist")
        try:
            d = ds.load_dataset(
                "json", data_files=os.path.abspath(source), split="train", keep_in_memory=True
            )
        except Exception as e:  # noqa: BLE001 - datasets / pyarrow raise many types for a malformed file
            raise ManifestError(f"cannot read benchmark file '{source}': {type(e).__name__}: {e}") from e
        return HFSource(d, name=source, root=os.path.dirname(os.path.abspath(source)), kind="json")
    return load_hf_source(source, split=split)


def open_benchmark(
    source: str | os.PathLike,
    fmt: str,
    *,
    split: str | None = None,
    task: str | None = None,
    sample_rate: int = 16_000,
    max_audio_seconds: float | None = 30.0,
    on_bad_example: str = "error",
) -> HFAudioDataset:
    """A benchmark file or dataset in ``fmt`` (module table) as mowe examples with ``choices``.

    Args:
        source: the benchmark's JSON / JSONL file, or a dataset (folder, parquet, hub id in the cache).
        fmt: ``"mmau"``, ``"airbench"`` or ``"dynamic-superb"``.
        task: the task name (``dynamic-superb``: default the dataset's name; others: overrides the rows').
        sample_rate, max_audio_seconds, on_bad_example: as :class:`~mowe.data.ManifestDataset`.

    Raises:
        ConfigError: an unknown format. ManifestError: a row without the format's fields (names row and
            field).
    """
    if fmt not in BENCHMARK_READERS:
        raise ConfigError(f"--format: unknown benchmark format {fmt!r}; known: {list(BENCHMARK_READERS)}")
    src = _open(os.fspath(source), split)
    hf = src.dataset
    ds = import_datasets()
    audio_feature = (hf.features or {}).get("audio")
    if isinstance(audio_feature, ds.Audio):
        hf = hf.cast_column("audio", ds.Audio(decode=False))
    reader = BENCHMARK_READERS[fmt]
    default_task = task or os.path.basename(os.path.normpath(src.name)).removesuffix(".json").removesuffix(
        ".jsonl"
    )

    def convert(row: dict[str, Any], idx: int) -> dict[str, Any]:
        try:
            out = reader(row)
        except KeyError as e:
            raise ManifestError(f"dataset '{src.name}', row {idx}: {e.args[0]}") from None
        if task is not None or "task" not in out:
            out["task"] = task or default_task
        if out["id"] in ("None", ""):
            out["id"] = f"{default_task}:{idx}"
        return out

    columns = list(hf.column_names)
    try:
        hf = hf.map(convert, with_indices=True, remove_columns=columns, keep_in_memory=True)
    except ManifestError:
        raise
    except Exception as e:  # noqa: BLE001 - datasets wraps the mapper's error in its own types
        cause = e.__cause__ or e.__context__
        if isinstance(cause, ManifestError):
            raise cause from None
        raise
    mapped = HFSource(hf, name=src.name, root=src.root, kind=src.kind)
    return HFAudioDataset(
        mapped,
        DatasetColumns(id="id", choices="choices"),
        sample_rate=sample_rate,
        max_audio_seconds=max_audio_seconds,
        on_bad_example=on_bad_example,
    )

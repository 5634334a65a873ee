"""Hugging Face datasets as mowe examples: the same items as :class:`~mowe.data.ManifestDataset`, from any
source :mod:`mowe.data.hf_sources` opens.

* :class:`HFAudioDataset` (map-style): the text columns are read and checked at construction, and every clip's
  *duration* is known without decoding it (a duration column, or the audio header parsed from the stored
  bytes), so ``lengths`` feeds length-grouped batching. Audio is decoded lazily in ``__getitem__``.
* :class:`HFStreamDataset` (an ``IterableDataset`` source, ``streaming: true``): rows are checked as they are
  read; :class:`~mowe.data.stream_sampler.StreamSampler` batches them.

The ``Audio`` column is read with ``decode=False`` (``{"bytes", "path"}``) and decoded by
:func:`mowe.data.audio.load_audio_bytes` (or :func:`~mowe.data.audio.load_audio` for a path) at the model's
rate: ``datasets``' own decoder needs torchcodec, and going through mowe's loader makes a clip read from a
dataset bit-identical to the same file read from a manifest. A plain string column holds paths (relative ones
resolve against the dataset's folder).

Columns are given as :class:`DatasetColumns`: each mowe field names a column, or is a constant written
``"=value"`` (e.g. ``task: "=asr"``, ``instruction: "=Transcribe the speech."``) for datasets without one.
``id``, ``duration`` and ``choices`` (a list of options, e.g. for a benchmark) are optional: by default the
columns of those names are used when present (ids otherwise ``"<dataset>:<row>"``).

Bad rows follow ``on_bad_example`` as in a manifest: ``"error"`` raises
:class:`~mowe.errors.ManifestError` (:class:`~mowe.data.manifest.ManifestAudioError` for audio) naming the
dataset, the 0-based row index and the column; ``"skip"`` records it in ``skipped`` (``SkippedExample.line``
holds the row index) and warns.

Shape legend: ``s`` samples.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

from torch.utils.data import Dataset

from mowe.data.audio import audio_info, audio_info_bytes, load_audio, load_audio_bytes
from mowe.data.hf_sources import HFSource, import_datasets
from mowe.data.manifest import BadExampleWarning, ManifestAudioError, SkippedExample
from mowe.errors import AudioLoadError, ConfigError, ManifestError

__all__ = ["DatasetColumns", "HFAudioDataset", "HFStreamDataset", "RowReader"]

_ON_BAD = ("error", "skip")
_NOT_READ = object()
_TEXT_FIELDS = ("instruction", "answer", "task")


@dataclass(frozen=True)
class DatasetColumns:
    """Which column holds each field (``"=value"``: a constant). ``id`` / ``duration``: None uses the columns
    named ``id`` / ``duration`` when the dataset has them."""

    audio: str = "audio"
    instruction: str = "instruction"
    answer: str = "answer"
    task: str = "task"
    id: str | None = None
    duration: str | None = None
    choices: str | None = None

    @classmethod
    def from_mapping(cls, mapping: dict[str, str] | None, *, where: str = "columns") -> DatasetColumns:
        names = {f.name for f in fields(cls)}
        for k, v in (mapping or {}).items():
            if k not in names:
                raise ConfigError(f"{where}.{k}: unknown field (fields: {sorted(names)})")
            if not isinstance(v, str) or not v:
                raise ConfigError(f"{where}.{k}: expected a column name or '=constant', got {v!r}")
        return cls(**(mapping or {}))


@dataclass(frozen=True)
class _Row:
    row: int
    id: str
    audio: Any  # {"bytes", "path"} or a path string
    instruction: str
    answer: str
    task: str
    duration: float | None
    choices: tuple[str, ...] | None = None


class RowReader:
    """Checks rows of one dataset and decodes their audio (shared by the map-style and the streaming dataset).

    Args:
        source: the opened dataset (:func:`~mowe.data.hf_sources.load_hf_source`).
        columns: the column map.
        sample_rate, max_audio_seconds, length_policy, on_bad_example: as :class:`~mowe.data.ManifestDataset`.
    """

    def __init__(
        self,
        source: HFSource,
        columns: DatasetColumns,
        *,
        sample_rate: int,
        max_audio_seconds: float | None,
        length_policy: str,
        on_bad_example: str,
    ):
        if on_bad_example not in _ON_BAD:
            raise ConfigError(f"on_bad_example must be one of {_ON_BAD}, got {on_bad_example!r}")
        self.name, self.root = source.name, source.root
        self.sample_rate, self.max_audio_seconds = int(sample_rate), max_audio_seconds
        self.length_policy, self.on_bad_example = length_policy, on_bad_example
        self.skipped: list[SkippedExample] = []
        have = list(source.dataset.column_names or [])
        audio = columns.audio
        if source.kind == "audiofolder" and audio == "audio" and "audio" not in have:
            audio = "file_name"  # the audiofolder layout's audio column
        self.columns: dict[str, str | None] = {
            "audio": audio,
            "instruction": columns.instruction,
            "answer": columns.answer,
            "task": columns.task,
        }
        for f in ("id", "duration", "choices"):
            given = getattr(columns, f)
            self.columns[f] = given if given is not None else (f if f in have else None)
        missing = [
            (f, c)
            for f, c in self.columns.items()
            if c is not None and not c.startswith("=") and c not in have
        ]
        if missing:
            named = ", ".join(f"{f} -> {c!r}" for f, c in missing)
            raise ConfigError(
                f"dataset '{self.name}': no column for {named} (columns: {have}); name the columns "
                f"with data.columns / --column FIELD=COLUMN, or give a constant as FIELD='=value'"
            )
        if self.columns["audio"].startswith("="):
            raise ConfigError(
                f"dataset '{self.name}': the audio field must name a column, got {self.columns['audio']!r}"
            )
        self.read_columns = [c for c in self.columns.values() if c is not None and not c.startswith("=")]

    def prepare(self, hf: Any) -> Any:
        """``hf`` with only the used columns, the ``Audio`` column cast to ``decode=False``."""
        ds = import_datasets()
        hf = hf.select_columns(self.read_columns)
        feature = (hf.features or {}).get(self.columns["audio"])
        if isinstance(feature, ds.Audio):
            hf = hf.cast_column(self.columns["audio"], ds.Audio(decode=False))
        return hf

    # --------------------------------------------------------------------------------------------- checks
    def where(self, row: int, column: str | None = None) -> str:
        col = f", column {column!r}" if column else ""
        return f"dataset '{self.name}', row {row}{col}"

    def bad(
        self, row: int, column: str | None, reason: str, exc_type: type[Exception] = ManifestError
    ) -> None:
        """Raise (``"error"``) or record and warn (``"skip"``)."""
        msg = f"{self.where(row, column)}: {reason}"
        if self.on_bad_example == "error":
            raise exc_type(msg)
        if any(s.line == row and s.reason == reason for s in self.skipped):
            return  # a stream read again in the next epoch: recorded and warned once
        self.skipped.append(SkippedExample(row, column, reason))
        warnings.warn(f"skipping example: {msg}", BadExampleWarning, stacklevel=3)

    def _value(self, raw: dict[str, Any], field: str) -> Any:
        col = self.columns[field]
        return col[1:] if col.startswith("=") else raw[col]

    def parse(self, row: int, raw: dict[str, Any]) -> _Row | None:
        """Check one row's fields (audio not opened); None when it is bad under ``"skip"``."""
        vals = {}
        for f in _TEXT_FIELDS:
            v = self._value(raw, f)
            if not isinstance(v, str):
                self.bad(row, self.columns[f], f"field {f!r} must be a string, got {type(v).__name__}")
                return None
            if f == "task" and not v.strip():
                self.bad(row, self.columns[f], "field 'task' is empty")
                return None
            vals[f] = v
        ex_id: Any = f"{os.path.basename(os.path.normpath(self.name))}:{row}"
        if self.columns["id"] is not None:
            ex_id = self._value(raw, "id")
            if isinstance(ex_id, int) and not isinstance(ex_id, bool):
                ex_id = str(ex_id)
            if not isinstance(ex_id, str) or not ex_id:
                self.bad(row, self.columns["id"], f"field 'id' must be a non-empty string, got {ex_id!r}")
                return None
        audio = raw.get(self.columns["audio"], _NOT_READ)  # not read: indexing by a duration column
        if (
            audio is not _NOT_READ
            and not (isinstance(audio, str) and audio)
            and not (isinstance(audio, dict) and (audio.get("bytes") or audio.get("path")))
        ):
            self.bad(row, self.columns["audio"], f"no audio (expected bytes or a path, got {_short(audio)})")
            return None
        duration = None
        if self.columns["duration"] is not None:
            duration = self._value(raw, "duration")
            try:
                duration = float(duration)
            except (TypeError, ValueError):
                duration = float("nan")
            if not (math.isfinite(duration) and duration > 0):
                self.bad(
                    row,
                    self.columns["duration"],
                    f"duration must be a positive number of seconds, got {self._value(raw, 'duration')!r}",
                )
                return None
            duration = self._cap(duration)
        choices = None
        if self.columns["choices"] is not None:
            choices = self._value(raw, "choices")
            if not isinstance(choices, (list, tuple)) or not all(isinstance(c, str) for c in choices):
                self.bad(
                    row, self.columns["choices"], f"choices must be a list of strings, got {_short(choices)}"
                )
                return None
            choices = tuple(choices)
        return _Row(row, ex_id, audio, vals["instruction"], vals["answer"], vals["task"], duration, choices)

    def _cap(self, seconds: float) -> float:
        if self.length_policy == "truncate" and self.max_audio_seconds is not None:
            return min(seconds, float(self.max_audio_seconds))
        return seconds

    def resolve_path(self, audio: Any) -> str | None:
        """The file a path-valued audio cell names (relative paths resolve against the dataset's folder)."""
        p = audio if isinstance(audio, str) else audio.get("path")
        if not p:
            return None
        return p if os.path.isabs(p) or self.root is None else os.path.join(self.root, p)

    def duration(self, r: _Row) -> float | None:
        """Seconds of ``r``'s clip from its duration column or its header (no decoding); None if unreadable
        under ``"skip"``."""
        if r.duration is not None:
            return r.duration
        name = self.where(r.row, self.columns["audio"])
        try:
            data = r.audio.get("bytes") if isinstance(r.audio, dict) else None
            info = audio_info_bytes(data, name=name) if data else audio_info(self.resolve_path(r.audio))
        except AudioLoadError as e:
            self.bad(r.row, self.columns["audio"], _reason(name, e), ManifestAudioError)
            return None
        return self._cap(info.duration_seconds)

    def decode(self, r: _Row) -> dict[str, Any] | None:
        """``{"id", "audio": (s,) float32, "instruction", "answer", "task", "duration"}``; None when the clip
        cannot be decoded under ``"skip"``."""
        name = self.where(r.row, self.columns["audio"])
        max_s = self.max_audio_seconds if self.length_policy == "truncate" else None
        try:
            data = r.audio.get("bytes") if isinstance(r.audio, dict) else None
            if data:
                clip = load_audio_bytes(data, name=name, sample_rate=self.sample_rate, max_seconds=max_s)
            else:
                clip = load_audio(self.resolve_path(r.audio), sample_rate=self.sample_rate, max_seconds=max_s)
        except AudioLoadError as e:
            reason = _reason(name, e)
            if self.on_bad_example == "error":
                raise ManifestAudioError(f"{name}: {reason}") from e
            if not any(s.line == r.row for s in self.skipped):
                self.bad(r.row, self.columns["audio"], reason, ManifestAudioError)
            return None
        wave = clip.waveform
        item = {
            "id": r.id,
            "audio": wave,
            "instruction": r.instruction,
            "answer": r.answer,
            "task": r.task,
            "duration": wave.shape[0] / self.sample_rate,
        }
        if r.choices is not None:
            item["choices"] = list(r.choices)
        return item

    def skip_report(self) -> str:
        if not self.skipped:
            return ""
        lines = [f"{len(self.skipped)} example(s) skipped from dataset '{self.name}':"]
        for s in sorted(self.skipped, key=lambda s: s.line):
            col = f" (column {s.path!r})" if s.path else ""
            lines.append(f"  row {s.line}{col}: {s.reason}")
        return "\n".join(lines)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) < 60 else text[:57] + "..."


def _reason(name: str, e: Exception) -> str:
    msg = str(e) or type(e).__name__
    return msg.replace(f"audio file '{name}'", "the audio").replace(f"'{name}'", "the audio")


def _rows(hf: Any, batch_size: int = 256) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row index, row)`` pairs of a map-style or iterable dataset, read in Arrow batches."""
    i = 0
    for batch in hf.iter(batch_size=batch_size):
        keys = list(batch)
        for j in range(len(batch[keys[0]]) if keys else 0):
            yield i, {k: batch[k][j] for k in keys}
            i += 1


class HFAudioDataset(Dataset):
    """A map-style Hugging Face dataset as mowe examples (see the module docstring).

    Args:
        source: an opened source (:func:`~mowe.data.hf_sources.load_hf_source`, not streaming).
        columns: :class:`DatasetColumns` (or a mapping of them).
        sample_rate, max_audio_seconds, length_policy, on_bad_example, tasks: as
            :class:`~mowe.data.ManifestDataset`.

    Attributes:
        lengths, tasks, task_list, task_names, ids, skipped: as :class:`~mowe.data.ManifestDataset`
        (``lengths`` from the duration column or the headers: nothing is decoded at construction).

    Raises:
        ConfigError: a column that is not there, a bad option, a task in ``tasks`` with no example.
        ManifestError / ManifestAudioError: a bad row (``on_bad_example="error"``), naming dataset, row,
        column.
    """

    def __init__(
        self,
        source: HFSource,
        columns: DatasetColumns | dict[str, str] | None = None,
        *,
        sample_rate: int = 16_000,
        max_audio_seconds: float | None = 30.0,
        length_policy: str = "truncate",
        on_bad_example: str = "error",
        tasks: Sequence[str] | None = None,
    ):
        if not isinstance(columns, DatasetColumns):
            columns = DatasetColumns.from_mapping(columns)
        if isinstance(tasks, str):
            tasks = [tasks]
        self.reader = RowReader(
            source,
            columns,
            sample_rate=sample_rate,
            max_audio_seconds=max_audio_seconds,
            length_policy=length_policy,
            on_bad_example=on_bad_example,
        )
        self.name = source.name
        self.hf = self.reader.prepare(source.dataset)
        self.num_filtered = 0
        keep = set(tasks) if tasks is not None else None
        entries: list[_Row] = []
        seen: dict[str, int] = {}
        audio_col = self.reader.columns["audio"]
        # With a duration column the index needs no audio: the clips' bytes are first read when decoded.
        text_cols = [c for c in self.reader.read_columns if c != audio_col]
        index = (
            self.hf.select_columns(text_cols)
            if self.reader.columns["duration"] is not None and text_cols
            else self.hf
        )
        for i, raw in _rows(index):
            r = self.reader.parse(i, raw)
            if r is None:
                continue
            if keep is not None and r.task not in keep:
                self.num_filtered += 1
                continue
            if r.id in seen:
                self.reader.bad(
                    i, self.reader.columns["id"], f"duplicate id {r.id!r} (first in row {seen[r.id]})"
                )
                continue
            d = self.reader.duration(r)
            if d is None:
                continue
            seen[r.id] = i
            entries.append(
                _Row(r.row, r.id, None, r.instruction, r.answer, r.task, d, r.choices)
            )  # audio: lazily
        if tasks is not None:
            have = {e.task for e in entries}
            missing = [t for t in tasks if t not in have]
            if missing:
                raise ConfigError(
                    f"dataset '{self.name}': no usable example of task(s) {missing} "
                    f"(tasks present: {sorted(have)})"
                )
        if not entries:
            detail = f"; skipped:\n{self.skip_report()}" if self.skipped else ""
            raise ManifestError(f"dataset '{self.name}': no usable examples{detail}")
        self._entries = entries
        self.lengths: list[float] = [float(e.duration) for e in entries]  # type: ignore[arg-type]
        self.tasks: list[str] = [e.task for e in entries]
        self.task_list = self.tasks
        self.ids: list[str] = [e.id for e in entries]
        self.task_names: list[str] = sorted(set(self.tasks))

    @property
    def skipped(self) -> list[SkippedExample]:
        return self.reader.skipped

    def texts(self) -> list[str]:
        """The instruction and answer of every kept example, in order."""
        return [t for e in self._entries for t in (e.instruction, e.answer)]

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        e = self._entries[index]
        audio = self.hf[e.row][self.reader.columns["audio"]]
        return self.reader.decode(
            _Row(e.row, e.id, audio, e.instruction, e.answer, e.task, e.duration, e.choices)
        )

    def example_info(self, index: int) -> dict[str, Any]:
        """The checked fields of example ``index`` without decoding audio (``row``, ``duration``, ...)."""
        e = self._entries[index]
        info = {
            "id": e.id,
            "row": e.row,
            "instruction": e.instruction,
            "answer": e.answer,
            "task": e.task,
            "duration": e.duration,
        }
        if e.choices is not None:
            info["choices"] = list(e.choices)
        return info

    def skip_report(self) -> str:
        return self.reader.skip_report()

    def __repr__(self) -> str:
        return (
            f"HFAudioDataset({self.name!r}, examples={len(self)}, tasks={self.task_names}, "
            f"skipped={len(self.skipped)})"
        )


class HFStreamDataset:
    """A streaming (``IterableDataset``) source as mowe rows, for
    :class:`~mowe.data.stream_sampler.StreamSampler`.

    :meth:`rows` yields checked rows (nothing decoded); :meth:`duration` and :meth:`decode` read one row's
    header or audio. Each pass over :meth:`rows` reads the stream from its start, in the source's order.

    Args: as :class:`HFAudioDataset` (``source`` opened with ``streaming=True``).
    """

    streaming = True

    def __init__(
        self,
        source: HFSource,
        columns: DatasetColumns | dict[str, str] | None = None,
        *,
        sample_rate: int = 16_000,
        max_audio_seconds: float | None = 30.0,
        length_policy: str = "truncate",
        on_bad_example: str = "error",
        tasks: Sequence[str] | None = None,
    ):
        if not isinstance(columns, DatasetColumns):
            columns = DatasetColumns.from_mapping(columns)
        self.reader = RowReader(
            source,
            columns,
            sample_rate=sample_rate,
            max_audio_seconds=max_audio_seconds,
            length_policy=length_policy,
            on_bad_example=on_bad_example,
        )
        self.name = source.name
        self.hf = self.reader.prepare(source.dataset)
        self.keep = {tasks} if isinstance(tasks, str) else (set(tasks) if tasks is not None else None)

    @property
    def skipped(self) -> list[SkippedExample]:
        return self.reader.skipped

    def rows(self) -> Iterator[_Row]:
        """Checked rows in stream order (bad ones raise or are skipped; other tasks are left out)."""
        for i, raw in _rows(self.hf, batch_size=64):
            r = self.reader.parse(i, raw)
            if r is not None and (self.keep is None or r.task in self.keep):
                yield r

    def duration(self, r: _Row) -> float | None:
        return self.reader.duration(r)

    def decode(self, r: _Row) -> dict[str, Any] | None:
        return self.reader.decode(r)

    def texts(self) -> Iterator[str]:
        """Every instruction and answer (one pass over the stream)."""
        for r in self.rows():
            yield r.instruction
            yield r.answer

    def skip_report(self) -> str:
        return self.reader.skip_report()

    def __repr__(self) -> str:
        return f"HFStreamDataset({self.name!r})"

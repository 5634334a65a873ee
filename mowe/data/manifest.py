"""JSONL instruction manifests as a torch Dataset (the sampler that feeds training:
:mod:`mowe.data.samplers`).

A manifest holds one JSON object per line (blank lines are ignored)::

    {"audio": "audio/train/x.wav", "instruction": "Transcribe the speech.", "answer": "three one four",
     "task": "asr", "id": "train-asr-000003", "meta": {...}}

* ``audio``: path relative to the manifest's folder (absolute paths are allowed).
* ``instruction``, ``answer``, ``task``: strings (``task`` and ``audio`` non-empty).
* ``id``: optional string (or int), unique in the manifest; default ``"<manifest stem>:<line number>"``.
* ``meta``: optional, ignored. Any other key is ignored too (corpora carry their own bookkeeping).

The file is UTF-8 (a byte-order mark at its start is accepted); it is read through :mod:`mowe.io`, so a FIFO
with no writer or a device is refused with an error naming it instead of blocking.

:class:`ManifestDataset` builds its index at construction: every line is parsed and checked, and every audio
file's *header* is read (so ``lengths`` is known for bucketing and broken files are found before training
starts). The samples themselves are decoded lazily in ``__getitem__``.

Bad data is never dropped silently. With ``on_bad_example="error"`` the first problem raises; with ``"skip"``
the example is left out and recorded in :attr:`ManifestDataset.skipped`, and
:meth:`ManifestDataset.skip_report` lists them all. Every message names the manifest, the 1-based line number
and (for audio problems) the file.

Error types: a problem with a line or field raises :class:`~mowe.errors.ManifestError`; a problem with the
audio file a line points to raises :class:`ManifestAudioError`, which is *both* a ``ManifestError`` and an
:class:`~mowe.errors.AudioLoadError` -- so ``except ManifestError`` catches everything a manifest can do wrong
and ``except AudioLoadError`` catches every unreadable file.

Shape legend: ``s`` samples.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from mowe.data.audio import audio_info, load_audio
from mowe.data.processor_options import ProcessorOptions
from mowe.errors import AudioLoadError, ConfigError, ManifestError
from mowe.io import read_bytes
from mowe.validation import MAX_AUDIO_SECONDS

__all__ = [
    "REQUIRED_FIELDS",
    "BadExampleWarning",
    "ManifestAudioError",
    "ManifestDataset",
    "SkippedExample",
]

REQUIRED_FIELDS = ("audio", "instruction", "answer", "task")
_NON_EMPTY = ("audio", "task")
_ON_BAD = ("error", "skip")
_POLICIES = ("truncate", "chunk")
_BOM = b"\xef\xbb\xbf"


class ManifestAudioError(ManifestError, AudioLoadError):
    """The audio file a manifest line points to is missing or unreadable (names manifest, line and file)."""


class BadExampleWarning(UserWarning):
    """An example was skipped (``on_bad_example="skip"``); it is also recorded in ``dataset.skipped``."""


@dataclass(frozen=True)
class SkippedExample:
    """One example left out of a :class:`ManifestDataset`.

    Attributes:
        line: 1-based line number in the manifest.
        path: the audio file (resolved), or None when the line was too broken to name one.
        reason: what was wrong, as the error would have said.
    """

    line: int
    path: str | None
    reason: str


@dataclass(frozen=True)
class _Entry:
    line: int
    id: str
    path: str
    instruction: str
    answer: str
    task: str
    duration: float  # header duration in seconds (capped at max_audio_seconds under "truncate")


class ManifestDataset(Dataset):
    """Examples from a JSONL manifest; audio decoded lazily.

    Args:
        manifest_path: the ``.jsonl`` file; relative ``audio`` paths are resolved against its folder.
        sample_rate: rate the audio is resampled to (the encoders take 16 kHz).
        max_audio_seconds: longest clip; None for no limit.
        length_policy: ``"truncate"`` (training and inference: the first ``max_audio_seconds`` are kept, with
            an :class:`~mowe.data.audio.AudioTruncatedWarning`) or ``"chunk"`` (inference only: the whole clip
            is returned and the processor splits it into ``max_audio_seconds`` windows, one audio placeholder
            each; a *training* collator truncates instead, with a warning).
        on_bad_example: ``"error"`` raises at the first bad example; ``"skip"`` records and drops it.
        tasks: keep only examples of these tasks (None: all). A named task with no example is a ConfigError.
        audio_as_path: ``dataset[i]["audio"]`` is the file's path instead of its samples, for the processor to
            decode (window by window under its ``"chunk"`` policy, checked against its
            ``max_duration_seconds``): a long file is then never decoded whole (``mowe eval --length-policy
            chunk``).

    Attributes:
        lengths: ``list[float]``, seconds per example (from the headers), for length-grouped batching.
        tasks: ``list[str]``, the task of each example (parallel to ``lengths``); ``task_list`` is the same
        list.
        task_names: sorted distinct tasks.
        ids: ``list[str]``, the id of each example.
        skipped: ``list[SkippedExample]``, everything left out (at indexing time and, in this process, at
            read time).

    ``dataset[i]`` is ``{"id", "audio": (s,) float32 tensor, "instruction", "answer", "task", "duration"}``,
    or None with ``on_bad_example="skip"`` when the file became unreadable after indexing (the collator drops
    Nones). With DataLoader workers such read-time skips are recorded in the worker's copy of the dataset;
    they are still warned (:class:`BadExampleWarning`) and counted by the collator (``batch["num_dropped"]``).

    Raises:
        ManifestError: unreadable manifest, malformed or non-UTF-8 line, a line that is not an object, a
            missing or mistyped field, a duplicate id, or no usable example at all.
        ManifestAudioError: missing, empty, truncated, corrupt or non-audio file (also an AudioLoadError).
        ConfigError: an invalid option, or a task in ``tasks`` that has no example.

    Example:
        >>> ds = ManifestDataset("corpus/train.jsonl", on_bad_example="skip")  # doctest: +SKIP
        >>> ds[0]["audio"].shape, ds.lengths[0]                              # doctest: +SKIP
        (torch.Size([31000]), 1.9375)
        >>> print(ds.skip_report())                                          # doctest: +SKIP
    """

    def __init__(
        self,
        manifest_path: str | os.PathLike,
        *,
        sample_rate: int = 16_000,
        max_audio_seconds: float | None = ProcessorOptions.max_audio_seconds,  # the processor's default
        length_policy: str = "truncate",
        on_bad_example: str = "error",
        tasks: Sequence[str] | None = None,
        audio_as_path: bool = False,
    ):
        self.audio_as_path = bool(audio_as_path)
        if length_policy not in _POLICIES:
            raise ConfigError(f"length_policy must be one of {_POLICIES}, got {length_policy!r}")
        if on_bad_example not in _ON_BAD:
            raise ConfigError(f"on_bad_example must be one of {_ON_BAD}, got {on_bad_example!r}")
        MAX_AUDIO_SECONDS.check(max_audio_seconds, "max_audio_seconds")  # the processor's and run file's rule
        if isinstance(tasks, str):
            tasks = [tasks]
        self.manifest_path = os.fspath(manifest_path)
        self.root = os.path.dirname(os.path.abspath(self.manifest_path))
        self.sample_rate = int(sample_rate)
        self.max_audio_seconds = max_audio_seconds
        self.length_policy = length_policy
        self.on_bad_example = on_bad_example
        self.skipped: list[SkippedExample] = []
        self.num_filtered = 0  # examples of tasks not asked for (left out on purpose, not bad)
        self._entries = self._build_index(set(tasks) if tasks is not None else None)
        if tasks is not None:
            have = {e.task for e in self._entries}
            missing = [t for t in tasks if t not in have]
            if missing:
                raise ConfigError(
                    f"{self.manifest_path}: no usable example of task(s) {missing} "
                    f"(tasks present: {sorted(have)})"
                )
        if not self._entries:
            detail = f"; skipped:\n{self.skip_report()}" if self.skipped else ""
            raise ManifestError(f"{self.manifest_path}: no usable examples{detail}")
        self.lengths: list[float] = [e.duration for e in self._entries]
        self.tasks: list[str] = [e.task for e in self._entries]
        self.task_list = (
            self.tasks
        )  # the name mowe.training.trainer looks for (saves decoding every clip to find tasks)
        self.ids: list[str] = [e.id for e in self._entries]
        self.task_names: list[str] = sorted(set(self.tasks))

    # ------------------------------------------------------------------------------------------- index
    def _where(self, line: int) -> str:
        return f"{self.manifest_path}, line {line}"

    def _bad(
        self, line: int, path: str | None, reason: str, exc_type: type[Exception] = ManifestError
    ) -> None:
        """Raise (``"error"``) or record and warn (``"skip"``) a bad example."""
        named = f" (audio file '{path}')" if path is not None and path not in reason else ""
        msg = f"{self._where(line)}{named}: {reason}"
        if self.on_bad_example == "error":
            raise exc_type(msg)
        self.skipped.append(SkippedExample(line, path, reason))
        warnings.warn(f"skipping example: {msg}", BadExampleWarning, stacklevel=3)

    def _build_index(self, keep_tasks: set[str] | None) -> list[_Entry]:
        try:
            raw = read_bytes(self.manifest_path)  # mowe.io: a FIFO without a writer or a device cannot hang
        except OSError as e:
            raise ManifestError(f"cannot read manifest '{self.manifest_path}': {e.strerror or e}") from e
        raw = raw.removeprefix(_BOM)  # editors on Windows write one; it is not part of the first line's JSON
        stem = os.path.splitext(os.path.basename(self.manifest_path))[0]
        entries: list[_Entry] = []
        seen: dict[str, int] = {}
        for lineno, chunk in enumerate(raw.split(b"\n"), start=1):
            try:
                text = chunk.decode("utf-8")
            except UnicodeDecodeError as e:
                self._bad(lineno, None, f"not valid UTF-8 (byte {e.start})")
                continue
            if not text.strip():
                continue
            entry = self._parse_line(lineno, text, stem)
            if entry is None:
                continue
            if keep_tasks is not None and entry.task not in keep_tasks:
                self.num_filtered += 1
                continue
            if entry.id in seen:
                self._bad(lineno, entry.path, f"duplicate id {entry.id!r} (first on line {seen[entry.id]})")
                continue
            entry = self._check_audio(entry)
            if entry is None:
                continue
            seen[entry.id] = lineno
            entries.append(entry)
        return entries

    def _parse_line(self, lineno: int, text: str, stem: str) -> _Entry | None:
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as e:  # ValueError: also int strings over 4300 digits
            self._bad(lineno, None, f"malformed JSON ({e})")
            return None
        if not isinstance(obj, dict):
            self._bad(lineno, None, f"expected a JSON object, got {type(obj).__name__}")
            return None
        raw_audio = obj.get("audio")
        path = self._resolve(raw_audio) if isinstance(raw_audio, str) and raw_audio else None
        for key in REQUIRED_FIELDS:
            if key not in obj:
                self._bad(lineno, path, f"missing field {key!r}")
                return None
            if not isinstance(obj[key], str):
                self._bad(lineno, path, f"field {key!r} must be a string, got {type(obj[key]).__name__}")
                return None
            if key in _NON_EMPTY and not obj[key].strip():
                self._bad(lineno, path, f"field {key!r} is empty")
                return None
        ex_id = obj.get("id", f"{stem}:{lineno}")
        if isinstance(ex_id, int) and not isinstance(ex_id, bool):
            ex_id = str(ex_id)
        if not isinstance(ex_id, str) or not ex_id:
            self._bad(lineno, path, f"field 'id' must be a non-empty string, got {ex_id!r}")
            return None
        return _Entry(lineno, ex_id, path, obj["instruction"], obj["answer"], obj["task"], 0.0)

    def _resolve(self, audio: str) -> str:
        return os.path.join(self.root, audio)  # an absolute ``audio`` wins over ``root``

    def _check_audio(self, entry: _Entry) -> _Entry | None:
        try:
            duration = audio_info(entry.path).duration_seconds
        except Exception as e:  # noqa: BLE001 - any failure to read a header is this example's problem
            self._bad(entry.line, entry.path, _audio_reason(entry.path, e), ManifestAudioError)
            return None
        if self.length_policy == "truncate" and self.max_audio_seconds is not None:
            duration = min(duration, float(self.max_audio_seconds))
        return _Entry(entry.line, entry.id, entry.path, entry.instruction, entry.answer, entry.task, duration)

    # ------------------------------------------------------------------------------------------- access
    def texts(self) -> list[str]:
        """The instruction and answer of every kept example, in order (e.g. to train a tokenizer on)."""
        return [t for e in self._entries for t in (e.instruction, e.answer)]

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        """Decode example ``index``: ``{"id", "audio": (s,) float32, "instruction", "answer", "task",
        "duration"}``.

        Raises:
            ManifestAudioError: the file cannot be decoded (``on_bad_example="error"``); with ``"skip"`` the
                problem is recorded and warned and None is returned.
        """
        e = self._entries[index]
        if self.audio_as_path:
            return {
                "id": e.id,
                "audio": e.path,
                "instruction": e.instruction,
                "answer": e.answer,
                "task": e.task,
                "duration": e.duration,
            }
        max_s = self.max_audio_seconds if self.length_policy == "truncate" else None
        try:
            clip = load_audio(
                e.path, sample_rate=self.sample_rate, max_seconds=max_s, length_policy="truncate"
            )
        except Exception as exc:
            reason = _audio_reason(e.path, exc)
            if self.on_bad_example == "error":
                raise ManifestAudioError(f"{self._where(e.line)}: {reason}") from exc
            if not any(s.line == e.line for s in self.skipped):
                self._bad(e.line, e.path, reason, ManifestAudioError)
            return None
        wave = clip.waveform
        return {
            "id": e.id,
            "audio": wave,
            "instruction": e.instruction,
            "answer": e.answer,
            "task": e.task,
            "duration": wave.shape[0] / self.sample_rate,
        }

    def example_info(self, index: int) -> dict[str, Any]:
        """The indexed fields of example ``index`` without decoding audio (``line``, ``path``,
        ``duration``...)."""
        e = self._entries[index]
        return {
            "id": e.id,
            "line": e.line,
            "path": e.path,
            "instruction": e.instruction,
            "answer": e.answer,
            "task": e.task,
            "duration": e.duration,
        }

    def skip_report(self) -> str:
        """A human-readable list of every skipped example ("" when none was skipped)."""
        if not self.skipped:
            return ""
        lines = [f"{len(self.skipped)} example(s) skipped from {self.manifest_path}:"]
        for s in sorted(self.skipped, key=lambda s: s.line):
            where = f" ({s.path})" if s.path else ""
            lines.append(f"  line {s.line}{where}: {s.reason}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"ManifestDataset({self.manifest_path!r}, examples={len(self)}, tasks={self.task_names}, "
            f"skipped={len(self.skipped)})"
        )


def _audio_reason(path: str, exc: Exception) -> str:
    """A reason that always names the file (audio.py's messages do; anything else gets it prepended)."""
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, AudioLoadError) and path in msg:
        return msg
    return f"cannot read audio file '{path}': {msg}"

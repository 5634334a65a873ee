"""Scoring the public audio benchmarks the way their own scripts do, with n, a bootstrap interval and the
answers that named no option or several counted apart.

Each scorer gives every prediction one verdict: ``correct``, ``wrong`` (names one other option, or mixes in
words of another), ``no_option`` (names none) or ``several_options`` (names more than one). Only ``correct``
counts; the other three are all wrong and reported separately. An option is *named* when all its words
(``\\b\\w+\\b``, lower-cased: case and punctuation never matter) are among the prediction's words; of nested
options ("dog" and "dog barking") only the longest named one counts.

=================  ==========================================================================================
format             matching rule
=================  ==========================================================================================
``mmau``           MMAU's ``evaluation.py`` ``string_match``: the words of the answer are a subset of the
                   prediction's words, and the prediction has none of the words that other choices have and
                   the answer has not. An empty prediction is wrong.
``airbench``       AIR-Bench foundation's ``score_foundation.py``: the response (stripped, newlines removed)
                   picks the letter of its first character if that is A-D, else of its second-to-last
                   character if that is A-D ("The answer is B."), else it answers nothing (``no_option``);
                   the reference letter is the choice whose text equals ``answer_gt``. Letters are
                   case-sensitive, as in the script. Its script leaves unanswered rows out of the
                   denominator: ``answered_accuracy`` is that figure, ``accuracy`` counts them wrong. One
                   deviation: a response with two or more distinct standalone capital letters A-D ("A or
                   B") is ``several_options`` (wrong), where the script would read its first letter.
                   (AIR-Bench's optional GPT re-alignment step is not run.)
``dynamic-superb`` Dynamic-SUPERB rows carry an instruction and a label, no choice list; the label space is
                   the task's distinct labels in the evaluated set, and the MMAU rule above is applied with
                   it. Phase 2's paper scores classification answers with an LLM judge; its scoring scripts
                   were not at hand to match, and mowe calls no LLM: this deterministic rule is an offline
                   stand-in, not the leaderboard figure.
=================  ==========================================================================================

Example::

    >>> mmau_match("The dog barks.", "Dog barks", ["dog barks", "cat meows"])
    True
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mowe.errors import ConfigError
from mowe.evaluation.stats import ClipStatistics, MetricInterval, bootstrap_interval

__all__ = [
    "BENCHMARK_FORMATS",
    "VERDICTS",
    "BenchmarkScore",
    "airbench_letter",
    "mmau_match",
    "named_options",
    "score_benchmark",
    "verdict",
]

BENCHMARK_FORMATS = ("mmau", "airbench", "dynamic-superb")
VERDICTS = ("correct", "wrong", "no_option", "several_options")
_WORD = re.compile(r"\b\w+\b")
_LETTERS = "ABCD"
_LETTER_WORD = re.compile(r"\b[A-D]\b")


def _words(text: Any) -> set[str]:
    return set(_WORD.findall(str(text).lower()))


def mmau_match(prediction: str, answer: str, choices: Sequence[str]) -> bool:
    """MMAU's ``string_match`` (see the module table)."""
    pred, ans = _words(prediction), _words(answer)
    if not pred:
        return False
    others: set[str] = set()
    for c in choices:
        cw = _words(c)
        if cw != ans:
            others |= cw - ans
    return ans <= pred and pred.isdisjoint(others)


def named_options(prediction: str, choices: Sequence[str]) -> list[int]:
    """Indices of the options ``prediction`` names (all their words present), nested ones reduced to the
    longest, options with the same words counted once."""
    pred = _words(prediction)
    named = [(i, _words(c)) for i, c in enumerate(choices) if _words(c) and _words(c) <= pred]
    out, seen = [], []
    for i, w in named:
        if any(w < other for _, other in named) or w in seen:
            continue
        seen.append(w)
        out.append(i)
    return out


def airbench_letter(response: str) -> str | None:
    """The letter AIR-Bench's ``score_foundation.py`` reads from a response, or None (it counts a failure)."""
    predict = str(response).strip().replace("\n", "")
    if not predict or predict == "None":
        return None
    if predict[0] in _LETTERS:
        return predict[0]
    if len(predict) > 1 and predict[-2] in _LETTERS:
        return predict[-2]
    return None


def verdict(fmt: str, prediction: str, answer: str, choices: Sequence[str]) -> str:
    """One of :data:`VERDICTS` for a prediction under ``fmt``'s rule (module table).

    Raises:
        ConfigError: an unknown format; for ``airbench``, an answer that is none of the choices.
    """
    if fmt == "airbench":
        if answer not in choices:
            raise ConfigError(f"airbench: the answer {answer!r} is none of the choices {list(choices)}")
        if len(set(_LETTER_WORD.findall(str(prediction)))) > 1:
            return "several_options"
        letter = airbench_letter(prediction)
        if letter is None:
            return "no_option"
        return "correct" if letter == _LETTERS[list(choices).index(answer)] else "wrong"
    if fmt not in ("mmau", "dynamic-superb"):
        raise ConfigError(f"unknown benchmark format {fmt!r}; known: {list(BENCHMARK_FORMATS)}")
    if mmau_match(prediction, answer, choices):
        return "correct"
    named = named_options(prediction, choices)
    if not named:
        return "no_option"
    return "several_options" if len(named) > 1 else "wrong"


@dataclass(frozen=True)
class BenchmarkScore:
    """One task's (or ``"all"``'s) score.

    Attributes:
        format: the scoring rule. task: the task, or ``"all"``. n: predictions scored.
        counts: predictions per verdict (:data:`VERDICTS`). accuracy: ``correct / n`` with its bootstrap
            interval.
        answered_accuracy: ``correct / (n - no_option)`` (AIR-Bench's own denominator), None if nothing
            answered.
    """

    format: str
    task: str
    n: int
    counts: dict[str, int]
    accuracy: MetricInterval
    answered_accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "n": self.n,
            **self.counts,
            "accuracy": self.accuracy.to_dict(),
            "answered_accuracy": self.answered_accuracy,
        }


def score_benchmark(
    records: Sequence[Mapping[str, Any]],
    fmt: str,
    *,
    choices: Mapping[str, Sequence[str]] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, BenchmarkScore]:
    """Score prediction records (``id``, ``task``, ``answer``, ``prediction``) under ``fmt``.

    Args:
        records: e.g. :attr:`~mowe.evaluation.evaluate.EvalResult.records`.
        fmt: one of :data:`BENCHMARK_FORMATS`.
        choices: record id -> its options (``mmau``, ``airbench``); ``dynamic-superb`` uses each task's
        labels. n_boot, seed: the bootstrap of the accuracy interval
        (:func:`~mowe.evaluation.stats.bootstrap_interval`).

    Returns:
        ``{task: BenchmarkScore}`` and ``"all"`` over every record; each record also gets its ``"verdict"``.

    Raises:
        ConfigError: an unknown format, no records, or a record without options.
    """
    if fmt not in BENCHMARK_FORMATS:
        raise ConfigError(f"unknown benchmark format {fmt!r}; known: {list(BENCHMARK_FORMATS)}")
    if not records:
        raise ConfigError(f"{fmt}: no predictions to score")
    labels: dict[str, list[str]] = {}
    if fmt == "dynamic-superb":
        for r in records:
            space = labels.setdefault(str(r["task"]), [])
            if str(r["answer"]) not in space:
                space.append(str(r["answer"]))
    verdicts: dict[str, list[tuple[str, str]]] = {}
    for r in records:
        rid = str(r["id"])
        opts = labels[str(r["task"])] if fmt == "dynamic-superb" else (choices or {}).get(rid)
        if not opts:
            raise ConfigError(f"{fmt}: record {rid!r} has no options to match against")
        v = verdict(fmt, "" if r["prediction"] is None else str(r["prediction"]), str(r["answer"]), opts)
        if isinstance(r, dict):
            r["verdict"] = v
        verdicts.setdefault(str(r["task"]), []).append((rid, v))
    verdicts["all"] = [x for task in sorted(verdicts) for x in verdicts[task]]
    return {task: _score(fmt, task, rows, n_boot, seed) for task, rows in verdicts.items()}


def _score(fmt: str, task: str, rows: list[tuple[str, str]], n_boot: int, seed: int) -> BenchmarkScore:
    counts = {v: sum(1 for _, x in rows if x == v) for v in VERDICTS}
    stats = ClipStatistics(
        "accuracy",
        tuple(rid for rid, _ in rows),
        np.array([[float(v == "correct"), 1.0] for _, v in rows], dtype=np.float64),
    )
    answered = len(rows) - counts["no_option"]
    return BenchmarkScore(
        fmt,
        task,
        len(rows),
        counts,
        bootstrap_interval(stats, n_boot=n_boot, seed=seed),
        counts["correct"] / answered if answered else None,
    )

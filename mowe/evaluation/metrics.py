"""Evaluation metrics for instruction-following audio LLMs.

* :func:`normalize_text` — lowercase, punctuation removed, whitespace collapsed; optionally digits spelled out
  digit by digit (``spell_digits=True``: ``"314"`` -> ``"three one four"``, for references written the way a
  synthetic voice reads digit strings, as in the demo corpus).
* :func:`word_error_rate` — corpus-level WER (jiwer) on normalised text.
* :func:`accuracy` — exact match after normalisation, with one leniency (see :func:`is_correct`).
* :func:`bleu` — corpus BLEU (sacrebleu, ``tokenize="13a"``, no network).
* :func:`evaluate_predictions` — per-task metrics from ``{"task", "answer", "prediction"}`` records; which
  metric a task gets is an argument (``task_metrics``), accuracy by default.
* :func:`format_markdown_table` — one table, a row per task (and metric), a column per system.

Example::

    >>> word_error_rate(["a b c d"], ["a x c"])
    0.5
    >>> accuracy(["male"], ["Male."])
    1.0
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

__all__ = [
    "METRICS",
    "METRIC_LABELS",
    "accuracy",
    "bleu",
    "evaluate_predictions",
    "format_markdown_table",
    "is_correct",
    "normalize_text",
    "part_accuracy",
    "word_error_rate",
]

_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_DIGIT_RE = re.compile(r"\d")
# Clause boundary for the lenient match: a hypothesis may go on after ". , ; : ! ?" or a newline.
_CLAUSE_END = re.compile(r"[.,;:!?\n]")

#: metric key -> label used in tables (the arrow says which way is better).
METRIC_LABELS = {
    "wer": "WER ↓",
    "accuracy": "acc ↑",
    "part_accuracy": "part acc ↑",
    "bleu": "BLEU ↑",
}


#: What :func:`evaluate_predictions` can compute for a task: ``"wer"``, ``"accuracy"`` (closed-ended answers),
#: ``"parts"`` (comma-separated multi-part answers: ``part_accuracy`` and ``accuracy``), ``"bleu"``.
METRICS = ("wer", "accuracy", "parts", "bleu")
Metric = Literal["wer", "accuracy", "parts", "bleu"]
Normalizer = Callable[[str], str]


def normalize_text(s: str, *, spell_digits: bool = False) -> str:
    """Normalise text for scoring.

    Lowercases (Unicode case folding), deletes apostrophes (``"don't"`` -> ``"dont"``), turns all other
    punctuation and symbols into spaces, and collapses whitespace. With ``spell_digits`` every ASCII digit
    becomes a word (``"3"`` -> ``"three"``; a number is read digit by digit, so ``"42"`` -> ``"four two"``).

    Example:
        >>> normalize_text("  The 3 Dogs -- don't RUN! ")
        'the 3 dogs dont run'
        >>> normalize_text("The 3 Dogs", spell_digits=True)
        'the three dogs'
    """
    s = unicodedata.normalize("NFKC", str(s)).casefold()
    if spell_digits:
        s = _DIGIT_RE.sub(
            lambda m: f" {_DIGIT_WORDS[int(m.group())]} " if m.group().isascii() else m.group(), s
        )
    s = s.replace("'", "").replace("\u2019", "")
    s = "".join(ch if (ch.isalnum() or ch.isspace()) else " " for ch in s)
    return " ".join(s.split())


def _as_list(x: str | Iterable[str], name: str) -> list[str]:
    if isinstance(x, str):
        return [x]
    out = list(x)
    for i, v in enumerate(out):
        if not isinstance(v, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(v).__name__}")
    return out


def _pairs(refs: str | Iterable[str], hyps: str | Iterable[str]) -> tuple[list[str], list[str]]:
    r, h = _as_list(refs, "refs"), _as_list(hyps, "hyps")
    if len(r) != len(h):
        raise ValueError(f"refs and hyps differ in length: {len(r)} vs {len(h)}")
    return r, h


def word_error_rate(
    refs: str | Iterable[str], hyps: str | Iterable[str], *, normalize: Normalizer = normalize_text
) -> float:
    """Corpus-level word error rate: (substitutions + deletions + insertions) / reference words.

    Both sides are normalised with ``normalize`` (default :func:`normalize_text`). A pair whose reference is
    empty contributes its hypothesis words as insertions and no reference words. If no reference has any word,
    the result is 0.0 when no hypothesis has a word either, else 1.0 (there is nothing to divide by).

    Example:
        >>> word_error_rate(["a b c d"], ["a x c"])
        0.5
    """
    import jiwer

    r, h = _pairs(refs, hyps)
    r = [normalize(x) for x in r]
    h = [normalize(x) for x in h]
    errors = sum(len(hh.split()) for rr, hh in zip(r, h) if not rr)
    keep = [(rr, hh) for rr, hh in zip(r, h) if rr]
    n_ref = sum(len(rr.split()) for rr, _ in keep)
    if keep:
        out = jiwer.process_words([rr for rr, _ in keep], [hh for _, hh in keep])
        errors += out.substitutions + out.deletions + out.insertions
    if n_ref == 0:
        return 0.0 if errors == 0 else 1.0
    return float(errors / n_ref)


def is_correct(ref: str, hyp: str, *, normalize: Normalizer = normalize_text) -> bool:
    """Whether ``hyp`` answers ``ref`` (closed-ended answers).

    True when the whole hypothesis normalises to the reference, or when its *first clause* — the text
    before the first ``. , ; : ! ?`` or newline — does. So ``"Male."`` and ``"male, clearly"`` match
    ``"male"``, but ``"female"``, ``"male or female"`` and ``"The speaker is male"`` do not: the model
    must lead with the answer and not hedge. An empty reference matches only an empty hypothesis.
    """
    nref = normalize(ref)
    if normalize(hyp) == nref:
        return True
    first = _CLAUSE_END.split(hyp.strip().lstrip("\"'([ "), maxsplit=1)[0]
    return bool(nref) and normalize(first) == nref


def accuracy(
    refs: str | Iterable[str], hyps: str | Iterable[str], *, normalize: Normalizer = normalize_text
) -> float:
    """Fraction of hypotheses that are correct under :func:`is_correct` (0.0 for no pairs)."""
    r, h = _pairs(refs, hyps)
    return float(sum(is_correct(a, b, normalize=normalize) for a, b in zip(r, h)) / len(r)) if r else 0.0


def _parts(s: str) -> list[str]:
    return [p.strip() for p in s.split(",")]


def part_accuracy(ref: str, hyp: str, *, normalize: Normalizer = normalize_text) -> tuple[float, bool]:
    """Score a comma-separated multi-part answer (e.g. a two-part question: ``"siren, seven"``).

    Parts are compared by position with :func:`is_correct`. Returns ``(fraction of reference parts
    right, exact)``, where ``exact`` needs every part right *and* the same number of parts (extra
    parts are not free guesses).
    """
    rp, hp = _parts(ref), _parts(hyp)
    right = sum(is_correct(r, hp[i], normalize=normalize) for i, r in enumerate(rp) if i < len(hp))
    return right / len(rp), right == len(rp) and len(hp) == len(rp)


def bleu(refs: str | Iterable[str], hyps: str | Iterable[str]) -> float:
    """Corpus BLEU (0-100) with sacrebleu's ``13a`` tokeniser, one reference per hypothesis.

    Uses sacrebleu's *effective order*: n-gram orders that no hypothesis is long enough to have are
    left out instead of zeroing the score, so short answers (``"le chat noir"``) can still score 100.
    On corpora of ordinary sentences this equals standard corpus BLEU.
    """
    from sacrebleu.metrics import BLEU

    r, h = _pairs(refs, hyps)
    if not r:
        return 0.0
    return float(BLEU(tokenize="13a", effective_order=True).corpus_score(h, [r]).score)


def evaluate_predictions(
    records: Iterable[Mapping[str, Any]],
    *,
    task_metrics: Mapping[str, Metric] | None = None,
    default_metric: Metric = "accuracy",
    normalize: Normalizer = normalize_text,
) -> dict[str, dict[str, float]]:
    """Per-task metrics from prediction records.

    Args:
        records: mappings with ``"task"``, ``"answer"`` (the reference) and ``"prediction"``.
        task_metrics: task -> one of :data:`METRICS`; tasks not listed get ``default_metric``. No default map
            lives here: the caller knows its tasks (the demo passes ``mowe.demo.corpus.TASK_METRICS``).
        default_metric: the metric of unlisted tasks (closed-ended answers: ``"accuracy"``).
        normalize: text normaliser for WER and accuracy (e.g. ``partial(normalize_text, spell_digits=True)``).

    Returns:
        ``{task: metrics}`` in sorted task order, each with ``"n"`` (number of records) and ``"wer"``:
        ``{"wer"}``;
        ``"parts"``: ``{"part_accuracy", "accuracy"}`` (mean fraction of comma-separated parts right, and
        fraction fully right); ``"bleu"``: ``{"bleu"}``; ``"accuracy"``: ``{"accuracy"}``.

    Example:
        >>> evaluate_predictions([{"task": "speaker_sex", "answer": "male", "prediction": "male"}])
        {'speaker_sex': {'n': 1, 'accuracy': 1.0}}
    """
    task_metrics = dict(task_metrics or {})
    for task, metric in [*task_metrics.items(), ("default_metric", default_metric)]:
        if metric not in METRICS:
            raise ValueError(f"metric of {task!r} must be one of {list(METRICS)}, got {metric!r}")
    by_task: dict[str, tuple[list[str], list[str]]] = {}
    for i, rec in enumerate(records):
        missing = [k for k in ("task", "answer", "prediction") if k not in rec]
        if missing:
            raise KeyError(f"record {i} lacks {missing}")
        refs, hyps = by_task.setdefault(str(rec["task"]), ([], []))
        refs.append(str(rec["answer"]))
        hyps.append("" if rec["prediction"] is None else str(rec["prediction"]))
    out: dict[str, dict[str, float]] = {}
    for task in sorted(by_task):
        refs, hyps = by_task[task]
        m: dict[str, float] = {"n": len(refs)}
        kind = task_metrics.get(task, default_metric)
        if kind == "wer":
            m["wer"] = word_error_rate(refs, hyps, normalize=normalize)
        elif kind == "parts":
            scores = [part_accuracy(r, h, normalize=normalize) for r, h in zip(refs, hyps)]
            m["part_accuracy"] = sum(s for s, _ in scores) / len(scores)
            m["accuracy"] = sum(e for _, e in scores) / len(scores)
        elif kind == "bleu":
            m["bleu"] = bleu(refs, hyps)
        else:
            m["accuracy"] = accuracy(refs, hyps, normalize=normalize)
        out[task] = m
    return out


def _fmt(metric: str, value: Any) -> str:
    if value is None:
        return "–"
    if metric == "bleu":
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_markdown_table(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """Render ``{system: {task: {metric: value}}}`` (as from :func:`evaluate_predictions`) as Markdown.

    One row per task and metric (``"transcribe (WER ↓)"``, ``"emotion (acc ↑)"``; a ``"parts"`` task gets two
    rows), one column per system, in the order given. ``"n"`` is not a row; a task missing for a system shows
    ``–``. WER and accuracies are fractions (3 decimals), BLEU is 0-100 (1 decimal).

    Example:
        >>> print(format_markdown_table({"mowe": {"emotion": {"n": 4, "accuracy": 0.75}}}))
        | task | mowe |
        |---|---|
        | emotion (acc ↑) | 0.750 |
    """
    systems = list(results)
    rows: list[tuple[str, str]] = []
    for sys_metrics in results.values():
        for task, metrics in sys_metrics.items():
            for metric in metrics:
                if metric != "n" and (task, metric) not in rows:
                    rows.append((task, metric))
    lines = ["| task | " + " | ".join(systems) + " |", "|---|" + "---|" * len(systems)]
    for task, metric in rows:
        label = f"{task} ({METRIC_LABELS.get(metric, metric)})"
        cells = [_fmt(metric, results[s].get(task, {}).get(metric)) for s in systems]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

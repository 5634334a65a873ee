"""Uncertainty of per-task metrics: bootstrap intervals and paired tests over test clips.

Every metric of :func:`mowe.evaluation.metrics.evaluate_predictions` is a function of **sums of per-clip
statistics**, so resampling clips means resampling rows of a table and recomputing the metric from the column
sums — never averaging per-clip metric values:

=================  =============================================  =====================================
metric             per-clip row                                   metric from the column sums
=================  =============================================  =====================================
``accuracy``       ``[correct]`` (0/1; exact multi-part match      ``sum(correct) / n``
                   when the task also reports ``part_accuracy``)
``part_accuracy``  ``[fraction of parts right]``                  ``sum / n``
``wer``            ``[word errors, reference words]``             ``sum(errors) / sum(ref words)``
                                                                  (corpus WER, not the mean clip WER)
``bleu``           sacrebleu's sentence statistics (lengths,      corpus BLEU from the summed statistics
                   n-gram matches and totals)
=================  =============================================  =====================================

* :func:`bootstrap_interval` — percentile bootstrap: ``B`` resamples of the ``n`` clips with replacement.
* :func:`paired_comparison` — system minus base on the same clips: a paired-bootstrap interval of the
  difference and a paired permutation (randomisation) test for its p-value.
* :func:`task_intervals` / :func:`compare_to_base` — the same for every task and metric of an
  :class:`~mowe.evaluation.evaluate.EvalResult` (anything with ``records`` and ``metrics``).

Example::

    >>> stats = clip_statistics([{"answer": "male", "prediction": "male"}] * 3, "accuracy")
    >>> bootstrap_interval(stats).value
    1.0
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mowe.evaluation.metrics import is_correct, normalize_text, part_accuracy

__all__ = [
    "HIGHER_IS_BETTER",
    "ClipStatistics",
    "MetricInterval",
    "PairedComparison",
    "bootstrap_interval",
    "clip_statistics",
    "compare_to_base",
    "paired_comparison",
    "task_intervals",
]

#: metric -> whether a larger value is better (WER is an error rate).
HIGHER_IS_BETTER = {"accuracy": True, "part_accuracy": True, "bleu": True, "wer": False}
_CHUNK = 256  # resamples per vectorised block: (chunk, n) weights stay small for any test set


@dataclass(frozen=True)
class ClipStatistics:
    """Per-clip sufficient statistics of one metric on one task.

    Attributes:
        metric: ``"accuracy"``, ``"part_accuracy"``, ``"wer"`` or ``"bleu"``.
        ids: clip (record) ids, one per row; pairs two systems' clips in :func:`paired_comparison`.
        rows: ``(n, k)`` float64 statistics per clip (see the module table).
    """

    metric: str
    ids: tuple[str, ...]
    rows: np.ndarray

    @property
    def n(self) -> int:
        return len(self.ids)

    def value(self, weights: np.ndarray | None = None) -> np.ndarray | float:
        """The metric of the clips; ``weights`` ``(B, n)`` (how often each clip is drawn) gives ``(B,)``
        values."""
        if weights is None:
            return float(_AGGREGATE[self.metric](self.rows.sum(0)[None])[0])
        return _AGGREGATE[self.metric](weights @ self.rows)


@dataclass(frozen=True)
class MetricInterval:
    """A metric with its bootstrap interval.

    Attributes:
        metric: which metric. value: on all ``n`` clips. low, high: percentile bounds at ``level``.
        n: test clips. level: coverage (0.95). n_boot: resamples.
    """

    metric: str
    value: float
    low: float
    high: float
    n: int
    level: float = 0.95
    n_boot: int = 1000

    def to_dict(self) -> dict[str, Any]:
        """``{"value", "ci95": [low, high], "n"}`` (the key names the level), for results.json."""
        return {"value": self.value, f"ci{round(100 * self.level)}": [self.low, self.high], "n": self.n}


@dataclass(frozen=True)
class PairedComparison:
    """System minus base on the same clips.

    Attributes:
        metric: which metric. diff: ``metric(system) - metric(base)`` on all clips (for WER negative is
        better).
        low, high: paired-bootstrap percentile interval of ``diff`` at ``level``.
        p_value: two-sided paired permutation test of "the two systems are exchangeable on every clip".
        significant: ``p_value < alpha``.
        better: ``"system"``, ``"base"`` or ``None`` (not significant), reading the metric's direction.
        n: paired clips. alpha, level, n_boot, n_perm: the settings used.
    """

    metric: str
    diff: float
    low: float
    high: float
    p_value: float
    significant: bool
    better: str | None
    n: int
    alpha: float = 0.05
    level: float = 0.95
    n_boot: int = 1000
    n_perm: int = 2000

    def to_dict(self) -> dict[str, Any]:
        return {
            "diff": self.diff,
            f"ci{round(100 * self.level)}": [self.low, self.high],
            "p_value": self.p_value,
            "significant": self.significant,
            "better": self.better,
            "n": self.n,
        }


# ------------------------------------------------------------------------------------------- per-clip rows
def _word_errors(ref: str, hyp: str, normalize: Callable[[str], str] = normalize_text) -> list[float]:
    """``[edits, reference words]`` for one pair, as :func:`~mowe.evaluation.metrics.word_error_rate` counts
    them (an empty reference: the hypothesis words are insertions)."""
    import jiwer

    r, h = normalize(ref), normalize(hyp)
    if not r:
        return [float(len(h.split())), 0.0]
    out = jiwer.process_words(r, h)
    return [float(out.substitutions + out.deletions + out.insertions), float(len(r.split()))]


def _bleu_rows(refs: list[str], hyps: list[str]) -> np.ndarray:
    from sacrebleu.metrics import BLEU

    # Sentence statistics (hyp length, ref length, 4 n-gram match counts, 4 totals); their column sums are
    # exactly what corpus_score aggregates (checked against metrics.bleu in the tests).
    return np.asarray(
        BLEU(tokenize="13a", effective_order=True)._extract_corpus_statistics(hyps, [refs]), dtype=np.float64
    ).reshape(len(refs), -1)


def _bleu_from_sums(sums: np.ndarray) -> np.ndarray:
    from sacrebleu.metrics import BLEU

    out = np.empty(sums.shape[0])
    for i, s in enumerate(sums):
        if s[0] == 0:  # no hypothesis tokens at all
            out[i] = 0.0
            continue
        out[i] = BLEU.compute_bleu(
            correct=[int(x) for x in s[2:6]],
            total=[int(x) for x in s[6:10]],
            sys_len=int(s[0]),
            ref_len=int(s[1]),
            smooth_method="exp",
            effective_order=True,
        ).score
    return out


def _wer_from_sums(sums: np.ndarray) -> np.ndarray:
    errors, words = sums[:, 0], sums[:, 1]
    # As word_error_rate: no reference word at all -> 0 without errors, else 1.
    return np.where(words > 0, errors / np.maximum(words, 1), (errors > 0).astype(np.float64))


_AGGREGATE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "accuracy": lambda s: s[:, 0] / s[:, 1],
    "part_accuracy": lambda s: s[:, 0] / s[:, 1],
    "wer": _wer_from_sums,
    "bleu": _bleu_from_sums,
}


def clip_statistics(
    records: Sequence[Mapping[str, Any]],
    metric: str,
    *,
    multi_part: bool = False,
    normalize: Callable[[str], str] = normalize_text,
) -> ClipStatistics:
    """Per-clip statistics of ``metric`` for one task's records.

    Args:
        records: mappings with ``"answer"`` and ``"prediction"`` (and ``"id"``; the position otherwise).
        metric: ``"accuracy"``, ``"part_accuracy"``, ``"wer"`` or ``"bleu"``.
        multi_part: score ``"accuracy"`` as the exact multi-part match of
            :func:`~mowe.evaluation.metrics.part_accuracy` (a comma-separated answer), as
            :func:`~mowe.evaluation.metrics.evaluate_predictions` does for a task that also reports
            ``part_accuracy``.
        normalize: the text normaliser the metric was computed with (as passed to
            :func:`~mowe.evaluation.metrics.evaluate_predictions`).

    Raises:
        ValueError: an unknown metric, no records, or a record without answer/prediction (named).
    """
    if metric not in _AGGREGATE:
        raise ValueError(f"metric {metric!r} has no per-clip statistics; known: {sorted(_AGGREGATE)}")
    if not records:
        raise ValueError(f"no records to score for {metric!r}")
    refs, hyps, ids = [], [], []
    for i, rec in enumerate(records):
        if "answer" not in rec or "prediction" not in rec:
            raise ValueError(f"record {rec.get('id', i)!r} lacks 'answer' or 'prediction'")
        refs.append(str(rec["answer"]))
        hyps.append("" if rec["prediction"] is None else str(rec["prediction"]))
        ids.append(str(rec.get("id", i)))
    if metric == "wer":
        rows = np.array([_word_errors(r, h, normalize) for r, h in zip(refs, hyps)], dtype=np.float64)
    elif metric == "bleu":
        rows = _bleu_rows(refs, hyps)
    elif metric == "part_accuracy" or multi_part:
        scores = [part_accuracy(r, h, normalize=normalize) for r, h in zip(refs, hyps)]
        col = [s if metric == "part_accuracy" else float(exact) for s, exact in scores]
        rows = np.stack([np.asarray(col, dtype=np.float64), np.ones(len(col))], axis=1)
    else:
        rows = np.array(
            [[float(is_correct(r, h, normalize=normalize)), 1.0] for r, h in zip(refs, hyps)],
            dtype=np.float64,
        )
    if len(set(ids)) != len(ids):
        raise ValueError(f"record ids repeat within the {metric!r} records; ids must name clips uniquely")
    return ClipStatistics(metric, tuple(ids), rows)


# ------------------------------------------------------------------------------------------- resampling
def _resample_weights(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """``(size, n)`` draw counts: each row is ``n`` clips drawn uniformly with replacement."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)


def bootstrap_interval(
    stats: ClipStatistics, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> MetricInterval:
    """Percentile bootstrap interval of a metric over test clips.

    Resampled: the ``n`` clips (rows of ``stats``), ``n`` draws with replacement, ``n_boot`` times (seeded);
    each resample's metric is recomputed from its summed statistics (corpus WER from summed errors and
    reference words). The bounds are the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of those
    values; ``value`` is the metric on all clips.
    """
    _check_settings(n_boot=n_boot, level=level)
    rng = np.random.default_rng(seed)
    boots = np.concatenate(
        [
            stats.value(_resample_weights(rng, stats.n, min(_CHUNK, n_boot - s)))
            for s in range(0, n_boot, _CHUNK)
        ]
    )
    low, high = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return MetricInterval(stats.metric, stats.value(), float(low), float(high), stats.n, level, n_boot)


def _paired(system: ClipStatistics, base: ClipStatistics) -> tuple[np.ndarray, np.ndarray]:
    if system.metric != base.metric:
        raise ValueError(f"cannot pair metric {system.metric!r} with {base.metric!r}")
    if set(system.ids) != set(base.ids) or system.n != base.n:
        missing = sorted(set(system.ids) ^ set(base.ids))[:3]
        raise ValueError(
            f"system and base must be scored on the same clips; ids only one side has: {missing}"
        )
    order = {cid: i for i, cid in enumerate(base.ids)}
    return system.rows, base.rows[[order[c] for c in system.ids]]


def paired_comparison(
    system: ClipStatistics,
    base: ClipStatistics,
    *,
    n_boot: int = 1000,
    n_perm: int = 2000,
    alpha: float = 0.05,
    level: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """Is ``system`` different from ``base`` on the same clips?

    Clips are paired by id. ``diff = metric(system) - metric(base)`` on all clips.

    * Interval (paired bootstrap): the ``n`` clip *pairs* are resampled with replacement ``n_boot`` times, the
      same draw for both systems, and the difference of the two recomputed metrics taken each time;
      percentile bounds at ``level``.
    * p-value (paired permutation test): ``n_perm`` times, each clip's two rows are swapped between the
      systems with probability 1/2 (independently per clip, seeded), and the difference recomputed;
      ``p = (1 + #{|diff_perm| >= |diff|}) / (1 + n_perm)``. Under the null that the two systems are
      exchangeable on every clip this is a valid two-sided p-value; it is the same with the systems swapped,
      and 1 for identical predictions. For accuracy it is a Monte-Carlo form of the exact sign (McNemar) test;
      for WER it permutes per-clip error and word counts.

    ``significant`` is ``p_value < alpha``; ``better`` reads the metric's direction
    (:data:`HIGHER_IS_BETTER`).
    """
    _check_settings(n_boot=n_boot, level=level)
    if n_perm < 1 or not 0 < alpha < 1:
        raise ValueError(f"n_perm must be >= 1 and alpha in (0, 1); got n_perm={n_perm}, alpha={alpha}")
    sys_rows, base_rows = _paired(system, base)
    s = ClipStatistics(system.metric, system.ids, sys_rows)
    b = ClipStatistics(system.metric, system.ids, base_rows)
    diff = s.value() - b.value()
    rng = np.random.default_rng(seed)
    boots, perms = [], []
    for start in range(0, n_boot, _CHUNK):
        w = _resample_weights(rng, s.n, min(_CHUNK, n_boot - start))
        boots.append(s.value(w) - b.value(w))
    for start in range(0, n_perm, _CHUNK):
        swap = rng.random((min(_CHUNK, n_perm - start), s.n)) < 0.5
        # With 0/1 weights per clip the summed rows of each "system" are a swap-masked mix of both tables.
        ws, wb = (~swap).astype(np.float64), swap.astype(np.float64)
        perms.append(
            _AGGREGATE[s.metric](ws @ sys_rows + wb @ base_rows)
            - _AGGREGATE[s.metric](ws @ base_rows + wb @ sys_rows)
        )
    boots_a, perms_a = np.concatenate(boots), np.concatenate(perms)
    low, high = np.quantile(boots_a, [(1 - level) / 2, (1 + level) / 2])
    # A small tolerance so that float rounding of equal sums does not decide "as extreme".
    extreme = int((np.abs(perms_a) >= abs(diff) - 1e-9 * max(1.0, abs(diff))).sum())
    p = (1 + extreme) / (1 + n_perm)
    significant = bool(p < alpha)
    better = None
    if significant and diff != 0:
        better = "system" if (diff > 0) == HIGHER_IS_BETTER[s.metric] else "base"
    return PairedComparison(
        s.metric,
        float(diff),
        float(low),
        float(high),
        float(p),
        significant,
        better,
        s.n,
        alpha,
        level,
        n_boot,
        n_perm,
    )


def _check_settings(*, n_boot: int, level: float) -> None:
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"n_boot must be >= 1 and level in (0, 1); got n_boot={n_boot}, level={level}")


# ------------------------------------------------------------------------------------------- whole results
def _task_stats(
    result: Any, metrics: Mapping[str, Sequence[str]] | None, normalize: Callable[[str], str] = normalize_text
) -> dict[str, dict[str, ClipStatistics]]:
    """Per task and metric, the clip statistics of an EvalResult-like ``result`` (``records`` +
    ``metrics``)."""
    by_task: dict[str, list[Mapping[str, Any]]] = {}
    for rec in result.records:
        by_task.setdefault(str(rec["task"]), []).append(rec)
    wanted = (
        metrics if metrics is not None else {t: [k for k in m if k != "n"] for t, m in result.metrics.items()}
    )
    out: dict[str, dict[str, ClipStatistics]] = {}
    for task, names in wanted.items():
        if task not in by_task:
            raise ValueError(f"task {task!r} has no records in this result")
        reported = result.metrics.get(task, {})
        multi = "part_accuracy" in reported or "part_accuracy" in names
        out[task] = {}
        for name in names:
            st = clip_statistics(by_task[task], name, multi_part=multi, normalize=normalize)
            if name in reported and not np.isclose(st.value(), float(reported[name]), rtol=1e-9, atol=1e-9):
                raise ValueError(
                    f"task {task!r}: the per-clip {name} gives {st.value()!r} but the result reports "
                    f"{reported[name]!r}; the statistics would describe a different metric"
                )
            out[task][name] = st
    return out


def task_intervals(
    result: Any,
    *,
    metrics: Mapping[str, Sequence[str]] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    normalize: Callable[[str], str] = normalize_text,
) -> dict[str, dict[str, MetricInterval]]:
    """``{task: {metric: MetricInterval}}`` for an :class:`~mowe.evaluation.evaluate.EvalResult`.

    ``metrics``: task -> metric names to use (default: the metrics the result reports per task). Each interval
    resamples that task's clips (:func:`bootstrap_interval`); values are checked against the reported metrics.
    ``normalize``: the text normaliser the result was scored with.
    """
    return {
        task: {name: bootstrap_interval(st, n_boot=n_boot, level=level, seed=seed) for name, st in ms.items()}
        for task, ms in _task_stats(result, metrics, normalize).items()
    }


def compare_to_base(
    system: Any,
    base: Any,
    *,
    metrics: Mapping[str, Sequence[str]] | None = None,
    n_boot: int = 1000,
    n_perm: int = 2000,
    alpha: float = 0.05,
    level: float = 0.95,
    seed: int = 0,
    normalize: Callable[[str], str] = normalize_text,
) -> dict[str, dict[str, PairedComparison]]:
    """``{task: {metric: PairedComparison}}``: ``system`` against ``base`` (two EvalResults on the same clips,
    paired by record id) for every task and metric of ``system`` (or ``metrics``); see
       :func:`paired_comparison`."""
    sys_stats = _task_stats(system, metrics, normalize)
    base_stats = _task_stats(base, {task: list(ms) for task, ms in sys_stats.items()}, normalize)
    out: dict[str, dict[str, PairedComparison]] = {}
    for task, ms in sys_stats.items():
        out[task] = {
            name: paired_comparison(
                st, base_stats[task][name], n_boot=n_boot, n_perm=n_perm, alpha=alpha, level=level, seed=seed
            )
            for name, st in ms.items()
        }
    return out

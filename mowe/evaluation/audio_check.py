"""Does the model listen? The real run against an audio control (:mod:`mowe.evaluation.controls`), per task.

:func:`audio_check` pairs the real run's and the control's predictions clip by clip and reports, per task and
metric, the gap ``real - control`` with its paired-bootstrap interval and permutation p-value
(:func:`~mowe.evaluation.stats.paired_comparison`). It warns when:

* **the real run is not ahead**: the interval's bound on the better side does not clear zero (for accuracy the
  lower bound of ``real - control`` is <= 0; for WER the upper bound is >= 0) -- the audio did not measurably
  help, so the scores may come from the questions alone;
* **every example got the same answer**: all of the real run's predictions of a task with two or more examples
  are the same after normalisation while its references are not (a harness that dropped the audio, or a
  collapsed model, answers like this).

``flagged`` is True when any warning was raised.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mowe.evaluation.metrics import normalize_text
from mowe.evaluation.stats import (
    HIGHER_IS_BETTER,
    ClipStatistics,
    PairedComparison,
    compare_to_base,
    paired_comparison,
)

__all__ = ["AudioCheck", "audio_check", "same_answer_tasks"]


@dataclass
class AudioCheck:
    """The gap between a real run and its audio control.

    Attributes:
        control: ``"shuffled"`` or ``"silent"``.
        gaps: ``{task: {metric: PairedComparison}}`` (``diff`` = real - control).
        warnings: human-readable lines (empty when the model listens).
    """

    control: str
    gaps: dict[str, dict[str, PairedComparison]]
    warnings: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return bool(self.warnings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "control": self.control,
            "flagged": self.flagged,
            "warnings": self.warnings,
            "gaps": {t: {m: c.to_dict() for m, c in ms.items()} for t, ms in self.gaps.items()},
        }

    def table(self) -> str:
        """Markdown: one row per task and metric with the gap, its interval and p."""
        lines = [f"| task | real - {self.control} | 95% interval | p |", "|---|---|---|---|"]
        for task, ms in self.gaps.items():
            for metric, c in ms.items():
                lines.append(
                    f"| {task} ({metric}) | {c.diff:+.3f} | [{c.low:+.3f}, {c.high:+.3f}] | {c.p_value:.3g} |"
                )
        return "\n".join(lines)


def same_answer_tasks(
    records: list[Mapping[str, Any]], normalize: Callable[[str], str] = normalize_text
) -> list[str]:
    """Tasks (with >= 2 examples and more than one distinct reference) whose predictions are all the same."""
    preds: dict[str, set[str]] = {}
    refs: dict[str, set[str]] = {}
    count: dict[str, int] = {}
    for r in records:
        t = str(r["task"])
        preds.setdefault(t, set()).add(normalize(str(r["prediction"] or "")))
        refs.setdefault(t, set()).add(normalize(str(r["answer"])))
        count[t] = count.get(t, 0) + 1
    return sorted(t for t in preds if count[t] >= 2 and len(preds[t]) == 1 and len(refs[t]) > 1)


def audio_check(
    real: Any,
    control: Any,
    *,
    control_name: str,
    stats: tuple[Mapping[str, ClipStatistics], Mapping[str, ClipStatistics]] | None = None,
    normalize: Callable[[str], str] = normalize_text,
    n_boot: int = 1000,
    n_perm: int = 2000,
    seed: int = 0,
) -> AudioCheck:
    """Compare a real run with its control (two :class:`~mowe.evaluation.evaluate.EvalResult` on the same
    clips).

    Args:
        real, control: the two results (records paired by id).
        control_name: ``"shuffled"`` or ``"silent"`` (for the report).
        stats: ``(real, control)`` per-task clip statistics to compare instead of the results' own metrics
            (e.g. a benchmark's verdicts as accuracy rows); default: every metric the results report.
        normalize: the normaliser the results were scored with.
    """
    if stats is not None:
        gaps = {
            t: {s.metric: paired_comparison(s, stats[1][t], n_boot=n_boot, n_perm=n_perm, seed=seed)}
            for t, s in stats[0].items()
        }
    else:
        gaps = compare_to_base(real, control, n_boot=n_boot, n_perm=n_perm, seed=seed, normalize=normalize)
    warnings = []
    for task, ms in gaps.items():
        for metric, c in ms.items():
            ahead = c.low > 0 if HIGHER_IS_BETTER[metric] else c.high < 0
            if not ahead:
                warnings.append(
                    f"task {task!r}: the real run is not ahead of the {control_name}-audio control on "
                    f"{metric} (real - control {c.diff:+.3f}, 95% interval [{c.low:+.3f}, "
                    f"{c.high:+.3f}], n={c.n}); the model may not be using the audio"
                )
    for task in same_answer_tasks(real.records, normalize):
        warnings.append(
            f"task {task!r}: every example got the same answer "
            f"({next(str(r['prediction']) for r in real.records if str(r['task']) == task)!r}); "
            f"check that the audio reaches the model"
        )
    return AudioCheck(control_name, gaps, warnings)

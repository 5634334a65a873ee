"""One evaluation as ``mowe eval`` runs it: the real set, optionally a benchmark's scoring rule and an audio
control, and the report files.

:func:`run_eval` generates on the real set (:func:`~mowe.evaluation.evaluate.evaluate_model`), scores it with
a benchmark format's rule when one is given (:mod:`mowe.evaluation.benchmarks`), and with ``audio_control``
runs the same set again with the audio shuffled or silenced and compares the two
(:mod:`mowe.evaluation.audio_check`). :func:`write_eval_run` writes ``eval.json`` / ``eval.md`` (the real run
and the control side by side), ``benchmark.json`` and ``audio_check.json`` and returns the text to print.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mowe.evaluation.audio_check import AudioCheck, audio_check
from mowe.evaluation.benchmarks import BenchmarkScore, score_benchmark
from mowe.evaluation.evaluate import EvalResult, evaluate_model, write_report
from mowe.evaluation.metrics import normalize_text
from mowe.evaluation.stats import ClipStatistics, task_intervals
from mowe.hf.model_card import CardResult

__all__ = ["EvalRun", "card_results", "run_eval", "write_eval_run"]


@dataclass
class EvalRun:
    """What :func:`run_eval` returns.

    Attributes:
        name: the system's name in the report. result: the real run. benchmark: per-task scores under
        ``benchmark_format`` (with ``"all"``), or None. control: the audio-control run, or None. check: the
        gap and warnings, or None.
    """

    name: str
    result: EvalResult
    benchmark: dict[str, BenchmarkScore] | None = None
    control: EvalResult | None = None
    control_benchmark: dict[str, BenchmarkScore] | None = None
    check: AudioCheck | None = None


def _choices(dataset: Any) -> dict[str, list[str]]:
    info = getattr(dataset, "example_info", None)
    if info is None:
        return {}
    out = {}
    for i in range(len(dataset)):
        e = info(i)
        if e.get("choices"):
            out[str(e["id"])] = list(e["choices"])
    return out


def _verdict_stats(records: list[dict[str, Any]]) -> dict[str, ClipStatistics]:
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_task.setdefault(str(r["task"]), []).append(r)
    return {
        t: ClipStatistics(
            "accuracy",
            tuple(str(r["id"]) for r in rs),
            np.array([[float(r["verdict"] == "correct"), 1.0] for r in rs], dtype=np.float64),
        )
        for t, rs in by_task.items()
    }


def _score(
    result: EvalResult, fmt: str, choices: Mapping[str, list[str]], n_boot: int
) -> dict[str, BenchmarkScore]:
    scores = score_benchmark(result.records, fmt, choices=choices, n_boot=n_boot)
    # The report's table shows the benchmark's own rule, not mowe's default exact match.
    result.metrics = {t: {"n": s.n, "accuracy": s.accuracy.value} for t, s in scores.items() if t != "all"}
    return scores


def run_eval(
    model: Any,
    processor: Any,
    dataset: Any,
    *,
    name: str = "model",
    benchmark_format: str | None = None,
    audio_control: str | None = None,
    control_seed: int = 0,
    batch_size: int = 16,
    max_new_tokens: int = 24,
    num_beams: int = 1,
    task_metrics: Mapping[str, str] | None = None,
    normalize: Callable[[str], str] = normalize_text,
    progress: bool = True,
    n_boot: int = 1000,
) -> EvalRun:
    """Evaluate ``model`` on ``dataset``; see the module docstring.

    Args:
        benchmark_format: ``"mmau"``, ``"airbench"``, ``"dynamic-superb"`` or None (per-task metrics of
            :func:`~mowe.evaluation.metrics.evaluate_predictions`).
        audio_control: ``"shuffled"``, ``"silent"`` or None.
        Others: as :func:`~mowe.evaluation.evaluate.evaluate_model`.
    """
    kw = {
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "num_beams": num_beams,
        "progress": progress,
        "task_metrics": task_metrics,
        "normalize": normalize,
    }
    result = evaluate_model(model, processor, dataset, **kw)
    run = EvalRun(name, result)
    choices = _choices(dataset) if benchmark_format else {}
    if benchmark_format:
        run.benchmark = _score(result, benchmark_format, choices, n_boot)
    if audio_control:
        run.control = evaluate_model(
            model,
            processor,
            dataset,
            audio_control=audio_control,
            control_seed=control_seed,
            desc=f"eval ({audio_control} audio)",
            **kw,
        )
        stats = None
        if benchmark_format:
            run.control_benchmark = _score(run.control, benchmark_format, choices, n_boot)
            stats = (_verdict_stats(result.records), _verdict_stats(run.control.records))
        run.check = audio_check(
            result, run.control, control_name=audio_control, stats=stats, normalize=normalize, n_boot=n_boot
        )
    return run


def _benchmark_lines(fmt: str, scores: Mapping[str, BenchmarkScore]) -> list[str]:
    lines = [
        f"| {fmt} task | n | accuracy | 95% interval | no option | several options | wrong |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, s in scores.items():
        a = s.accuracy
        lines.append(
            f"| {task} | {s.n} | {a.value:.3f} | [{a.low:.3f}, {a.high:.3f}] | {s.counts['no_option']} | "
            f"{s.counts['several_options']} | {s.counts['wrong']} |"
        )
    return lines


def write_eval_run(run: EvalRun, out_dir: str | os.PathLike) -> str:
    """Write the report files into ``out_dir``; returns the text ``mowe eval`` prints."""
    systems = {run.name: run.result}
    if run.control is not None and run.check is not None:
        systems[f"{run.name} ({run.check.control} audio)"] = run.control
    text = [write_report(systems, out_dir)]
    if run.benchmark is not None:
        fmt = next(iter(run.benchmark.values())).format
        with open(os.path.join(out_dir, "benchmark.json"), "w") as f:
            data = {"real": {t: s.to_dict() for t, s in run.benchmark.items()}}
            if run.control_benchmark is not None:
                data["control"] = {t: s.to_dict() for t, s in run.control_benchmark.items()}
            json.dump(data, f, indent=1)
        text += ["", *_benchmark_lines(fmt, run.benchmark)]
    if run.check is not None:
        with open(os.path.join(out_dir, "audio_check.json"), "w") as f:
            json.dump(run.check.to_dict(), f, indent=1)
        text += ["", run.check.table()]
        text += [f"warning: {w}" for w in run.check.warnings] or [
            f"audio check: the real run is ahead of the {run.check.control}-audio control on every task"
        ]
    return "\n".join(text)


def card_results(
    run: EvalRun, *, dataset: str, split: str | None = None, normalize: Callable[[str], str] = normalize_text
) -> list[CardResult]:
    """The real run's figures as model-card results (:class:`~mowe.hf.model_card.CardResult`): per task and
    metric the value, n and bootstrap interval (a benchmark's rule when the run used one)."""
    out = []
    if run.benchmark is not None:
        for task, s in run.benchmark.items():
            out.append(
                CardResult(
                    dataset,
                    task,
                    "accuracy",
                    s.accuracy.value,
                    s.n,
                    [s.accuracy.low, s.accuracy.high],
                    split,
                    s.format,
                )
            )
        return out
    for task, ms in task_intervals(run.result, normalize=normalize).items():
        for metric, iv in ms.items():
            out.append(CardResult(dataset, task, metric, iv.value, iv.n, [iv.low, iv.high], split))
    return out

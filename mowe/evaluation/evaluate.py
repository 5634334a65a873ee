"""Evaluation harness: batched generation over a manifest, per-task metrics, JSON + Markdown reports.

``mowe eval --model DIR --manifest test.jsonl`` is the command-line form (:mod:`mowe.cli`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from mowe.constants import MODEL_INPUT_KEYS
from mowe.data.collator import MoWECollator
from mowe.evaluation.controls import AudioControl
from mowe.evaluation.metrics import (
    Metric,
    Normalizer,
    evaluate_predictions,
    format_markdown_table,
    normalize_text,
)
from mowe.inference import encode_clips

__all__ = ["EvalResult", "evaluate_model", "write_report"]

# Generation takes the model inputs without labels.
MODEL_KEYS = tuple(k for k in MODEL_INPUT_KEYS if k != "labels")


@dataclass
class EvalResult:
    """Predictions and per-task metrics.

    Attributes:
        records: one dict per example: id, task, instruction, answer, prediction.
        metrics: task -> {"n": count, metric: value} (see
        :func:`~mowe.evaluation.metrics.evaluate_predictions`).
        router_counts: task -> per-weak-encoder selection counts (MoWE models only), one per routing window (a
            clip routed per clip counts once; routed per window, each of its windows counts).
        encoder_names: the weak pool's encoder names, in index order.
    """

    records: list[dict[str, Any]]
    metrics: dict[str, dict[str, float]]
    router_counts: dict[str, list[int]] = field(default_factory=dict)
    encoder_names: list[str] = field(default_factory=list)


@torch.no_grad()
def evaluate_model(
    model,
    processor,
    dataset: Dataset,
    *,
    batch_size: int = 16,
    max_new_tokens: int = 24,
    num_beams: int = 1,
    progress: bool = True,
    desc: str = "eval",
    task_metrics: Mapping[str, Metric] | None = None,
    default_metric: Metric = "accuracy",
    normalize: Normalizer = normalize_text,
    feature_cache=None,
    audio_control: str | None = None,
    control_seed: int = 0,
) -> EvalResult:
    """Generate an answer for every example of ``dataset`` and score it.

    Args:
        model: a :class:`~mowe.MoWEAudioLLM`.
        processor: the :class:`~mowe.data.processor.MoWEProcessor` it was trained with.
        dataset: items are dicts with ``audio``, ``instruction``, ``answer``, ``task``, ``id``
            (e.g. :class:`~mowe.data.ManifestDataset`).
        task_metrics, default_metric, normalize: how each task is scored (see
            :func:`~mowe.evaluation.metrics.evaluate_predictions`; default: accuracy for every task).
        feature_cache: a :class:`~mowe.encoders.cache.FeatureCache` or folder for the frozen encoders'
            features (the model keeps using it afterwards); None leaves the model's cache setting as it is.
        audio_control: ``"shuffled"`` (each example gets another same-task example's clip) or ``"silent"``
            (zeros): a check that the model listens (:mod:`mowe.evaluation.controls`); None: the real audio.
        control_seed: the shuffle's seed.
    """
    if audio_control is not None:
        dataset = AudioControl(dataset, audio_control, seed=control_seed)
    if feature_cache is not None:
        model.use_feature_cache(feature_cache)
    was_training = model.training
    model.eval()
    collate = MoWECollator(processor, train=False)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    records: list[dict[str, Any]] = []
    names = list(model.weak_encoders.names) if getattr(model, "weak_encoders", None) is not None else []
    counts: dict[str, list[int]] = {}
    eos = processor.tokenizer.eos_token_id
    for batch in tqdm(loader, desc=desc, disable=not progress, unit="batch"):
        if batch is None:
            continue
        device = next(model.parameters()).device
        inputs = {k: batch[k].to(device) for k in MODEL_KEYS}
        prompt = (
            model.prompt_embeddings(inputs["input_ids"], inputs["attention_mask"])
            if getattr(model, "needs_prompt", False)
            else None
        )
        # Long clips (many windows) are encoded a few at a time.
        audio = encode_clips(model, inputs["waveforms"], inputs["wave_lengths"], prompt)
        if audio.router is not None:  # one count per routing window of each clip (a long file: each window)
            per_example = batch.get("clips_per_example") or [1] * len(batch["task"])
            tasks = [t for t, n in zip(batch["task"], per_example) for _ in range(n)]
            win = audio.router.per_window()
            for task, rows, inside in zip(tasks, win.indices.tolist(), win.mask.tolist()):
                c = counts.setdefault(task, [0] * len(names))
                for row, ok in zip(rows, inside):
                    for e in row if ok else ():
                        c[e] += 1
        out = model.generate(
            **inputs, max_new_tokens=max_new_tokens, num_beams=num_beams, eos_token_id=eos, audio=audio
        )
        preds = processor.decode(out)
        for i, pred in enumerate(preds):
            records.append(
                {
                    "id": batch["id"][i],
                    "task": batch["task"][i],
                    "instruction": batch["instruction"][i],
                    "answer": batch["answer"][i],
                    "prediction": pred,
                }
            )
    if was_training:
        model.train()
    metrics = evaluate_predictions(
        records, task_metrics=task_metrics, default_metric=default_metric, normalize=normalize
    )
    return EvalResult(records, metrics, counts, names)


def write_report(results: Mapping[str, EvalResult], out_dir: str | os.PathLike, *, stem: str = "eval") -> str:
    """Write ``{stem}.json`` (metrics, router counts, predictions) and ``{stem}.md`` (one column per
    system)."""
    os.makedirs(out_dir, exist_ok=True)
    data = {
        name: {
            "metrics": r.metrics,
            "router_counts": r.router_counts,
            "encoder_names": r.encoder_names,
            "predictions": r.records,
        }
        for name, r in results.items()
    }
    with open(os.path.join(out_dir, f"{stem}.json"), "w") as f:
        json.dump(data, f, indent=1)
    table = format_markdown_table({name: r.metrics for name, r in results.items()})
    with open(os.path.join(out_dir, f"{stem}.md"), "w") as f:
        f.write(table + "\n")
    return table

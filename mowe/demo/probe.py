"""What the frozen encoders carry, measured without an LLM: linear probes on pooled features.

MoWE's claim has two halves: the weak encoders hold information the strong one lost, and the audio LLM
learns to use it. The probe tests the first half directly. For each clip-level task (a label per clip) and
each set of encoders, the clip's features are pooled over its valid frames (mean and standard deviation per
dimension, :func:`mowe.connectors.basic.masked_mean_std`), standardised with the training clips' statistics,
and a multinomial logistic regression (L-BFGS, small L2) is fitted on the training clips and scored on the
held-out test clips. The features come from the same feature cache the systems train on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from mowe.connectors.basic import masked_mean_std
from mowe.data.audio import pad_batch
from mowe.encoders.cache import cached_encode
from mowe.evaluation.stats import bootstrap_interval, clip_statistics

__all__ = ["pooled_features", "probe_accuracy", "run_probes"]


@torch.no_grad()
def pooled_features(
    encoders: Mapping[str, torch.nn.Module], cache, dataset, *, batch_size: int = 32
) -> tuple[dict[str, torch.Tensor], list[dict[str, str]], list[str]]:
    """Per distinct clip of ``dataset`` (``n`` of them): ``(n, 2 d)`` pooled features per encoder, the clip's
    labels (task -> answer) and its id (the audio path)."""

    labels: dict[str, dict[str, str]] = {}
    first: dict[str, int] = {}
    for i in range(len(dataset)):
        info = dataset.example_info(i)
        labels.setdefault(info["path"], {})[info["task"]] = info["answer"]
        first.setdefault(info["path"], i)
    paths = sorted(labels)
    feats: dict[str, list[torch.Tensor]] = {n: [] for n in encoders}
    for start in range(0, len(paths), batch_size):
        wav, lens = pad_batch([dataset[first[p]]["audio"] for p in paths[start : start + batch_size]])
        for name, enc in encoders.items():
            out = cached_encode(enc, wav, lens, cache, name=name)
            feats[name].append(masked_mean_std(out.features.float(), out.lengths))
    return {n: torch.cat(v) for n, v in feats.items()}, [labels[p] for p in paths], paths


def probe_accuracy(
    x_train: torch.Tensor,
    y_train: Sequence[str],
    x_test: torch.Tensor,
    y_test: Sequence[str],
    *,
    l2: float = 1e-3,
) -> list[bool]:
    """Fit a logistic regression on ``(n, d)`` train features and return, per test clip, whether it is
    right."""
    classes = sorted(set(y_train))
    yt = torch.tensor([classes.index(v) for v in y_train])
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    a, b = (x_train - mu) / sd, (x_test - mu) / sd
    w = torch.zeros(a.shape[1], len(classes), requires_grad=True)
    bias = torch.zeros(len(classes), requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(a @ w + bias, yt) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    pred = (b @ w + bias).argmax(1).tolist()
    return [classes[p] == y for p, y in zip(pred, y_test)]


def run_probes(
    encoders: Mapping[str, torch.nn.Module],
    cache,
    train,
    test,
    *,
    tasks: Sequence[str],
    sets: Mapping[str, Sequence[str]],
    seed: int = 0,
) -> dict[str, dict[str, dict]]:
    """``{task: {set name: {"value", "ci95", "n"}}}``: test accuracy of a linear probe per task and encoder
    set.

    Args:
        encoders: name -> frozen encoder (the demo's strong and weak encoders).
        cache: the :class:`~mowe.encoders.cache.FeatureCache` they were encoded through.
        train, test: datasets with ``example_info`` (e.g. :class:`~mowe.data.manifest.ManifestDataset`).
        tasks: clip-level tasks (one label per clip) to probe.
        sets: set name -> encoder names whose pooled features are concatenated (e.g. ``{"strong": ["strong"],
            "strong + speaker": ["strong", "speaker"]}``).
    """
    xtr, ytr, _ = pooled_features(encoders, cache, train)
    xte, yte, ids = pooled_features(encoders, cache, test)
    out: dict[str, dict[str, dict]] = {}
    for task in tasks:
        tr = [i for i, y in enumerate(ytr) if task in y]
        te = [i for i, y in enumerate(yte) if task in y]
        if not tr or not te:
            continue
        out[task] = {}
        for set_name, names in sets.items():
            a = torch.cat([xtr[n][tr] for n in names], dim=1)
            b = torch.cat([xte[n][te] for n in names], dim=1)
            right = probe_accuracy(a, [ytr[i][task] for i in tr], b, [yte[i][task] for i in te])
            records = [
                {"id": ids[i], "answer": "1", "prediction": "1" if r else "0"} for i, r in zip(te, right)
            ]
            iv = bootstrap_interval(clip_statistics(records, "accuracy"), seed=seed)
            out[task][set_name] = {"value": iv.value, "ci95": [iv.low, iv.high], "n": iv.n}
    return out

"""The demo's report: per-task metrics with 95 % bootstrap intervals, paired tests against base-only, router
usage, training curves and router heatmaps.

Files written by :func:`write_results` into the output folder:

* ``results.json``: per system and task the metric, ``ci95``, ``n`` and (for non-baseline systems) the paired
  comparison with the baseline (difference, its interval, p-value, ``significant``); router counts per task;
  the encoders used and where their weights came from; settings and timings; every prediction.
* ``results.md``: the same as a table (significant differences marked), router usage, the plots.
* ``training_curves.png`` and ``router_heatmap_<system>.png`` for each routed system.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from mowe.demo.corpus import score_normalize
from mowe.demo.systems import system_slug
from mowe.evaluation.metrics import METRIC_LABELS
from mowe.evaluation.plots import plot_router_heatmap
from mowe.evaluation.stats import compare_to_base, task_intervals

__all__ = [
    "chance_levels",
    "markdown_table",
    "probe_table",
    "router_table",
    "summarize",
    "verdict",
    "write_results",
]


def summarize(
    results: Mapping[str, Any], *, baseline: str, seed: int = 0, normalize=None
) -> dict[str, dict[str, Any]]:
    """``{system: {"tasks": {task: {metric: {...}}}, "router_counts": ..., "encoder_names": ...}}``.

    Each metric entry holds ``value``, ``ci95`` ([low, high]), ``n`` and, for systems other than ``baseline``,
    ``vs_baseline`` with ``diff`` (system minus baseline), ``ci95`` (paired bootstrap), ``p_value`` (paired
    permutation test, :func:`mowe.evaluation.stats.paired_comparison`), ``significant`` (p < 0.05) and
    ``better`` (significant and in the metric's good direction).
    """

    normalize = normalize or score_normalize  # what the demo scores with (digits spelled out)

    out: dict[str, dict[str, Any]] = {}
    for name, res in results.items():
        tasks: dict[str, dict[str, Any]] = {}
        for task, metrics in task_intervals(res, seed=seed, normalize=normalize).items():
            tasks[task] = {
                m: {"value": iv.value, "ci95": [iv.low, iv.high], "n": iv.n} for m, iv in metrics.items()
            }
        if name != baseline:
            for task, metrics in compare_to_base(
                res, results[baseline], seed=seed, normalize=normalize
            ).items():
                for m, cmp in metrics.items():
                    tasks[task][m]["vs_baseline"] = {
                        "diff": cmp.diff,
                        "ci95": [cmp.low, cmp.high],
                        "p_value": cmp.p_value,
                        "significant": cmp.significant,
                        "better": cmp.better == "system",
                    }
            _holm(tasks)
        out[name] = {"tasks": tasks, "router_counts": res.router_counts, "encoder_names": res.encoder_names}
    return out


def _holm(tasks: dict[str, dict[str, Any]], alpha: float = 0.05) -> None:
    """Add ``significant_holm`` to every ``vs_baseline``: Holm's step-down correction over all of one system's
    task/metric comparisons, so that the chance of any false mark in its column stays below ``alpha``."""
    cmps = sorted(
        (c for ms in tasks.values() for m in ms.values() if (c := m.get("vs_baseline"))),
        key=lambda c: c["p_value"],
    )
    still = True
    for rank, c in enumerate(cmps):
        still = still and c["p_value"] <= alpha / (len(cmps) - rank)
        c["significant_holm"] = still


def _cell(entry: Mapping[str, Any]) -> str:
    lo, hi = entry["ci95"]
    text = f"{entry['value']:.3f} [{lo:.2f}, {hi:.2f}]"
    cmp = entry.get("vs_baseline")
    if cmp is not None and cmp["significant"]:
        text += (" ▲" if cmp["better"] else " ▼") + ("*" if cmp.get("significant_holm") else "")
    return text


def markdown_table(summary: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per task and metric, one column per system: ``value [low, high]``; ▲/▼ marks a difference from
    the first (baseline) column that is significant at 5 % (paired test), in the better / worse direction, and
    ``*`` one that stays significant after Holm's correction over the column's comparisons."""

    systems = list(summary)
    rows = sorted({(t, m) for s in systems for t, ms in summary[s]["tasks"].items() for m in ms})
    lines = ["| task | " + " | ".join(systems) + " |", "|---|" + "---|" * len(systems)]
    for task, metric in rows:
        cells = [
            _cell(summary[s]["tasks"][task][metric]) if metric in summary[s]["tasks"].get(task, {}) else "–"
            for s in systems
        ]
        n = summary[systems[0]]["tasks"][task][metric]["n"]
        lines.append(f"| {task} ({METRIC_LABELS.get(metric, metric)}, n={n}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def router_table(summary: Mapping[str, Mapping[str, Any]]) -> str:
    """Per routed system and task, the share of test clips that selected each weak encoder."""
    lines = []
    for name, s in summary.items():
        if not s["router_counts"]:
            continue
        names = s["encoder_names"]
        lines += [
            f"\n**{name}**: share of test examples routed to each weak encoder\n",
            "| task | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for task in sorted(s["router_counts"]):
            c = s["router_counts"][task]
            total = max(1, sum(c))
            lines.append(f"| {task} | " + " | ".join(f"{v / total:.2f}" for v in c) + " |")
    return "\n".join(lines)


def _plots(out_dir: str, logs: Mapping[str, str], summary: Mapping[str, Any]) -> list[str]:
    import matplotlib  # optional dependency (the plots extra), imported only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, log in logs.items():
        with open(log) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        rows = [r for r in rows if "step" in r and ("lm_loss" in r or "loss" in r)]
        ax.plot([r["step"] for r in rows], [r.get("lm_loss", r.get("loss")) for r in rows], label=name, lw=1)
    ax.set(title="training (next-token loss on answers)", xlabel="step", ylabel="loss", yscale="log")
    ax.legend()
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "training_curves.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    for name, s in summary.items():
        if not s["router_counts"]:
            continue
        paths.append(os.path.join(out_dir, f"router_heatmap_{system_slug(name)}.png"))
        plot_router_heatmap(
            s["router_counts"],
            s["encoder_names"],
            paths[-1],
            title=f"{name}: weak encoder selected, per task (test)",
        )
    return paths


def chance_levels(result: Any) -> dict[str, float]:
    """Per accuracy-scored task, the accuracy of guessing: 1 / the number of distinct reference answers in the
    test set (the labels are balanced by construction)."""
    answers: dict[str, set[str]] = {}
    for r in result.records:
        answers.setdefault(r["task"], set()).add(str(r["answer"]).strip().lower())
    return {t: 1.0 / len(a) for t, a in answers.items() if "accuracy" in result.metrics.get(t, {})}


def _sig(entry: Mapping[str, Any], *, better: bool) -> bool:
    cmp = entry.get("vs_baseline") or {}
    return bool(cmp.get("significant_holm")) and bool(cmp.get("better")) == better


def verdict(summary, ablations, controls, chance, *, baseline: str) -> dict[str, Any]:
    """The demo's claims checked against its numbers (all comparisons paired, Holm-corrected per column).

    Returns ``{"ahead": {system: [tasks]}, "behind": {...}, "encoder_pays": {system: {encoder: [tasks where
    removing it costs significantly]}}, "shuffled_at_chance": {system: {task: bool}}, "silent_at_chance":
    {...}}``; a task is at chance when the control's 95 % interval holds the chance level or lies below it.
    """
    out: dict[str, Any] = {
        "ahead": {},
        "behind": {},
        "encoder_pays": {},
        "shuffled_at_chance": {},
        "silent_at_chance": {},
    }
    for name, s in summary.items():
        if name == baseline:
            continue
        for key, better in (("ahead", True), ("behind", False)):
            out[key][name] = sorted(
                t for t, ms in s["tasks"].items() for e in ms.values() if _sig(e, better=better)
            )
    for name, ab in ablations.items():
        out["encoder_pays"][name] = {
            variant.removeprefix("without "): sorted(
                t for t, ms in v["tasks"].items() for e in ms.values() if _sig(e, better=False)
            )
            for variant, v in ab.items()
            if variant != "full"
        }
    for name, ctl in controls.items():
        for variant, v in ctl.items():
            if variant == "real":
                continue
            out[f"{variant}_at_chance"][name] = {
                t: v["tasks"][t]["accuracy"]["ci95"][0] <= c for t, c in chance.items() if t in v["tasks"]
            }
    return out


def _variant_section(title: str, blocks: Mapping[str, Mapping[str, Any]], note: str) -> str:
    if not blocks:
        return ""
    parts = [f"\n## {title}\n\n{note}\n"]
    for name, summary in blocks.items():
        parts.append(f"\n**{name}**\n\n" + markdown_table(summary) + "\n")
    return "".join(parts)


def write_results(
    out_dir: str,
    runs: Mapping[str, Any],
    *,
    baseline: str,
    provenance: Mapping[str, str],
    settings: Mapping[str, Any],
    timings: Mapping[str, float],
    seed: int = 0,
    probes: Mapping[str, Any] | None = None,
) -> str:
    """Write ``results.json``, ``results.md`` and the plots; returns the Markdown tables.

    ``runs``: system name -> :class:`mowe.demo.run.SystemRun` (``result``, ``ablations``, ``controls``,
    ``log_file``, ``timings``, ``model_dir``).
    """
    results = {name: r.result for name, r in runs.items()}
    summary = summarize(results, baseline=baseline, seed=seed)
    ablations = {
        name: summarize({"full": r.result, **r.ablations}, baseline="full", seed=seed)
        for name, r in runs.items()
        if r.ablations
    }
    controls = {
        name: summarize({"real": r.result, **r.controls}, baseline="real", seed=seed)
        for name, r in runs.items()
        if r.controls
    }
    chance = chance_levels(next(iter(results.values())))
    claims = verdict(summary, ablations, controls, chance, baseline=baseline)
    table = markdown_table(summary)
    plots = _plots(out_dir, {name: r.log_file for name, r in runs.items()}, summary)
    data = {
        "baseline": baseline,
        "systems": summary,
        "ablations": ablations,
        "controls": controls,
        "chance": chance,
        "verdict": claims,
        "saved_models": {name: r.model_dir for name, r in runs.items()},
        "encoders": dict(provenance),
        "settings": dict(settings),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "probes": dict(probes or {}),
        "predictions": {name: r.records for name, r in results.items()},
        "ablation_predictions": {
            name: {v: x.records for v, x in r.ablations.items()} for name, r in runs.items()
        },
        "control_predictions": {
            name: {v: x.records for v, x in r.controls.items()} for name, r in runs.items()
        },
    }
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(data, f, indent=1)
    ablation_md = _variant_section(
        "Does each weak encoder pay for itself?",
        ablations,
        "The same trained system evaluated again with one weak encoder removed (never chosen; clips that "
        "chose it "
        "take their next-best encoder). ▼ marks a significant loss against the full system (paired test, p < "
        "0.05; "
        "*: after Holm over the column).",
    )
    chance_txt = ", ".join(f"{t} {c:.2f}" for t, c in sorted(chance.items()))
    control_md = _variant_section(
        "Does the model listen?",
        controls,
        f"Every test example again with its audio shuffled across examples of the same task, or silenced. A "
        f"model "
        f"that uses its audio falls to chance ({chance_txt}); ▼ marks a significant drop against the real "
        f"audio.",
    )
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(
            "Per task: metric [95 % bootstrap interval]; ▲ / ▼: significantly better / worse than "
            f"{baseline} (paired permutation test on the same test examples, p < 0.05); *: still significant "
            "after Holm's correction over the system's comparisons.\n\n"
        )
        f.write(table + "\n")
        f.write(router_table(summary) + "\n")
        f.write(ablation_md + control_md + "\n")
        f.write("Verdict (Holm-corrected): " + json.dumps(claims) + "\n\n")
        if probes:
            f.write(
                "Linear probes on the frozen encoders' pooled features (test accuracy [95 % interval]; "
                "mowe.demo.probe):\n\n" + probe_table(probes) + "\n\n"
            )
        f.write("Parts:\n\n" + "".join(f"- {k}: {v}\n" for k, v in provenance.items()))
        f.write(f"\nSettings: {dict(settings)}\n\nTimings (s): {data['timings_s']}\n")
        f.writelines(f"\n![{os.path.basename(p)}]({os.path.basename(p)})\n" for p in plots)
    return "\n\n".join(
        x
        for x in (table, ablation_md.strip(), control_md.strip(), probe_table(probes) if probes else "")
        if x
    )


def probe_table(probes: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """One row per task, one column per encoder set: ``accuracy [low, high]``."""
    sets = list(next(iter(probes.values())))
    lines = ["| task (probe acc) | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for task, row in probes.items():
        n = next(iter(row.values()))["n"]
        cells = [f"{row[s]['value']:.3f} [{row[s]['ci95'][0]:.2f}, {row[s]['ci95'][1]:.2f}]" for s in sets]
        lines.append(f"| {task} (n={n}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)

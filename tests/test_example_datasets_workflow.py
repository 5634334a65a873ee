"""examples/datasets_workflow.py runs as documented: a dataset with an Audio column -> train -> eval with the
shuffled-audio control -> results on the model card."""

from __future__ import annotations

import os
import subprocess
import sys

from huggingface_hub import ModelCard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_datasets_workflow_example_runs(tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "examples", "datasets_workflow.py"),
            "--out",
            str(tmp_path),
            "--steps",
            "4",
            "--streaming",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "trained 4 steps" in res.stdout and "real - shuffled" in res.stdout
    card = ModelCard.load(tmp_path / "run" / "final" / "README.md")
    assert card.data.datasets == [str(tmp_path / "tones_hf")]
    (result,) = card.data.eval_results
    assert (result.dataset_name, result.dataset_split, result.task_name) == ("tones_hf", "test", "pitch")
    assert (tmp_path / "eval" / "audio_check.json").is_file()

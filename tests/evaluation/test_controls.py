"""Audio controls (shuffled across same-task examples, silent): a model that ignores its audio is not
moved."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from mowe.data.manifest import ManifestDataset
from mowe.errors import MoWEInputError
from mowe.evaluation.controls import AudioControl, shuffled_indices


def test_shuffle_is_a_derangement_within_each_task_and_seeded():
    tasks = ["a"] * 5 + ["b"] * 3 + ["c"]
    src = shuffled_indices(tasks, seed=1)
    for i, j in enumerate(src):
        assert tasks[j] == tasks[i]
        assert (j != i) or tasks.count(tasks[i]) == 1
    assert sorted(src) == list(range(len(tasks)))  # every clip is used exactly once
    assert shuffled_indices(tasks, seed=1) == src and shuffled_indices(tasks, seed=2) != src


@pytest.fixture
def manifest(tmp_path):
    rows = []
    for i in range(6):
        sf.write(tmp_path / f"c{i}.wav", np.full(1600 * (i + 1), 0.01 * (i + 1), np.float32), 16000)
        rows.append(
            {
                "id": f"x{i}",
                "audio": f"c{i}.wav",
                "instruction": "q",
                "answer": str(i),
                "task": "even" if i % 2 == 0 else "odd",
            }
        )
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ManifestDataset(tmp_path / "m.jsonl")


def test_controls_replace_only_the_audio(manifest):
    shuffled, silent = AudioControl(manifest, "shuffled", seed=0), AudioControl(manifest, "silent")
    for i in range(len(manifest)):
        real, sh, si = manifest[i], shuffled[i], silent[i]
        for k in ("id", "task", "instruction", "answer"):
            assert sh[k] == real[k] == si[k]
        other = manifest[shuffled.source[i]]
        assert other["task"] == real["task"] and other["id"] != real["id"]
        assert torch.equal(torch.as_tensor(sh["audio"]), torch.as_tensor(other["audio"]))
        assert si["audio"].shape == real["audio"].shape and not torch.as_tensor(si["audio"]).any()
    with pytest.raises(MoWEInputError, match="audio_control must be one of"):
        AudioControl(manifest, "reversed")

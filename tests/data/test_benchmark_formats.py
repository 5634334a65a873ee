"""The benchmarks' own files (MMAU JSON, AIR-Bench foundation meta, Dynamic-SUPERB datasets) read as
examples."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from mowe.data.benchmark_formats import open_benchmark
from mowe.errors import ManifestError

BARK = ["Dog barking", "Cat meowing", "Car horn"]
AIR = ["Dog barking", "Cat meowing", "Car horn", "Rain"]


def _wav(path, freq, sr=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(0.3 * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)


def test_benchmark_files_are_read_with_their_fields(tmp_path):
    _wav(tmp_path / "mmau" / "test-mini-audios" / "x.wav", 440)
    (tmp_path / "mmau" / "mmau-test-mini.json").write_text(
        json.dumps(
            [
                {
                    "id": "m1",
                    "audio_id": "./test-mini-audios/x.wav",
                    "question": "What is heard?",
                    "choices": BARK,
                    "answer": "Car horn",
                    "task": "sound",
                    "difficulty": "easy",
                }
            ]
        )
    )
    ds = open_benchmark(tmp_path / "mmau" / "mmau-test-mini.json", "mmau")
    item = ds[0]
    assert item["id"] == "m1" and item["answer"] == "Car horn" and item["task"] == "sound"
    assert (
        item["choices"] == BARK and "(c) Car horn" in item["instruction"] and item["audio"].shape[0] == 4800
    )

    _wav(tmp_path / "air" / "Sound_AQA_clotho" / "y.wav", 220, sr=44100)
    (tmp_path / "air" / "Foundation_meta.json").write_text(
        json.dumps(
            [
                {
                    "path": "y.wav",
                    "question": "What is it?",
                    "choice_a": AIR[0],
                    "choice_b": AIR[1],
                    "choice_c": AIR[2],
                    "choice_d": AIR[3],
                    "answer_gt": "Rain",
                    "task_name": "Sound_AQA",
                    "dataset_name": "clotho",
                    "uniq_id": 7,
                }
            ]
        )
    )
    ds = open_benchmark(tmp_path / "air" / "Foundation_meta.json", "airbench")
    item = ds[0]
    assert item["id"] == "7" and item["task"] == "Sound_AQA" and item["choices"] == AIR
    assert (
        item["instruction"].endswith("D. Rain")
        and "you may only choose A or B or C or D" in item["instruction"]
    )

    import datasets

    _wav(tmp_path / "z.wav", 330)
    datasets.Dataset.from_dict(
        {
            "file": ["z1"],
            "audio": [{"bytes": (tmp_path / "z.wav").read_bytes(), "path": "z.wav"}],
            "instruction": ["Is the speaker happy, sad or angry?"],
            "label": ["sad"],
        }
    ).cast_column("audio", datasets.Audio()).save_to_disk(str(tmp_path / "EmotionRecognition_X"))
    ds = open_benchmark(tmp_path / "EmotionRecognition_X", "dynamic-superb")
    assert ds[0]["task"] == "EmotionRecognition_X" and ds[0]["answer"] == "sad" and ds.ids == ["z1"]

    (tmp_path / "broken.json").write_text(json.dumps([{"id": "b", "question": "q"}]))
    with pytest.raises(ManifestError, match=r"row 0: mmau row lacks \['audio_id', 'choices', 'answer'\]"):
        open_benchmark(tmp_path / "broken.json", "mmau")

"""``mowe data export``: a manifest folder to a Hugging Face dataset and back gives byte-identical clips and
the same examples; the dataset in between reads as the manifests do."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from _hf_helpers import write_corpus

from mowe.cli import main
from mowe.data.export import dataset_to_manifests, manifests_to_dataset
from mowe.data.manifest import ManifestDataset
from mowe.data.open_data import open_dataset
from mowe.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _same(a, b):
    assert len(a) == len(b) and a.ids == b.ids and a.lengths == b.lengths
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert torch.equal(x["audio"], y["audio"])
        assert {k: v for k, v in x.items() if k != "audio"} == {k: v for k, v in y.items() if k != "audio"}


def test_manifest_folder_to_dataset_and_back(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", n=9)
    rows = [json.loads(x) for x in corpus["manifest"].read_text().splitlines()]
    rows[0]["meta"] = {"speaker": "s1", "snr": 12.5}
    (tmp_path / "corpus" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:6]))
    (tmp_path / "corpus" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[6:]))

    r = subprocess.run(
        [sys.executable, "-m", "mowe", "data", "export", str(tmp_path / "corpus"), str(tmp_path / "hf")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "test (3 examples)" in r.stdout and "train (6 examples)" in r.stdout
    for split in ("train", "test"):
        _same(
            ManifestDataset(tmp_path / "corpus" / f"{split}.jsonl"),
            open_dataset(tmp_path / "hf", split=split),
        )

    assert (
        main(["data", "export", str(tmp_path / "hf"), str(tmp_path / "back")]) == 0
    )  # in-process: the same CLI
    for split in ("train", "test"):
        a, b = (
            ManifestDataset(tmp_path / "corpus" / f"{split}.jsonl"),
            ManifestDataset(tmp_path / "back" / f"{split}.jsonl"),
        )
        _same(a, b)
        for i in range(len(a)):  # the clips' bytes are copied, not re-encoded
            assert (
                open(a.example_info(i)["path"], "rb").read() == open(b.example_info(i)["path"], "rb").read()
            )
    back = [json.loads(x) for x in (tmp_path / "back" / "train.jsonl").read_text().splitlines()]
    assert back[0]["meta"] == {"speaker": "s1", "snr": 12.5} and "meta" not in back[1]
    with pytest.raises(ConfigError, match="already exists"):
        dataset_to_manifests(tmp_path / "hf", tmp_path / "back")


def test_one_manifest_and_renamed_columns(tmp_path):
    corpus = write_corpus(tmp_path / "c", n=4)
    dd = manifests_to_dataset(corpus["manifest"], tmp_path / "hf")
    assert list(dd) == ["train"] and dd["train"].column_names == [
        "id",
        "audio",
        "instruction",
        "answer",
        "task",
        "duration",
        "meta",
    ]
    renamed = dd["train"].rename_column("answer", "label")
    renamed.to_parquet(str(tmp_path / "t.parquet"))
    out = dataset_to_manifests(tmp_path / "t.parquet", tmp_path / "m", columns={"answer": "label"})
    _same(ManifestDataset(corpus["manifest"]), ManifestDataset(out["train"]))

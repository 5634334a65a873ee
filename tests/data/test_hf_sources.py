"""Where datasets come from: manifest or dataset, DatasetDict splits, hub ids read offline from the cache, and
the error naming the extra when `datasets` is missing."""

from __future__ import annotations

import sys

import pytest
from _hf_helpers import build_hf_dataset, cache_as_hub_dataset, save_hf_dataset, write_corpus

from mowe.data.hf_sources import is_hf_source, load_hf_source
from mowe.data.open_data import open_dataset
from mowe.errors import ManifestError, MissingExtraError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("hfsrc"))


@pytest.fixture(scope="module")
def saved(corpus):
    return save_hf_dataset(corpus, corpus["root"] / "hf")


def _same_items(a, b):
    assert len(a) == len(b) and a.lengths == b.lengths and a.ids == b.ids
    for i in range(len(a)):
        assert a[i]["audio"].equal(b[i]["audio"]) and a[i]["answer"] == b[i]["answer"]


def test_sources_and_the_missing_extra(corpus, saved, monkeypatch, tmp_path):
    assert (
        is_hf_source(saved) and is_hf_source("someone/some-dataset") and is_hf_source(tmp_path / "x.parquet")
    )
    assert not is_hf_source(corpus["manifest"]) and not is_hf_source(tmp_path / "missing.jsonl")
    with pytest.raises(ManifestError, match="neither a save_to_disk folder"):
        load_hf_source(tmp_path)
    with pytest.raises(ManifestError, match="no split 'test'"):
        save_hf_dataset(corpus, tmp_path / "dd")
        import datasets

        datasets.DatasetDict({"train": datasets.load_from_disk(str(tmp_path / "dd"))}).save_to_disk(
            str(tmp_path / "dd2")
        )
        load_hf_source(tmp_path / "dd2", split="test")
    with pytest.raises(ManifestError, match="local cache"):
        load_hf_source("mowe-test-nobody/no-such-dataset")
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if `datasets` were not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'mowe\[datasets\]'"):
        open_dataset(saved)


def test_a_hub_id_is_read_offline_from_the_cache(corpus, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    cache_as_hub_dataset(build_hf_dataset(corpus), "mowe-test/tones", tmp_path / "cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # mowe sets it for the call itself
    _same_items(open_dataset(corpus["manifest"]), open_dataset("mowe-test/tones"))
    assert datasets.config.HF_HUB_OFFLINE is False  # and puts it back


def test_datasets_is_imported_only_when_a_dataset_is_opened():
    import subprocess

    code = "import sys, mowe, mowe.data, mowe.cli; assert 'datasets' not in sys.modules, 'imported eagerly'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]

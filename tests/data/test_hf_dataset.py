"""Hugging Face datasets as training / eval data: the same examples as a manifest, from every source kind; bad
rows named by dataset, row and column; training from a dataset equals training from the manifest, bit for
bit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from _hf_helpers import build_hf_dataset, save_hf_dataset, write_corpus
from safetensors.torch import load_file

from mowe.data.audio import load_audio, load_audio_bytes
from mowe.data.hf_dataset import HFAudioDataset
from mowe.data.hf_sources import load_hf_source
from mowe.data.manifest import ManifestAudioError
from mowe.data.open_data import open_dataset
from mowe.errors import AudioLoadError, ConfigError, ManifestError
from mowe.training.run_file import load_run_file, run_training

RUN_TINY = Path(__file__).resolve().parents[2] / "examples" / "run_tiny.yaml"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("hfcorpus"))


@pytest.fixture(scope="module")
def saved(corpus):
    return save_hf_dataset(corpus, corpus["root"] / "hf")


def _same_items(a, b):
    assert len(a) == len(b) and a.lengths == b.lengths and a.tasks == b.tasks and a.ids == b.ids
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert torch.equal(x["audio"], y["audio"]), i
        assert {k: v for k, v in x.items() if k != "audio"} == {k: v for k, v in y.items() if k != "audio"}


def test_bytes_decode_exactly_as_the_file(corpus):
    for name in ("0.wav", "1.wav"):  # 44.1 kHz and 16 kHz
        path = corpus["root"] / "audio" / name
        a = load_audio(path, sample_rate=16_000)
        b = load_audio_bytes(path.read_bytes(), name="x", sample_rate=16_000)
        assert a.original_sample_rate == b.original_sample_rate and torch.equal(a.waveform, b.waveform)
    with pytest.raises(AudioLoadError, match="row 3"):
        load_audio_bytes(b"RIFF not audio", name="row 3")


def test_every_source_kind_gives_the_manifests_examples(corpus, saved, tmp_path):
    manifest = open_dataset(corpus["manifest"])
    _same_items(manifest, open_dataset(saved))
    ds = build_hf_dataset(corpus)
    ds.to_parquet(str(tmp_path / "t.parquet"))
    _same_items(manifest, open_dataset(tmp_path / "t.parquet"))
    arrow = ds.with_format("arrow")
    import pyarrow as pa

    with pa.OSFile(str(tmp_path / "t.arrow"), "wb") as sink, pa.ipc.new_stream(sink, arrow.data.schema) as w:
        w.write_table(arrow.data.table)
    _same_items(manifest, open_dataset(tmp_path / "t.arrow"))
    af = tmp_path / "af"  # the audiofolder layout: metadata.jsonl with file_name
    shutil.copytree(corpus["root"] / "audio", af / "audio")
    (af / "metadata.jsonl").write_text(
        "".join(
            json.dumps({"file_name": r["audio"], **{k: v for k, v in r.items() if k != "audio"}}) + "\n"
            for r in corpus["rows"]
        )
    )
    _same_items(manifest, open_dataset(af))


def test_durations_come_from_a_column_or_the_headers_without_decoding(corpus, tmp_path, monkeypatch):
    import mowe.data.hf_dataset as hfd

    def no_decode(*a, **k):
        raise AssertionError("decoded at construction")

    monkeypatch.setattr(hfd, "load_audio_bytes", no_decode)
    ds = build_hf_dataset(corpus)
    ds.save_to_disk(str(tmp_path / "a"))
    headers = open_dataset(tmp_path / "a")
    assert headers.lengths == open_dataset(corpus["manifest"]).lengths  # from the bytes' headers
    ds.add_column("secs", [1.0 + i for i in range(len(ds))]).save_to_disk(str(tmp_path / "b"))
    monkeypatch.setattr(hfd, "audio_info_bytes", no_decode)  # with a duration column no header is read either
    col = open_dataset(tmp_path / "b", columns={"duration": "secs"}, max_audio_seconds=5)
    assert col.lengths == [min(1.0 + i, 5.0) for i in range(len(ds))]


def test_bad_rows_name_the_dataset_row_and_column(corpus, tmp_path):
    ds = build_hf_dataset(corpus)
    answers = list(ds["answer"])
    answers[4] = None
    ds = ds.remove_columns("answer").add_column("answer", answers)
    ds.save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(
        ManifestError, match=r"dataset '.*bad', row 4, column 'answer': field 'answer' must be"
    ):
        open_dataset(tmp_path / "bad")
    with pytest.warns(UserWarning, match="row 4"):
        kept = open_dataset(tmp_path / "bad", on_bad_example="skip")
    assert len(kept) == 11 and "row 4 (column 'answer')" in kept.skip_report()

    import datasets

    cols = {k: [r[k] for r in corpus["rows"]] for k in ("id", "instruction", "answer", "task")}
    audio = [{"bytes": (corpus["root"] / r["audio"]).read_bytes(), "path": "x.wav"} for r in corpus["rows"]]
    audio[7] = {"bytes": b"RIFF\x00\x00garbage", "path": "x.wav"}
    datasets.Dataset.from_dict({**cols, "audio": audio}).cast_column("audio", datasets.Audio()).save_to_disk(
        str(tmp_path / "badaudio")
    )
    with pytest.raises(ManifestAudioError, match=r"row 7, column 'audio'"):
        open_dataset(tmp_path / "badaudio")


def _run(tmp_path, name, train, *sets):
    run = load_run_file(
        RUN_TINY,
        [
            f"data.train={train}",
            "data.on_bad_example=error",
            f"train.output_dir={tmp_path / name}",
            "train.save_every=0",
            "model.lora.dropout=0.05",
            *sets,
        ],
    )  # dropout: RNG streams too
    final = run_training(run, base_dir=str(tmp_path))
    return load_file(str(Path(final) / "model.safetensors"))


def test_training_from_a_saved_dataset_equals_training_from_the_manifest(corpus, saved, tmp_path):
    """Must-show 1: 44.1 kHz and 16 kHz clips in an Audio column, save_to_disk, train; the same from the
    JSONL."""
    a = _run(tmp_path, "manifest", corpus["manifest"])
    b = _run(tmp_path, "hf", saved)
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    c = _run(tmp_path, "hf_stream", saved, "data.streaming=true")
    assert c.keys() == a.keys()  # the streaming order differs (a buffer shuffle), so its weights do too:
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the comparison above can fail


def test_hf_dataset_is_a_torch_dataset(saved):
    ds = HFAudioDataset(load_hf_source(saved), {"task": "=t"}, tasks=["t"])
    assert ds.example_info(0)["row"] == 0 and ds[0]["audio"].dtype == torch.float32 and len(ds.texts()) == 24
    with pytest.raises(ConfigError, match="no usable example of task"):
        HFAudioDataset(load_hf_source(saved), tasks=["nope"])


def test_a_dataset_for_training_and_a_manifest_for_dev(corpus, saved, tmp_path):
    """data.columns / split apply to the Hugging Face source only: a JSONL dev set beside it needs none."""
    save_hf_dataset(corpus, tmp_path / "renamed", rename={"answer": "label"})
    _run(
        tmp_path,
        "mixed",
        tmp_path / "renamed",
        f"data.dev={corpus['manifest']}",
        "data.columns={answer: label}",
        "train.eval_every=2",
    )
    log = [json.loads(x) for x in (tmp_path / "mixed" / "log.jsonl").read_text().splitlines()]
    assert any("eval_loss" in r for r in log)
    with pytest.raises(ConfigError, match="JSONL manifest; streaming"):
        _run(tmp_path, "bad", corpus["manifest"], "data.streaming=true")

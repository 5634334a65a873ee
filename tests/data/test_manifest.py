"""ManifestDataset (index, lazy reads, the bad-data zoo, skip reports) and the samplers in mowe.data."""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mowe.data.audio import AudioTruncatedWarning
from mowe.data.manifest import (
    BadExampleWarning,
    ManifestAudioError,
    ManifestDataset,
    SkippedExample,
)
from mowe.data.samplers import StageSampler
from mowe.errors import AudioLoadError, ConfigError, ManifestError

SR = 16_000


# ----------------------------------------------------------------------------------------------- helpers
def write_wav(
    path: Path, seconds: float = 0.25, *, sr: int = SR, subtype: str = "PCM_16", seed: int = 0
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, int(seconds * sr)).astype(np.float32)
    sf.write(str(path), x, sr, subtype=subtype)
    return path


def line(
    audio: str, *, instruction: str = "Transcribe.", answer: str = "hi", task: str = "asr", **extra
) -> str:
    return json.dumps({"audio": audio, "instruction": instruction, "answer": answer, "task": task, **extra})


def write_manifest(path: Path, lines: list[str | bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A manifest in tmp/data/ with three good clips under tmp/data/audio/."""
    root = tmp_path / "data"
    for i, sec in enumerate([0.25, 0.5, 0.75]):
        write_wav(root / "audio" / f"c{i}.wav", sec, seed=i)
    return write_manifest(
        root / "train.jsonl",
        [
            line("audio/c0.wav", answer="zero", id="ex0"),
            line("audio/c1.wav", answer="one", task="gender", meta={"voice": "x"}),
            line("audio/c2.wav", answer="two"),
        ],
    )


# ----------------------------------------------------------------------------------------------- reading
def test_reads_examples_relative_to_manifest_folder(corpus: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the cwd is not the manifest's folder: paths must not resolve against it
    ds = ManifestDataset(corpus)
    assert len(ds) == 3 and ds.ids == ["ex0", "train:2", "train:3"]
    assert ds.tasks == ["asr", "gender", "asr"] and ds.task_names == ["asr", "gender"]
    assert ds.lengths == pytest.approx([0.25, 0.5, 0.75])
    ex = ds[1]
    assert set(ex) == {"id", "audio", "instruction", "answer", "task", "duration"}
    assert ex["audio"].dtype == torch.float32 and ex["audio"].shape == (8000,)
    assert (ex["answer"], ex["task"], ex["duration"]) == ("one", "gender", 0.5)
    assert ds.skipped == [] and ds.skip_report() == ""


def test_absolute_audio_path_and_resampling(tmp_path: Path):
    wav = write_wav(tmp_path / "elsewhere" / "x.wav", 0.5, sr=8000)
    ds = ManifestDataset(write_manifest(tmp_path / "m" / "m.jsonl", [line(str(wav.resolve()))]))
    assert ds[0]["audio"].shape == (8000,)  # 0.5 s at 16 kHz


def test_audio_is_read_lazily(corpus: Path, monkeypatch):
    import mowe.data.manifest

    calls = []
    real = mowe.data.manifest.load_audio
    monkeypatch.setattr(mowe.data.manifest, "load_audio", lambda *a, **k: calls.append(a) or real(*a, **k))
    ds = ManifestDataset(corpus)
    assert calls == []
    ds[2]
    assert len(calls) == 1


def test_file_deleted_after_indexing_fails_only_when_read(corpus: Path):
    ds = ManifestDataset(corpus)
    victim = corpus.parent / "audio" / "c1.wav"
    victim.unlink()
    ds[0]
    with pytest.raises(ManifestAudioError) as ei:
        ds[1]
    msg = str(ei.value)
    assert str(corpus) in msg and "line 2" in msg and "c1.wav" in msg
    assert isinstance(ei.value, AudioLoadError) and isinstance(ei.value, ManifestError)


def test_read_time_failure_in_skip_mode_returns_none_and_is_reported(tmp_path: Path):
    # A float WAV holding NaN has a valid header (indexing passes) but fails when decoded.
    good = write_wav(tmp_path / "good.wav")
    bad = tmp_path / "nan.wav"
    x = np.zeros(4000, dtype=np.float32)
    x[100] = np.nan
    sf.write(str(bad), x, SR, subtype="FLOAT")
    ds = ManifestDataset(
        write_manifest(tmp_path / "m.jsonl", [line("good.wav"), line("nan.wav")]), on_bad_example="skip"
    )
    assert len(ds) == 2
    with pytest.warns(BadExampleWarning, match="nan.wav"):
        assert ds[1] is None
    ds[1]  # recorded once, however often it is read
    assert ds.skipped == [SkippedExample(2, str(bad), ds.skipped[0].reason)]
    assert "NaN" in ds.skipped[0].reason and "line 2" in ds.skip_report() and "nan.wav" in ds.skip_report()
    assert ds[0] is not None and good.exists()


def test_truncate_and_chunk_policies(tmp_path: Path):
    write_wav(tmp_path / "long.wav", 2.0)
    m = write_manifest(tmp_path / "m.jsonl", [line("long.wav")])
    ds = ManifestDataset(m, max_audio_seconds=1.0)
    assert ds.lengths == [1.0]
    with pytest.warns(AudioTruncatedWarning):
        assert ds[0]["audio"].shape == (SR,)
    chunked = ManifestDataset(m, max_audio_seconds=1.0, length_policy="chunk")
    assert chunked.lengths == [2.0] and chunked[0]["audio"].shape == (2 * SR,)  # the processor splits it
    with pytest.raises(ConfigError, match="length_policy"):
        ManifestDataset(m, length_policy="error")


def test_task_filter(corpus: Path):
    ds = ManifestDataset(corpus, tasks=["gender"])
    assert ds.tasks == ["gender"] and ds.num_filtered == 2 and ds.skipped == []
    with pytest.raises(ConfigError, match="'nope'"):
        ManifestDataset(corpus, tasks=["asr", "nope"])


# ----------------------------------------------------------------------------------------------- bad data
def _zoo(root: Path, case: str) -> tuple[str | bytes, str | None, type[Exception]]:
    """Write what ``case`` needs under ``root``; return (bad manifest line, audio file it names, error
    type)."""
    audio = root / f"{case}.wav"
    if case == "missing_file":
        return line(audio.name), audio.name, ManifestAudioError
    if case == "empty_file":
        audio.write_bytes(b"")
    elif case == "cut_in_header":
        audio.write_bytes(write_wav(root / "src1.wav").read_bytes()[:20])
    elif case == "header_only":
        audio.write_bytes(write_wav(root / "src2.wav").read_bytes()[:44])
    elif case == "corrupt_bytes":
        audio.write_bytes(b"RIFF" + bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8)))
    elif case == "not_audio":
        audio.write_text("this is a text file, not audio\n" * 20)
    elif case == "directory":
        audio.mkdir()
    else:
        write_wav(audio)
        return {
            "malformed_json": ('{"audio": "x.wav", "instruction": ', None, ManifestError),
            "not_an_object": ('["audio", "x.wav"]', None, ManifestError),
            "missing_field": (
                json.dumps({"audio": audio.name, "instruction": "i", "task": "asr"}),
                audio.name,
                ManifestError,
            ),
            "non_string_field": (line(audio.name, answer=3), audio.name, ManifestError),  # type: ignore[arg-type]
            "empty_audio_field": (line(""), None, ManifestError),
            "non_utf8": (
                b'{"audio": "' + audio.name.encode() + b'", "instruction": "\xff\xfe"}',
                None,
                ManifestError,
            ),
            "duplicate_id": (line(audio.name, id="good0"), audio.name, ManifestError),
            "null_byte_in_path": (line("a\u0000b.wav"), None, ManifestAudioError),
        }[case]
    return line(audio.name), audio.name, ManifestAudioError


ZOO = [
    "missing_file",
    "empty_file",
    "cut_in_header",
    "header_only",
    "corrupt_bytes",
    "not_audio",
    "directory",
    "malformed_json",
    "not_an_object",
    "missing_field",
    "non_string_field",
    "empty_audio_field",
    "non_utf8",
    "duplicate_id",
    "null_byte_in_path",
]


@pytest.mark.parametrize("case", ZOO)
def test_bad_data_zoo(tmp_path: Path, case: str):
    write_wav(tmp_path / "good0.wav")
    write_wav(tmp_path / "good1.wav")
    bad_line, audio_name, err = _zoo(tmp_path, case)
    manifest = write_manifest(
        tmp_path / "m.jsonl", [line("good0.wav", id="good0"), bad_line, line("good1.wav")]
    )

    with pytest.raises(err) as ei:
        ManifestDataset(manifest)
    msg = str(ei.value)
    assert str(manifest) in msg and "line 2" in msg
    if audio_name is not None:
        assert audio_name in msg
    assert isinstance(ei.value, ManifestError)  # every manifest problem is catchable as one type

    with pytest.warns(BadExampleWarning):
        ds = ManifestDataset(manifest, on_bad_example="skip")
    assert ds.ids == ["good0", "m:3"]
    assert [s.line for s in ds.skipped] == [2]
    report = ds.skip_report()
    assert "1 example(s) skipped" in report and "line 2" in report and str(manifest) in report
    if audio_name is not None:
        assert audio_name in report


def test_blank_lines_are_not_examples(tmp_path: Path):
    write_wav(tmp_path / "a.wav")
    ds = ManifestDataset(write_manifest(tmp_path / "m.jsonl", ["", line("a.wav"), "   ", ""]))
    assert ds.ids == ["m:2"] and ds.skipped == []


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_manifest(tmp_path: Path, content: bytes):
    m = tmp_path / "empty.jsonl"
    m.write_bytes(content)
    for mode in ("error", "skip"):
        with pytest.raises(ManifestError, match="no usable examples"):
            ManifestDataset(m, on_bad_example=mode)


def test_all_lines_bad_in_skip_mode_is_an_error_with_the_report(tmp_path: Path):
    m = write_manifest(tmp_path / "m.jsonl", [line("gone.wav"), "{"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadExampleWarning)
        with pytest.raises(ManifestError) as ei:
            ManifestDataset(m, on_bad_example="skip")
    assert "line 1" in str(ei.value) and "gone.wav" in str(ei.value) and "line 2" in str(ei.value)


def test_missing_manifest(tmp_path: Path):
    with pytest.raises(ManifestError, match="nope.jsonl"):
        ManifestDataset(tmp_path / "nope.jsonl")


# ----------------------------------------------------------------------------------------------- samplers
# The one sampler (mowe.data.samplers.StageSampler) on its own; the trainer's use of it: tests/training/.
def _sampler(n: int, **kw) -> StageSampler:
    base = dict(num_examples=n, task_list=None, tasks=None, seed=1, stage_index=0, batch_size=8)
    return StageSampler(**{**base, **kw})


def test_task_weights_set_the_task_proportions():
    tasks = ["a"] * 300 + ["b"] * 30 + ["c"] * 3
    s = _sampler(len(tasks), task_list=tasks, tasks={"a": 1.0, "b": 1.0, "c": 2.0})
    idx = torch.cat([s.epoch_order(e) for e in range(60)]).tolist()
    freq = Counter(tasks[i] for i in idx)
    for t, p in {"a": 0.25, "b": 0.25, "c": 0.5}.items():
        assert abs(freq[t] / len(idx) - p) < 0.02, freq
    assert len({i for i in idx if tasks[i] == "c"}) == 3  # every example of a task gets drawn
    assert (
        s.epoch_order(0).tolist()
        == _sampler(len(tasks), task_list=tasks, tasks={"a": 1.0, "b": 1.0, "c": 2.0}).epoch_order(0).tolist()
    )  # a function of (seed, stage, epoch)
    assert s.epoch_order(1).tolist() != s.epoch_order(0).tolist()


def test_task_weights_on_a_manifest_and_errors(corpus: Path):
    ds = ManifestDataset(corpus)
    s = _sampler(len(ds), task_list=ds.task_list, tasks={"gender": 1.0}, batch_size=1)  # asr is never drawn
    assert set(s.epoch_order(0).tolist()) == {1}
    with pytest.raises(ConfigError, match="'music'"):
        _sampler(len(ds), task_list=ds.task_list, tasks={"asr": 1, "music": 1}, batch_size=1)
    with pytest.raises(ConfigError, match="fewer than one global batch"):
        _sampler(len(ds), batch_size=8)


def _padding(lengths: np.ndarray, order: list[int], bs: int) -> float:
    """Fraction of a padded batch that is padding, over all batches of ``order``."""
    total = pad = 0.0
    for i in range(0, len(order), bs):
        b = lengths[order[i : i + bs]]
        total += b.max() * len(b)
        pad += (b.max() - b).sum()
    return pad / total


def test_length_grouping_reduces_padding():
    lengths = np.random.default_rng(0).uniform(0.5, 30.0, 1000)
    bs = 8
    s = _sampler(1000, seed=3, lengths=lengths.tolist(), group_mult=16)
    order = s.epoch_order(0).tolist()
    assert sorted(order) == list(range(1000))
    random_order = np.random.default_rng(1).permutation(1000).tolist()
    grouped, rand = _padding(lengths, order, bs), _padding(lengths, random_order, bs)
    assert grouped < 0.25 * rand, (grouped, rand)
    assert int(np.argmax(lengths)) in order[:bs]  # the longest batch first: OOM shows at step 1
    assert s.epoch_order(0).tolist() == order
    assert s.epoch_order(1).tolist() != order and sorted(s.epoch_order(1).tolist()) == list(range(1000))


def test_length_grouped_batches_feed_a_dataloader(corpus: Path):
    ds = ManifestDataset(corpus)
    s = _sampler(len(ds), batch_size=2, lengths=ds.lengths, seed=0)
    loader = torch.utils.data.DataLoader(
        ds, batch_sampler=s.process_batches(0), collate_fn=lambda xs: [x["id"] for x in xs]
    )
    ids = [i for b in loader for i in b]
    assert len(ids) == s.batches_per_epoch * 2 and len(set(ids)) == len(ids) and set(ids) <= set(ds.ids)


def test_skipped_examples_are_dropped_by_the_collator(tmp_path: Path):
    from mowe.data.collator import MoWECollator
    from mowe.data.processor import MoWEProcessor
    from mowe.data.tokenizer import train_bpe_tokenizer

    proc = MoWEProcessor(train_bpe_tokenizer(["transcribe hi"], vocab_size=300))
    write_wav(tmp_path / "a.wav")
    write_wav(tmp_path / "b.wav")
    ds = ManifestDataset(
        write_manifest(tmp_path / "m.jsonl", [line("a.wav"), line("b.wav")]), on_bad_example="skip"
    )
    os.remove(tmp_path / "b.wav")
    with pytest.warns(BadExampleWarning):
        batch = MoWECollator(proc)([ds[0], ds[1]])
    assert batch["id"] == ["m:1"] and batch["num_dropped"] == 1 and batch["input_ids"].shape[0] == 1
    assert "b.wav" in ds.skip_report()
    assert MoWECollator(proc)([ds[1]]) is None  # nothing left: the trainer skips the step
    assert len(ds.skipped) == 1  # recorded once, however often it is read

"""StreamSampler: a deterministic order over a stream, resumable at any micro-batch without decoding what it
skips, length-grouped within windows, the same global batches for any process count."""

from __future__ import annotations

import pytest
from _hf_helpers import save_hf_dataset, write_corpus

from mowe.data.open_data import open_dataset
from mowe.data.stream_sampler import StreamSampler
from mowe.errors import ConfigError


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    corpus = write_corpus(tmp_path_factory.mktemp("stream"), n=14)
    return open_dataset(save_hf_dataset(corpus, corpus["root"] / "hf"), streaming=True)


class Counting:
    """The stream with a count of decoded rows."""

    def __init__(self, ds):
        self.ds, self.decoded, self.name = ds, [], ds.name

    def rows(self):
        return self.ds.rows()

    def duration(self, r):
        return self.ds.duration(r)

    def decode(self, r):
        self.decoded.append(r.row)
        return self.ds.decode(r)


def _ids(it, n):
    out = []
    for _ in range(n):
        epoch, examples = next(it)
        out.append((epoch, [e["id"] for e in examples]))
    return out


def test_resume_at_any_micro_batch_reads_on_without_decoding_the_skipped(stream):
    kw = dict(seed=3, stage_index=1, batch_size=2, group_mult=2, group_by_length=True)
    full = _ids(StreamSampler(Counting(stream), **kw).micro_batches(0), 12)
    # 14 rows, global batch 2, windows of 4 rows: 7 batches per epoch; every row once per epoch
    assert sorted(i for e, b in full[:7] for i in b) == sorted(f"ex{i}" for i in range(14))
    assert [e for e, _ in full] == [0] * 7 + [1] * 5
    assert full[:7] != full[7:12] + full[:2]  # each epoch is ordered afresh
    for start in (1, 5, 9):
        c = Counting(stream)
        assert _ids(StreamSampler(c, **kw).micro_batches(start), 3) == full[start : start + 3]
        assert len(c.decoded) == 6  # only the 3 batches yielded were decoded
    s = StreamSampler(stream, **kw)
    _ids(s.micro_batches(0), 8)
    assert s.position(9) == (1, 2)


def test_windows_group_by_length_and_processes_split_the_global_batch(stream):
    one = StreamSampler(stream, seed=0, stage_index=0, batch_size=4, group_mult=3, group_by_length=True)
    for batch in list(one.global_batches(0)):
        secs = [stream.duration(r) for r in batch]
        assert secs == sorted(secs, reverse=True)
    two = [
        StreamSampler(
            stream,
            seed=0,
            stage_index=0,
            batch_size=2,
            num_processes=2,
            process_index=r,
            group_mult=3,
            group_by_length=True,
        )
        for r in (0, 1)
    ]
    a, b = (_ids(t.micro_batches(0), 3) for t in two)
    assert [x + y for (_, x), (_, y) in zip(a, b)] == [b for _, b in _ids(one.micro_batches(0), 3)]


def test_a_stream_shorter_than_a_global_batch_is_refused(stream):
    with pytest.raises(ConfigError, match="fewer usable examples than one global batch of 16"):
        next(StreamSampler(stream, seed=0, stage_index=0, batch_size=16).micro_batches(0))


def test_every_streaming_source_gives_the_same_rows(tmp_path):
    import json
    import shutil

    from _hf_helpers import build_hf_dataset

    corpus = write_corpus(tmp_path / "c", n=6)
    build_hf_dataset(corpus).to_parquet(str(tmp_path / "t.parquet"))
    shutil.copytree(corpus["root"] / "audio", tmp_path / "af" / "audio")
    (tmp_path / "af" / "metadata.jsonl").write_text(
        "".join(
            json.dumps({"file_name": r["audio"], **{k: v for k, v in r.items() if k != "audio"}}) + "\n"
            for r in corpus["rows"]
        )
    )
    want = [(r["id"], r["answer"]) for r in corpus["rows"]]
    for src in (save_hf_dataset(corpus, tmp_path / "hf"), tmp_path / "t.parquet", tmp_path / "af"):
        stream = open_dataset(src, streaming=True)
        rows = list(stream.rows())
        assert [(r.id, r.answer) for r in rows] == want, src
        assert stream.decode(rows[1])["audio"].shape == open_dataset(corpus["manifest"])[1]["audio"].shape

"""The demo's shared-clip question corpus: every speech clip is asked what / who / how, voices are held
out."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from mowe.demo import corpus as C
from mowe.demo.questions import OTHER_TASKS, PITCH_BINS, SPEECH_TASKS, build_question_corpus


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("qcorpus")
    info = build_question_corpus(
        out, speech_clips={"train": 12, "test": 6}, other={"train": 3, "test": 2}, seed=0, progress=False
    )
    rows = {s: [json.loads(x) for x in (out / f"{s}.jsonl").read_text().splitlines()] for s in C.SPLITS}
    return out, info, rows


def test_each_speech_clip_gets_one_question_per_speech_task(built):
    _, info, rows = built
    for split, n_clips, n_other in (("train", 12, 3), ("test", 6, 2)):
        by_clip: dict[str, list[str]] = {}
        for r in rows[split]:
            by_clip.setdefault(r["audio"], []).append(r["task"])
        speech = [tasks for tasks in by_clip.values() if len(tasks) > 1]
        assert len(speech) == n_clips and all(sorted(t) == sorted(SPEECH_TASKS) for t in speech)
        assert info.counts[split] == {
            **{t: n_clips for t in SPEECH_TASKS},
            **{t: n_other for t in OTHER_TASKS},
        }
    assert rows["dev"] == []


def test_answers_match_the_generation_parameters(built):
    _, _, rows = built
    for r in rows["train"] + rows["test"]:
        m = r["meta"]
        if r["task"] == "gender":
            assert r["answer"] == m["gender"] and m["voice"].split("+")[1][0] == m["gender"][0]
        elif r["task"] == "accent":
            assert m["voice"].split("+")[0] in C.ACCENTS[r["answer"]]
        elif r["task"] == "speaking_rate":
            lo, hi = C.RATE_BINS[r["answer"]]
            assert lo <= m["rate"] <= hi
        elif r["task"] == "pitch":
            lo, hi = PITCH_BINS[r["answer"]]
            assert lo <= m["pitch"] <= hi
        elif r["task"] == "asr":
            assert r["answer"] == m["text"]


def test_test_voices_are_held_out_and_ids_unique(built):
    _, _, rows = built
    held = {v for vs in C.HELD_OUT_VARIANTS.values() for v in vs}
    for split in ("train", "test"):
        variants = {r["meta"]["voice"].split("+")[1] for r in rows[split] if "voice" in r["meta"]}
        assert (variants <= held) == (split == "test") and (not variants & held) == (split == "train")
    ids = [r["id"] for s in rows.values() for r in s]
    assert len(ids) == len(set(ids))


def test_audio_is_real_16k_speech_and_the_build_is_deterministic(built, tmp_path):
    out, _, rows = built
    r = next(r for r in rows["test"] if r["task"] == "asr")
    x, sr = sf.read(out / r["audio"], dtype="float32")
    assert sr == 16_000 and abs(len(x) / sr - r["meta"]["duration"]) < 1e-3 and np.abs(x).max() > 0.01
    again = build_question_corpus(
        tmp_path / "again",
        speech_clips={"train": 12, "test": 6},
        other={"train": 3, "test": 2},
        seed=0,
        progress=False,
    )
    assert (tmp_path / "again" / "train.jsonl").read_bytes() == (out / "train.jsonl").read_bytes()
    assert again.counts == built[1].counts


def test_pitch_labels_change_the_voice_pitch(built):
    """The pitch question is answerable: within one voice, a higher -p bin gives a higher F0
    (autocorrelation)."""

    def f0(x):
        fr, hop, out = 640, 160, []
        for i in range(0, len(x) - fr, hop):
            w = x[i : i + fr] - x[i : i + fr].mean()
            if np.sqrt(np.mean(w**2)) < 0.02:
                continue
            ac = np.correlate(w, w, "full")[fr - 1 :]
            lag = 40 + int(np.argmax(ac[40:267]))
            if ac[lag] > 0.5 * ac[0]:
                out.append(16_000 / lag)
        return float(np.median(out))

    voice = "en-us+m4"
    lo, hi = (
        f0(C._speak("the quick brown fox", voice, 160, p))
        for p in (PITCH_BINS["low"][0], PITCH_BINS["high"][1])
    )
    assert hi > 1.3 * lo


def test_bad_counts_are_refused(tmp_path):
    with pytest.raises(ValueError, match="speech_clips"):
        build_question_corpus(tmp_path, speech_clips={"val": 3}, other={}, progress=False)
    with pytest.raises(ValueError, match="other"):
        build_question_corpus(tmp_path, speech_clips={}, other={"train": -1}, progress=False)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        build_question_corpus(tmp_path / "x", speech_clips={"train": 1}, other={}, progress=False)
    assert (tmp_path / "x" / "file.txt").read_text() == "keep me"

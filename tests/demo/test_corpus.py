"""Tests for the synthetic multi-task corpus (mowe.demo.corpus).

The corpus needs espeak-ng; if it is missing these tests FAIL with the install message (no skip),
because the corpus is the only data this project can train on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mowe.demo import corpus as C

SR = C.SAMPLE_RATE
FIELDS = ("id", "audio", "instruction", "answer", "task")


def _read_manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    info = C.build_corpus(out, size=40, seed=0, progress=False)
    rows = {s: _read_manifest(out / f"{s}.jsonl") for s in ("train", "dev", "test")}
    return out, info, rows


def _all_rows(rows):
    return [r for split in rows.values() for r in split]


# ------------------------------------------------------------------------------- structure & audio


def test_counts_and_info_file(built):
    out, info, rows = built
    assert set(info.tasks) == set(C.TASKS)
    for split in ("train", "dev", "test"):
        per_task = {t: sum(r["task"] == t for r in rows[split]) for t in C.TASKS}
        assert per_task == info.counts[split]
        assert all(n >= 2 for n in per_task.values())
    assert sum(info.counts["train"].values()) == 40
    saved = C.CorpusInfo.load(out)
    assert saved == info
    assert "+m4" in saved.held_out and "+f4" in saved.held_out


def test_manifest_fields_and_relative_paths(built):
    out, _, rows = built
    ids = set()
    for split, lines in rows.items():
        for r in lines:
            for k in FIELDS:
                assert isinstance(r[k], str) and r[k], (split, k, r)
            assert isinstance(r["meta"], dict)
            assert r["task"] in C.TASKS
            assert not Path(r["audio"]).is_absolute()
            assert (out / r["audio"]).is_file()
            assert r["id"] not in ids
            ids.add(r["id"])


def test_audio_is_real_16k_mono_and_duration_matches_meta(built):
    out, _, rows = built
    for r in _all_rows(rows):
        info = sf.info(str(out / r["audio"]))
        assert info.samplerate == SR and info.channels == 1 and info.subtype == "PCM_16"
        dur = info.frames / info.samplerate
        assert abs(dur - r["meta"]["duration"]) <= 0.010
        assert 1.0 <= dur <= 6.0, (r["id"], dur)
        x, _ = sf.read(str(out / r["audio"]), dtype="float32")
        rms = float(np.sqrt(np.mean(x**2)))
        assert 1e-3 < rms < 0.5 and np.max(np.abs(x)) <= 1.0


def test_loudness_varies(built):
    _, _, rows = built
    levels = [r["meta"]["level_db"] for r in _all_rows(rows)]
    assert max(levels) - min(levels) > 6.0


def test_instructions_have_paraphrases(built):
    _, _, rows = built
    for task in C.TASKS:
        assert len(set(C.INSTRUCTIONS[task])) >= 5
    for qs in C._CO_QUESTIONS.values():
        assert len(set(qs)) >= 5
    used = {r["instruction"] for r in rows["train"]}
    assert len(used) > 10  # picked at random, not always the first
    for r in _all_rows(rows):
        assert r["instruction"] in C.INSTRUCTIONS[r["task"]]


# ------------------------------------------------------------------------------- held-out voices


def test_dev_and_test_voices_never_in_train(built):
    _, info, rows = built
    assert not set(info.train_voices) & set(info.test_voices)
    train_used = {r["meta"]["voice"] for r in rows["train"] if "voice" in r["meta"]}
    assert train_used and train_used <= set(info.train_voices)
    for split in ("dev", "test"):
        used = {r["meta"]["voice"] for r in rows[split] if "voice" in r["meta"]}
        assert used and used <= set(info.test_voices)
        assert not used & train_used
        variants = {v.split("+")[1] for v in used}
        assert variants <= {v for vs in C.HELD_OUT_VARIANTS.values() for v in vs}


# ------------------------------------------------------------------------------- labels vs generation


def test_labels_match_generation_parameters(built):
    _, _, rows = built
    accent_of = {b: a for a, bases in C.ACCENTS.items() for b in bases}
    for r in _all_rows(rows):
        m, task, ans = r["meta"], r["task"], r["answer"]
        if "voice" in m:
            base, variant = m["voice"].split("+")
            assert m["gender"] == ("male" if variant.startswith("m") else "female")
            assert m["accent"] == accent_of[base]
            assert C.PITCH_RANGE[0] <= m["pitch"] <= C.PITCH_RANGE[1]
            assert C.RATE_RANGE[0] <= m["rate"] <= C.RATE_RANGE[1]
        if task == "asr":
            assert ans == m["text"] and ans == ans.lower() and 3 <= len(ans.split()) <= 6
        elif task == "gender":
            assert ans == m["gender"]
        elif task == "accent":
            assert ans == m["accent"] and ans in C.ACCENTS
        elif task == "speaking_rate":
            lo, hi = C.RATE_BINS[ans]
            assert lo <= m["rate"] <= hi
        elif task == "sound_event":
            assert ans == m["event"] and ans in C.SOUND_EVENTS
        elif task == "chord":
            assert ans == m["quality"]
            assert sorted((n - m["root"]) % 12 for n in m["notes"]) == sorted(C.CHORD_QUALITIES[ans])
        elif task == "tempo":
            lo, hi = C.TEMPO_BINS[ans]
            assert lo <= m["bpm"] <= hi
        elif task == "co_reasoning":
            assert ans == f"{m['sound']}, {m['target']}" and m["sound"] in C.SOUND_EVENTS
            words = m["text"].split()
            if m["question"] == "first_digit":
                assert words[0] == m["target"]
            elif m["question"] == "last_digit":
                assert words[-1] == m["target"]
            else:
                pool = C._WORDS[m["question"]]
                assert [w for w in words if w in pool] == [m["target"]]


def test_labels_are_balanced(built):
    _, _, rows = built
    for task in ("gender", "chord", "tempo", "speaking_rate"):
        answers = [r["answer"] for r in rows["train"] if r["task"] == task]
        assert len(set(answers)) >= min(len(answers), len(C._labels(task)))


# ------------------------------------------------------------------------------- the audio carries the label


def _frames(x, n, hop):
    k = 1 + max(0, (len(x) - n) // hop)
    return np.stack([x[i * hop : i * hop + n] for i in range(k)])


def _stft_track(x):
    """Dominant frequency and spectral flatness of the loud 64 ms frames."""
    fr = _frames(x, 1024, 256) * np.hanning(1024)
    energy = np.sum(fr**2, axis=1)
    fr = fr[energy > 0.1 * energy.max()]
    mag = np.abs(np.fft.rfft(fr, axis=1)) + 1e-12
    freqs = np.fft.rfftfreq(1024, 1 / SR)
    dom = freqs[np.argmax(mag[:, 1:], axis=1) + 1]
    power = mag**2
    flat = np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)
    return dom, flat


def _envelope(x, ms):
    n = int(SR * ms / 1000)
    return np.sqrt(np.mean(_frames(x, n, n) ** 2, axis=1))


def _onsets(x, threshold, refractory_ms):
    """Onset times in ms: 1 ms envelope crossing ``threshold * max``, at most one per refractory window."""
    env = _envelope(x, 1)
    up = np.flatnonzero((env[1:] > threshold * env.max()) & (env[:-1] <= threshold * env.max())) + 1
    kept: list[int] = []
    for t in up:
        if not kept or t - kept[-1] >= refractory_ms:
            kept.append(int(t))
    return np.array(kept)


def classify_sound_event(x: np.ndarray) -> str:
    """A meta-free classifier from simple features: if it works, the classes are distinguishable."""
    env = _envelope(x, 2)
    if np.mean(env > 0.1 * env.max()) < 0.2:
        return "clicks"  # energy in short, sparse bursts
    dom, flat = _stft_track(x)
    if np.median(flat) > 0.2:
        return "noise"
    if np.percentile(dom, 95) - np.percentile(dom, 5) < max(50.0, 0.05 * np.median(dom)):  # ~3 FFT bins
        env5 = _active(_envelope(x, 5))
        return "tremolo" if np.std(env5) / np.mean(env5) > 0.2 else "tone"
    # a chirp is monotonic: it never turns back by much; a siren (≥ 1 FM period) turns back fully
    track = np.convolve(np.log(dom), np.ones(5) / 5, mode="valid")
    back_down = np.max(np.maximum.accumulate(track) - track)
    back_up = np.max(track - np.minimum.accumulate(track))
    return "chirp" if min(back_down, back_up) < 0.25 * np.ptp(track) else "siren"


def _active(env, rel=0.2):
    """The envelope between its first and last frame above ``rel * max`` (drops the padding, where
    only the added noise is, at least 25 dB down)."""
    idx = np.flatnonzero(env > rel * env.max())
    return env[idx[0] : idx[-1] + 1]


def _check_against_meta(x, kind, p):
    if kind == "tone":
        spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=8 * len(x)))
        peak = np.fft.rfftfreq(8 * len(x), 1 / SR)[np.argmax(spec)]
        assert abs(peak - p["freq"]) < max(2.0, 0.005 * p["freq"])
    elif kind == "chirp":
        dom, _ = _stft_track(x)
        assert abs(np.median(dom[:2]) / p["f_start"] - 1) < 0.25
        assert abs(np.median(dom[-2:]) / p["f_end"] - 1) < 0.25
        assert np.all(np.sign(np.diff(dom[:: max(1, len(dom) // 4)])) == np.sign(p["f_end"] - p["f_start"]))
    elif kind == "siren":
        dom, _ = _stft_track(x)
        assert np.percentile(dom, 2) > 0.9 * p["f_low"] and np.percentile(dom, 98) < 1.1 * p["f_high"]
        assert np.ptp(dom) > 0.5 * (p["f_high"] - p["f_low"])
    elif kind == "clicks":
        onsets = _onsets(x, 0.3, refractory_ms=30)
        assert abs(np.median(np.diff(onsets)) / 1000 * p["rate"] - 1) < 0.1
    elif kind == "tremolo":
        env = _active(_envelope(x, 5))
        spec = np.abs(np.fft.rfft(env - env.mean(), n=16 * len(env)))
        f = np.fft.rfftfreq(16 * len(env), 0.005)
        band = (f > 2) & (f < 20)
        assert abs(f[band][np.argmax(spec[band])] - p["am_rate"]) < max(0.6, 0.1 * p["am_rate"])


def test_sound_events_distinguishable_synth():
    for seed in range(6):
        for kind in C.SOUND_EVENTS:
            rng = np.random.default_rng(seed)
            x, params = C.synthesize_sound_event(kind, rng)
            assert 1.0 <= len(x) / SR <= 4.0 and np.max(np.abs(x)) == pytest.approx(1.0)
            x = x * 0.1 + rng.standard_normal(len(x)) * 0.1 * np.sqrt(np.mean(x**2)) * 10 ** (-25 / 20)
            assert classify_sound_event(x) == kind, (seed, kind, params)
            _check_against_meta(x, kind, params)


def test_sound_events_in_corpus_match_their_label(built):
    out, _, rows = built
    clips = [r for r in _all_rows(rows) if r["task"] == "sound_event"]
    assert len({r["answer"] for r in clips}) >= 4
    for r in clips:
        x, _ = sf.read(str(out / r["audio"]), dtype="float64")
        assert classify_sound_event(x) == r["answer"], r["id"]
        _check_against_meta(x, r["answer"], r["meta"])


def test_tempo_clicks_match_bpm(built):
    out, _, rows = built
    for r in _all_rows(rows):
        if r["task"] != "tempo":
            continue
        x, _ = sf.read(str(out / r["audio"]), dtype="float64")
        onsets = _onsets(x, 0.25, refractory_ms=150)
        assert len(onsets) == r["meta"]["beats"], r["id"]
        assert abs(60000 / np.median(np.diff(onsets)) - r["meta"]["bpm"]) < 2


def test_chord_notes_present_in_spectrum(built):
    out, _, rows = built
    for r in _all_rows(rows):
        if r["task"] != "chord":
            continue
        x, _ = sf.read(str(out / r["audio"]), dtype="float64")
        spec = np.abs(np.fft.rfft(x, n=4 * len(x)))
        f = np.fft.rfftfreq(4 * len(x), 1 / SR)
        floor = np.median(spec[(f > 50) & (f < 4000)])
        for note in r["meta"]["notes"]:
            f0 = 440.0 * 2 ** ((note - 69) / 12)
            near = (f > f0 * 0.99) & (f < f0 * 1.01)
            assert spec[near].max() > 10 * floor, (r["id"], note)


def test_speech_is_speech_and_gender_pitch(built):
    """espeak really spoke: male variants have a lower voice pitch than female ones."""
    out, _, rows = built
    f0 = {"male": [], "female": []}
    for r in _all_rows(rows):
        if r["task"] not in ("gender", "asr", "accent", "speaking_rate"):
            continue
        x, _ = sf.read(str(out / r["audio"]), dtype="float64")
        est = []
        for fr in _frames(x, 640, 320):
            if np.sqrt(np.mean(fr**2)) < 0.5 * np.sqrt(np.mean(x**2)):
                continue
            fr = fr - fr.mean()
            ac = np.correlate(fr, fr, "full")[639:]
            k = SR // 400 + int(np.argmax(ac[SR // 400 : SR // 60]))
            if ac[k] > 0.3 * ac[0]:
                est.append(SR / k)
        assert est, r["id"]
        f0[r["meta"]["gender"]].append(np.median(est))
    assert f0["male"] and f0["female"]
    assert np.median(f0["male"]) < 140 < np.median(f0["female"])


# ------------------------------------------------------------------------------- determinism, CLI, errors


def test_same_seed_identical_manifests(tmp_path):
    a = C.build_corpus(tmp_path / "a", size=16, seed=3, tasks=["asr", "chord"], progress=False)
    b = C.build_corpus(tmp_path / "b", size=16, seed=3, tasks="chord,asr", progress=False)
    for split in ("train", "dev", "test"):
        ma, mb = a.manifest(split).read_bytes(), b.manifest(split).read_bytes()
        assert ma == mb
        for r in _read_manifest(a.manifest(split)):
            assert (tmp_path / "a" / r["audio"]).read_bytes() == (tmp_path / "b" / r["audio"]).read_bytes()
    c = C.build_corpus(tmp_path / "c", size=16, seed=4, tasks=["asr", "chord"], progress=False)
    assert c.manifest("train").read_bytes() != a.manifest("train").read_bytes()
    # rebuilding over an existing corpus replaces it
    d = C.build_corpus(tmp_path / "a", size=8, seed=3, tasks=["chord"], progress=False)
    assert sum(d.counts["train"].values()) == 8
    assert len(list((tmp_path / "a" / "audio" / "train").iterdir())) == 8


def test_cli_build(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="mowe")
    C.add_corpus_cli(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli"
    args = parser.parse_args(
        [
            "corpus",
            "build",
            "--out",
            str(out),
            "--size",
            "6",
            "--seed",
            "1",
            "--tasks",
            "sound_event,tempo",
            "--no-progress",
        ]
    )
    assert args.func(args) == 0
    rows = _read_manifest(out / "train.jsonl")
    assert len(rows) == 6 and {r["task"] for r in rows} == {"sound_event", "tempo"}
    assert "train: 6 examples" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["corpus"])
    bad = parser.parse_args(["corpus", "build", "--out", str(out), "--size", "6", "--tasks", "karaoke"])
    assert bad.func(bad) == 2
    assert "unknown" in capsys.readouterr().err


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown"):
        C.build_corpus(tmp_path / "x", size=10, tasks=["asr", "karaoke"], progress=False)
    with pytest.raises(ValueError, match="size"):
        C.build_corpus(tmp_path / "x", size=2, progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        C.build_corpus(tmp_path / "busy", size=4, tasks=["chord"], progress=False)


def test_missing_espeak_gives_install_message(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        C.available_voices()
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        C.build_corpus(tmp_path / "c", size=8, tasks=["asr"], progress=False)


def test_available_voices_has_corpus_accents():
    voices = C.available_voices()
    for bases in C.ACCENTS.values():
        assert set(bases) <= set(voices)

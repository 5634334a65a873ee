"""``make demo``: MoWE's central claim, reproduced locally on a CPU in minutes.

1. Build a local multi-task corpus (espeak-ng speech, synthesized sounds and music; held-out test voices).
2. Train a Whisper-shaped strong encoder on recognition only (a character CTC head), then freeze it: the
   stand-in for pretrained Whisper-large, whose weights cannot be downloaded here.
3. Train a base-only model (strong encoder + connector + LLM) and a MoWE model (the same + a pool of weak
   encoders with routers) on the same data, steps and seed.
4. Evaluate both on the test split; print the per-task table; write ``results.md``, training curves and a
   heatmap of which weak encoder each task selects.

``python -m mowe.demo --out demo_out`` (``--quick`` for a 1-minute smoke run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

__all__ = ["main", "prepare", "pretrain_strong_encoder", "train_and_evaluate"]


def _log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pretrain_strong_encoder(encoder: nn.Module, dataset, *, steps: int, batch_size: int = 16, lr: float = 2e-3,
                            seed: int = 0, progress: bool = True) -> list[float]:
    """Train ``encoder`` for speech recognition with a character CTC head; returns the loss curve.

    This is what makes the strong encoder *strong for one kind of audio*: its features are shaped for
    recognising words, as Whisper's are, and it is then frozen.
    """
    from tqdm.auto import tqdm

    from mowe.data.audio import pad_batch

    chars = sorted({c for i in range(len(dataset)) for c in dataset.example_info(i)["answer"].lower()} | {" "})
    vocab = {c: i + 1 for i, c in enumerate(chars)}  # 0 is the CTC blank
    head = nn.Linear(int(encoder.out_dim), len(vocab) + 1)
    params = [p for p in encoder.parameters()] + list(head.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr)
    from transformers import get_cosine_schedule_with_warmup

    sched = get_cosine_schedule_with_warmup(opt, max(1, steps // 10), steps)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    g = torch.Generator().manual_seed(seed)
    encoder.train()

    def collate(examples):
        wav, lens = pad_batch([e["audio"] for e in examples])
        targets = [torch.tensor([vocab[c] for c in e["answer"].lower() if c in vocab]) for e in examples]
        return wav, lens, targets

    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate,
                        sampler=torch.utils.data.RandomSampler(dataset, replacement=True,
                                                               num_samples=steps * batch_size, generator=g))
    losses = []
    for wav, lens, targets in tqdm(loader, total=steps, desc="strong encoder (ASR, CTC)", disable=not progress):
        out = encoder(wav, lens)
        logp = head(out.features).log_softmax(-1).transpose(0, 1)  # (t, b, c)
        loss = ctc(logp, torch.cat(targets), out.lengths, torch.tensor([len(t) for t in targets]))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    for p in encoder.parameters():
        p.requires_grad_(False)
    encoder.eval()
    return losses


@dataclasses.dataclass
class Prepared:
    """What every system in a comparison shares: data, tokenizer, processor and the frozen strong encoder."""

    train: object
    test: object
    tokenizer: object
    processor: object
    strong: nn.Module
    strong_curve: list


def prepare(out_dir: str, *, size: int, strong_steps: int, batch_size: int, seed: int,
            progress: bool = True) -> Prepared:
    """Build the corpus, a BPE tokenizer and processor, and the ASR-pretrained, frozen strong encoder."""
    from mowe.demo.corpus import build_corpus
    from mowe.data.manifest import ManifestDataset
    from mowe.presets import base_only
    from mowe.data.processor import MoWEProcessor
    from mowe.data.tokenizer import train_bpe_tokenizer

    os.makedirs(out_dir, exist_ok=True)
    corpus_dir = os.path.join(out_dir, "corpus")
    _log(f"building the corpus ({size} training examples) in {corpus_dir}")
    info = build_corpus(corpus_dir, size=size, seed=seed, progress=progress)
    train = ManifestDataset(info.manifest("train"))
    test = ManifestDataset(info.manifest("test"))
    _log(f"corpus: {len(train)} train / {len(test)} test examples, tasks {sorted(set(train.tasks))}")
    texts = []
    for i in range(len(train)):
        e = train.example_info(i)
        texts += [e["instruction"], e["answer"]]
    tok = train_bpe_tokenizer(texts, vocab_size=384, save_dir=os.path.join(out_dir, "tokenizer"))
    processor = MoWEProcessor(tok, max_audio_seconds=8.0)

    # The strong encoder, trained for recognition only, then frozen.
    torch.manual_seed(seed)
    strong = base_only(tiny=True, audio_token_id=processor.audio_token_id, vocab_size=len(tok)).build().strong_encoder
    asr = ManifestDataset(info.manifest("train"), tasks=["asr"])
    _log(f"pre-training the strong encoder on {len(asr)} recognition examples for {strong_steps} steps")
    curve = pretrain_strong_encoder(strong, asr, steps=strong_steps, batch_size=batch_size, seed=seed,
                                    progress=progress)
    _log(f"strong encoder CTC loss {curve[0]:.2f} -> {sum(curve[-10:]) / len(curve[-10:]):.2f}")
    return Prepared(train, test, tok, processor, strong, curve)


def train_and_evaluate(name: str, config, *, strong: nn.Module, train, test, processor, steps: int, batch_size: int,
                       lr: float, seed: int, out_dir: str, progress: bool = True, llm_train: str = "full"):
    """Build ``config`` around the given frozen ``strong`` encoder, train one stage, evaluate on ``test``.

    Every system gets the same data order (seed), steps, batch size and learning rate. The parts that train
    are the connector, the routers (if any) and the LLM (fully, since the demo's LLM has random weights).

    Returns:
        (EvalResult, path of the training log).
    """
    import copy

    from mowe.demo.corpus import TASK_METRICS, score_normalize
    from mowe.evaluation.evaluate import evaluate_model
    from mowe.model import MoWEAudioLLM
    from mowe.data.processor import MoWECollator
    from mowe.training.stages import Stage
    from mowe.training.trainer import TrainConfig, Trainer

    torch.manual_seed(seed)
    cfg = config.replace(llm=dataclasses.replace(config.llm, train=llm_train))
    # A shallow copy shares the frozen weights but lets LTU-AS ask this encoder for all of its layers.
    enc = copy.copy(strong)
    enc.output_all_layers = cfg.strong.output_all_layers
    model = MoWEAudioLLM.from_config(cfg, encoders={"strong": enc})
    parts = ("connector", "llm" if llm_train == "full" else "lora") + (("routers",) if model.pool is not None else ())
    stage = Stage(name, parts, steps, lr, warmup_steps=max(1, steps // 20))
    run_dir = os.path.join(out_dir, name.lower().replace("-", "_"))
    tcfg = TrainConfig(output_dir=run_dir, batch_size=batch_size, log_every=5, seed=seed, save_every=0,
                       progress=progress)
    _log(f"training {name}: {model.num_parameters(trainable_only=True):,} trainable parameters, "
         f"{steps} steps of {batch_size}")
    trainer = Trainer(model, train, config=tcfg, stages=[stage], collate_fn=MoWECollator(processor))
    trainer.train()
    _log(f"evaluating {name} on {len(test)} test examples")
    result = evaluate_model(model, processor, test, batch_size=32, max_new_tokens=16, progress=progress,
                            desc=f"eval {name}", task_metrics=TASK_METRICS, normalize=score_normalize)
    return result, trainer.log_file


def _plots(out_dir: str, logs: dict[str, str], strong_curve: list[float], results: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(strong_curve, color="gray")
    axes[0].set(title="strong encoder pre-training (ASR, CTC)", xlabel="step", ylabel="CTC loss")
    for name, log in logs.items():
        with open(log) as f:
            rows = [json.loads(line) for line in f if '"loss"' in line]
        rows = [r for r in rows if "loss" in r and "step" in r]
        axes[1].plot([r["step"] for r in rows], [r.get("lm_loss", r["loss"]) for r in rows], label=name)
    axes[1].set(title="audio LLM training (next-token loss)", xlabel="step", ylabel="loss")
    axes[1].legend()
    fig.tight_layout()
    p = os.path.join(out_dir, "training_curves.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    mowe = results["MoWE"]
    tasks = sorted(mowe.router_counts)
    if tasks:
        import numpy as np

        m = np.array([mowe.router_counts[t] for t in tasks], dtype=float)
        m = m / m.sum(1, keepdims=True).clip(min=1)
        fig, ax = plt.subplots(figsize=(1.6 + 1.3 * m.shape[1], 0.9 + 0.45 * len(tasks)))
        im = ax.imshow(m, cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(m.shape[1]), mowe.encoder_names, rotation=30, ha="right")
        ax.set_yticks(range(len(tasks)), tasks)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", color="w" if m[i, j] < 0.6 else "k",
                        fontsize=8)
        ax.set_title("weak encoder selected, per task (test split)")
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        p = os.path.join(out_dir, "router_heatmap.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--size", type=int, default=2000, help="training examples in the corpus")
    ap.add_argument("--strong-steps", type=int, default=600)
    ap.add_argument("--steps", type=int, default=1500, help="training steps for each of base-only and MoWE")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (about a minute)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.strong_steps, args.steps, args.batch_size = 120, 10, 12, 8
    progress = not args.no_progress
    t0 = time.time()
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    from mowe.evaluation.evaluate import write_report
    from mowe.presets import base_only, mowe_paper

    prep = prepare(args.out, size=args.size, strong_steps=args.strong_steps, batch_size=args.batch_size,
                   seed=args.seed, progress=progress)
    train, test, tok, processor, strong, strong_curve = (prep.train, prep.test, prep.tokenizer, prep.processor,
                                                         prep.strong, prep.strong_curve)

    # 2. Base-only and MoWE on the same budget. The tiny LLM has random weights, so it trains fully (with a
    #    pretrained LLM one would train LoRA); the weak encoders stay frozen, as MoWE keeps them.
    results, logs = {}, {}
    for name, preset_fn in (("base-only", base_only), ("MoWE", mowe_paper)):
        preset = preset_fn(tiny=True, audio_token_id=processor.audio_token_id, vocab_size=len(tok))
        results[name], logs[name] = train_and_evaluate(
            name, preset.config, strong=strong, train=train, test=test, processor=processor, steps=args.steps,
            batch_size=args.batch_size, lr=args.lr, seed=args.seed, out_dir=args.out, progress=progress)

    table = write_report(results, args.out, stem="results")
    plots = _plots(args.out, logs, strong_curve, results)
    minutes = (time.time() - t0) / 60
    with open(os.path.join(args.out, "results.md"), "a") as f:
        f.write(f"\nSettings: {vars(args)}; wall time {minutes:.1f} min on {os.cpu_count()} CPU cores.\n")
        f.writelines(f"\n![{os.path.basename(p)}]({os.path.basename(p)})\n" for p in plots)
    print("\n" + table)
    _log(f"done in {minutes:.1f} min; wrote {os.path.join(args.out, 'results.md')} and {', '.join(plots)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The paper-size MoWE configuration trained for a few steps on GPUs: step time and peak memory (GPU only).

Model (random weights built from configs; hub downloads are not needed): a Whisper-large-v3 strong encoder, a
weak pool of 2 Whisper-tiny + 2 HuBERT-base (top-1 routing), a stack-4 connector and a Llama-shaped LLM
(``--llm 8b``: Llama-3-8B shape, ``1.5b``: Qwen2.5-1.5B shape) in bf16 with LoRA r=8 on q,v, trained by mowe's
Trainer (bf16 autocast) on synthetic clips with answers of 1-30 tokens. Runs under any launcher::

    python benchmarks/gpu_paper_size.py                                                    # 1 GPU
    accelerate launch --config_file examples/accelerate_ddp.yaml benchmarks/gpu_paper_size.py       # DDP
    accelerate launch --config_file examples/accelerate_fsdp.yaml benchmarks/gpu_paper_size.py      # FSDP2
    accelerate launch --config_file examples/accelerate_deepspeed.yaml benchmarks/gpu_paper_size.py # ZeRO-2

(set ``num_processes`` in the config, or ``--num_processes N`` on the command line, to the GPUs you have).
The main process prints one JSON line (median step time after warm-up, peak ``max_memory_allocated`` over the
processes, the launch mode) and, with ``--write-results``, puts it into benchmarks/RESULTS.md between the
``GPU PAPER-SIZE`` markers. ``--tiny`` swaps in toy sizes so the whole path runs on a CPU in seconds (a test
runs it); ``--dry-run`` prints the configuration and exits.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import resource
import statistics
import tempfile
import time

import torch
from torch.utils.data import Dataset

HERE = os.path.dirname(os.path.abspath(__file__))
AUDIO_ID = 5
LLMS = {  # transformers config dicts (random weights)
    "8b": {
        "model_type": "llama",
        "vocab_size": 128256,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 8192,
        "rope_theta": 500000.0,
    },
    "1.5b": {
        "model_type": "qwen2",
        "vocab_size": 151936,
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
    },
}


def paper_config(llm: str, *, tiny: bool):
    """The MoWE paper configuration (mowe.presets.mowe_paper) with encoders and LLM built from configs."""
    from mowe.config import EncoderConfig, LLMConfig
    from mowe.presets import mowe_paper

    preset = mowe_paper(tiny=tiny, audio_token_id=AUDIO_ID, vocab_size=512)
    cfg = preset.config
    if tiny:
        return cfg
    weak = {
        "whisper_tiny_a": EncoderConfig("whisper", preset="tiny"),
        "whisper_tiny_b": EncoderConfig("whisper", preset="tiny"),
        "hubert_a": EncoderConfig("hubert", preset="hubert-base"),
        "hubert_b": EncoderConfig("hubert", preset="hubert-base"),
    }
    return dataclasses.replace(
        cfg,
        strong=EncoderConfig("whisper", preset="large-v3"),
        weak_encoders=weak,
        llm=LLMConfig(config=LLMS[llm], dtype="bfloat16"),
    )


class SyntheticClips(Dataset):
    """``n`` clips of ``seconds`` (sines + noise) with a 12-token prompt and an answer of 1-30 tokens."""

    def __init__(self, n: int, *, seconds: float, vocab: int):
        g = torch.Generator().manual_seed(0)
        self.waves = [0.1 * torch.randn(int(seconds * 16000), generator=g) for _ in range(n)]
        self.text = [torch.randint(10, vocab, (12 + 1 + (i * 7) % 30,), generator=g) for i in range(n)]
        self.task_list = ["asr"] * n

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, i: int):
        ids = torch.cat([torch.tensor([1, AUDIO_ID]), self.text[i]])
        labels = ids.clone()
        labels[:14] = -100
        return {
            "input_ids": ids,
            "labels": labels,
            "waveform": self.waves[i],
            "task": "asr",
            "id": f"clip{i}",
        }


def collate(examples):
    L = max(len(e["input_ids"]) for e in examples)
    b = len(examples)
    ids, mask = torch.zeros(b, L, dtype=torch.long), torch.zeros(b, L, dtype=torch.long)
    labels = torch.full((b, L), -100, dtype=torch.long)
    for r, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[r, :n], labels[r, :n], mask[r, :n] = e["input_ids"], e["labels"], 1
    waves = torch.stack([e["waveform"] for e in examples])
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "waveforms": waves,
        "wave_lengths": torch.full((b,), waves.shape[1], dtype=torch.long),
        "task": [e["task"] for e in examples],
        "id": [e["id"] for e in examples],
    }


def launch_mode() -> str:
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return "deepspeed"
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "fsdp2"
    return "ddp" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "single"


def write_results(res: dict, path: str) -> None:
    """Replace (or append) the ``GPU PAPER-SIZE`` section of RESULTS.md with this run's figures."""
    begin, end = "<!-- BEGIN GPU PAPER-SIZE -->", "<!-- END GPU PAPER-SIZE -->"
    body = (
        f"{begin}\n### Paper-size MoWE on GPUs (benchmarks/gpu_paper_size.py)\n\n"
        f"{res['processes']} x {res['device']} ({res['mode']}), LLM {res['llm']}, batch {res['batch_size']} "
        f"x "
        f"{res['seconds']:g} s clips per process, bf16 autocast: median step {res['step_s']:.3f} s over "
        f"{res['timed_steps']} steps, peak memory {res['peak_mem_gib']:.1f} GiB per process "
        f"(max over processes), {res['trainable_params'] / 1e6:.1f} M trainable of "
        f"{res['params'] / 1e9:.2f} B parameters. torch {res['torch']}.\n{end}"
    )
    text = ""
    if os.path.isfile(path):
        with open(path) as f:
            text = f.read()
    text = (
        re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: body, text, flags=re.DOTALL)
        if begin in text
        else text.rstrip() + "\n\n" + body + "\n"
    )
    with open(path, "w") as f:
        f.write(text)


def main(argv=None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--llm", choices=sorted(LLMS), default="8b")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2, help="steps left out of the median")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--tiny", action="store_true", help="toy sizes: the whole path on a CPU in seconds")
    p.add_argument("--dry-run", action="store_true", help="print the configuration and exit")
    p.add_argument("--write-results", action="store_true", help="update benchmarks/RESULTS.md (main process)")
    p.add_argument("--output-dir", default=None)
    args = p.parse_args(argv)
    cfg = paper_config(args.llm, tiny=args.tiny)
    if args.dry_run:
        from mowe.config import to_dict

        print(json.dumps({"mode": launch_mode(), "config": to_dict(cfg)}, default=str))
        return None

    from mowe import MoWEAudioLLM
    from mowe.curriculum import Stage
    from mowe.training.trainer import TrainConfig, Trainer

    torch.manual_seed(0)
    model = MoWEAudioLLM.from_config(cfg)
    seconds = 1.0 if args.tiny else args.seconds
    vocab = int(model.llm.get_input_embeddings().num_embeddings)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    data = SyntheticClips(args.batch_size * world * args.steps, seconds=seconds, vocab=vocab)
    out = args.output_dir or tempfile.mkdtemp(prefix="mowe-gpu-")
    tcfg = TrainConfig(
        output_dir=out,
        batch_size=args.batch_size,
        log_every=1,
        progress=False,
        save_final=False,
        group_by_length=False,
        mixed_precision="bf16",
    )
    stages = [Stage("paper", ("connector", "routers", "lora"), args.steps, 1e-4, warmup_steps=1)]
    trainer = Trainer(model, data, config=tcfg, stages=stages, collate_fn=collate)
    acc = trainer.accelerator
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    peak = (
        torch.cuda.max_memory_allocated()
        if torch.cuda.is_available()
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    peak = (
        float(acc.reduce(torch.tensor([float(peak)], device=acc.device), reduction="max")[0])
        if acc.num_processes > 1
        else float(peak)
    )
    if not acc.is_main_process:
        return None
    with open(os.path.join(out, "log.jsonl")) as f:
        recs = [json.loads(x) for x in f if '"samples_per_s"' in x]
    global_batch = args.batch_size * acc.num_processes
    times = [global_batch / r["samples_per_s"] for r in recs[args.warmup :]] or [wall / args.steps]
    res = {
        "mode": launch_mode(),
        "processes": acc.num_processes,
        "llm": "tiny" if args.tiny else args.llm,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "batch_size": args.batch_size,
        "seconds": seconds,
        "steps": args.steps,
        "timed_steps": len(times),
        "step_s": statistics.median(times),
        "peak_mem_gib": peak / 2**30,
        "loss_last": recs[-1]["loss"],
        "params": sum(p.numel() for p in model.parameters()),  # a DTensor's numel is its global size
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "torch": torch.__version__,
    }
    assert math.isfinite(res["step_s"]) and res["step_s"] > 0
    print(json.dumps(res), flush=True)
    if args.write_results:
        write_results(res, os.path.join(HERE, "RESULTS.md"))
    return res


if __name__ == "__main__":
    main()

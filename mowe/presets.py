"""The preset registry: every preset by name, and all that the command line and run files reach the seed
systems through.

A preset returns a :class:`~mowe.recipes.Preset`: the :class:`~mowe.config.MoWEConfig`, its training
curriculum, the prompt format the system used and the LoRA scale it uses at inference. Real sizes and hub ids
are the defaults; ``tiny=True`` swaps in random-weight toy sizes that train on a CPU in seconds.

MoWE-Audio's own presets (:func:`mowe_paper`, :func:`base_only`) are defined here; each seed system's preset,
curriculum, prompt format and checkpoint converter live in its package (:mod:`mowe.salmonn`,
:mod:`mowe.ltu_as`), and this module is the one place that lists them:

* :data:`PRESETS`: preset builders by name (``mowe.presets.salmonn(tiny=True)`` works as well);
* :data:`STAGE_PRESETS`: curricula by the name a run file's ``stages: {preset: NAME, steps: ...}`` gives;
* :data:`CONVERTERS`: the released checkpoint formats ``mowe convert NAME`` reads;
* :data:`PROMPT_TEMPLATES`: every preset's prompt format by name.

Only the builders hold hard-coded sizes; every module reads its dimensions from the modules it is given.
"""

from __future__ import annotations

from collections.abc import Sequence

from mowe import ltu_as as _ltu_as
from mowe import salmonn as _salmonn
from mowe.checkpoints.converter import Converter
from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig, LoRAConfig, MoWEConfig, RouterConfig
from mowe.curriculum import Stage, mowe_default_stages
from mowe.data.templates import PROMPT_TEMPLATES as _OWN_TEMPLATES
from mowe.errors import ConfigError
from mowe.ltu_as import ltu_as
from mowe.recipes import TINY_HUBERT, TINY_WEAK_WHISPER, TINY_WHISPER, Preset, tiny_llm
from mowe.salmonn import salmonn

__all__ = [
    "CONVERTERS",
    "PRESETS",
    "PROMPT_TEMPLATES",
    "STAGE_PRESETS",
    "base_only",
    "ltu_as",
    "mowe_paper",
    "salmonn",
]


def mowe_paper(
    *,
    tiny: bool = False,
    audio_token_id: int = 0,
    vocab_size: int = 512,
    top_k: int = 1,
    llm: str = "Qwen/Qwen2.5-1.5B-Instruct",
    steps: int = 1000,
    prompt_aware: bool = False,
) -> Preset:
    """MoWE-Audio (arXiv 2409.06635): frozen Whisper-large-v3 + a weak pool of 2 Whisper-tiny and 2
    HuBERT-base, data-independent + data-dependent routers, top-1, load-balance loss weight 0.1, LoRA on the
       LLM.

    ``prompt_aware=True`` (beyond the paper; PaM, arXiv 2502.15178): the data-dependent router also sees the
    instruction (:class:`~mowe.routers.PromptAwareRouter`); everything else is unchanged."""
    if tiny:
        strong = EncoderConfig("whisper", preset="tiny", overrides=TINY_WHISPER, pad_to_30s=False)
        weak = {
            "whisper_tiny_a": EncoderConfig(
                "whisper", preset="tiny", overrides=TINY_WEAK_WHISPER, pad_to_30s=False
            ),
            "whisper_tiny_b": EncoderConfig(
                "whisper", preset="tiny", overrides=TINY_WEAK_WHISPER, pad_to_30s=False
            ),
            "hubert_a": EncoderConfig("hubert", preset="hubert-base", overrides=TINY_HUBERT),
            "hubert_b": EncoderConfig("hubert", preset="hubert-base", overrides=TINY_HUBERT),
        }
        llm_cfg = LLMConfig(config=tiny_llm(vocab_size))
    else:
        strong = EncoderConfig("whisper", name_or_path="openai/whisper-large-v3")
        weak = {
            # Frozen pretrained Whisper-tiny runs on the faithful 30 s path: on the real-length path tiny.en's
            # features leave its training distribution (its own decoder loops: WER 2.6 vs 0.07 measured by
            # benchmarks/whisper_real_weights.py). Cut to the clip's frames, as the pool aligns every weak
            # stream to the strong encoder's frames anyway (full_window frames past the clip would be
            # dropped).
            "whisper_tiny": EncoderConfig("whisper", name_or_path="openai/whisper-tiny"),
            "whisper_tiny_en": EncoderConfig("whisper", name_or_path="openai/whisper-tiny.en"),
            "hubert_base": EncoderConfig("hubert", name_or_path="facebook/hubert-base-ls960"),
            "wav2vec2_base": EncoderConfig("hubert", name_or_path="facebook/wav2vec2-base-960h"),
        }
        llm_cfg = LLMConfig(name_or_path=llm, dtype="bfloat16")
    router = RouterConfig(top_k=top_k, aux_loss_weight=0.1, prompt_aware=prompt_aware)
    cfg = MoWEConfig(
        strong=strong,
        weak_encoders=weak,
        router=router,
        connector=ConnectorConfig("stack", {"stack": 4}),
        llm=llm_cfg,
        lora=LoRAConfig(r=8, alpha=16),
        audio_token_id=audio_token_id,
    )
    return Preset(
        "mowe_paper",
        cfg,
        tuple(mowe_default_stages(steps)),
        PROMPT_TEMPLATES["mowe"],
        1.0,
        "Zhang et al., MoWE-Audio: Multitask AudioLLMs with Mixture of Weak Encoders, arXiv 2409.06635",
    )


def base_only(
    *,
    tiny: bool = False,
    audio_token_id: int = 0,
    vocab_size: int = 512,
    steps: int = 1000,
    llm: str = "Qwen/Qwen2.5-1.5B-Instruct",
) -> Preset:
    """The MoWE paper configuration without the weak pool: the baseline MoWE is compared against."""
    p = mowe_paper(tiny=tiny, audio_token_id=audio_token_id, vocab_size=vocab_size, steps=steps, llm=llm)
    return Preset(
        "base_only", p.config.replace(weak_encoders={}), p.stages, p.prompt_template, 1.0, p.reference
    )


def _mowe_stages(steps: int | Sequence[int]) -> list[Stage]:
    if not isinstance(steps, int):
        raise ConfigError("stages.steps: the mowe preset has one stage; give one integer")
    return mowe_default_stages(steps)


PRESETS = {"mowe_paper": mowe_paper, "base_only": base_only, "salmonn": salmonn, "ltu_as": ltu_as}

#: Curricula by name (``mowe_paper``, the name of the model preset, is the same as ``mowe``); each takes
#: ``steps`` (one int, or one per stage).
STAGE_PRESETS = {
    "mowe": _mowe_stages,
    "mowe_paper": _mowe_stages,
    "salmonn": _salmonn.preset_stages,
    "ltu_as": _ltu_as.preset_stages,
}

#: ``mowe convert NAME``'s formats besides Whisper (:mod:`mowe.cli_convert`), by their command-line names.
CONVERTERS: dict[str, Converter] = {c.name: c for c in (_salmonn.CONVERTER, _ltu_as.CONVERTER)}

#: mowe's own templates (:mod:`mowe.data.templates`) and the seed systems'.
PROMPT_TEMPLATES = {
    **_OWN_TEMPLATES,
    "salmonn": _salmonn.PROMPT_TEMPLATE,
    "ltu_as": _ltu_as.PROMPT_TEMPLATE,
    "ltu_as_faithful": _ltu_as.FAITHFUL_PROMPT_TEMPLATE,
}

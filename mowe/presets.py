"""The seed systems as presets built from mowe's own parts: MoWE-Audio, SALMONN and LTU-AS.

Each preset returns a :class:`Preset`: the :class:`~mowe.config.MoWEConfig`, its training curriculum, the
prompt format the system used and the LoRA scale it uses at inference. Real sizes and hub ids are the
defaults; ``tiny=True`` swaps in random-weight toy sizes that train on a CPU in seconds.

Only these builders hold hard-coded sizes; every module reads its dimensions from the modules it is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig, LoRAConfig, MoWEConfig, RouterConfig
from mowe.data.templates import PROMPT_TEMPLATES

__all__ = ["LTU_AS_CLOSED_ENDED_TASKS", "PRESETS", "PROMPT_TEMPLATES", "Preset", "SALMONN_ACTIVATION_TASKS",
           "SALMONN_PRETRAIN_TASKS", "base_only", "ltu_as", "mowe_paper", "salmonn"]

# Task lists of the seed curricula, as data: named after the tasks of the local demo corpus
# (mowe.demo.corpus). Training on other data: pass your own task names to the stage builders.
SALMONN_PRETRAIN_TASKS = {"asr": 1.0, "sound_event": 1.0}  # speech recognition + audio captioning
SALMONN_ACTIVATION_TASKS = {"co_reasoning": 1.0}  # long-answer, QA-like (speech-audio co-reasoning)
LTU_AS_CLOSED_ENDED_TASKS = ("gender", "accent", "speaking_rate", "sound_event", "chord", "tempo")

# Toy sizes for tiny=True (random weights; CPU tests and the demo).
_TINY_WHISPER = dict(d_model=64, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128)
_TINY_WEAK_WHISPER = dict(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64)
_TINY_HUBERT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                    conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
_TINY_BEATS = dict(encoder_layers=2, encoder_embed_dim=64, encoder_attention_heads=4, encoder_ffn_embed_dim=128,
                   embed_dim=32)


def _tiny_llm(vocab_size: int) -> dict:
    return dict(model_type="llama", vocab_size=vocab_size, hidden_size=96, intermediate_size=192,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)


@dataclass(frozen=True)
class Preset:
    """A ready recipe.

    Attributes:
        name: ``"mowe_paper"``, ``"salmonn"``, ``"ltu_as"`` or ``"base_only"``.
        config: what to build (``MoWEAudioLLM.from_config(preset.config)`` or ``preset.build()``).
        stages: the training curriculum (see :mod:`mowe.training.stages`).
        prompt_template: the system's prompt format with ``{audio}`` and ``{instruction}``.
        inference_lora_scale: factor for :meth:`MoWEAudioLLM.set_lora_scale` at test time (SALMONN: 0.5,
            i.e. scaling 4.0 in training -> 2.0 at inference).
        reference: the paper.
    """

    name: str
    config: MoWEConfig
    stages: tuple = field(default_factory=tuple)
    prompt_template: str = PROMPT_TEMPLATES["mowe"]
    inference_lora_scale: float = 1.0
    reference: str = ""

    def build(self, **kwargs):
        """``MoWEAudioLLM.from_config(self.config, **kwargs)``."""
        from mowe.model import MoWEAudioLLM

        return MoWEAudioLLM.from_config(self.config, **kwargs)

    def processor(self, tokenizer, **kwargs):
        """A :class:`~mowe.data.processor.MoWEProcessor` with this system's ``prompt_template`` (kwargs win)."""
        from mowe.data.processor import MoWEProcessor

        return MoWEProcessor(tokenizer, **{"prompt_template": self.prompt_template, **kwargs})

    def for_inference(self, model):
        """Apply this system's inference-time LoRA scale (SALMONN: 0.5) to a trained ``model``; returns it."""
        if self.inference_lora_scale != 1.0:
            model.set_lora_scale(self.inference_lora_scale)
        return model


def mowe_paper(*, tiny: bool = False, audio_token_id: int = 0, vocab_size: int = 512, top_k: int = 1,
               llm: str = "Qwen/Qwen2.5-1.5B-Instruct", steps: int = 1000) -> Preset:
    """MoWE-Audio (arXiv 2409.06635): frozen Whisper-large-v3 + a weak pool of 2 Whisper-tiny and 2 HuBERT-base,
    data-independent + data-dependent routers, top-1, load-balance loss weight 0.1, LoRA on the LLM."""
    from mowe.training.stages import mowe_default_stages

    if tiny:
        strong = EncoderConfig("whisper", preset="tiny", overrides=_TINY_WHISPER, pad_to_30s=False)
        weak = {
            "whisper_tiny_a": EncoderConfig("whisper", preset="tiny", overrides=_TINY_WEAK_WHISPER, pad_to_30s=False),
            "whisper_tiny_b": EncoderConfig("whisper", preset="tiny", overrides=_TINY_WEAK_WHISPER, pad_to_30s=False),
            "hubert_a": EncoderConfig("hubert", preset="hubert-base", overrides=_TINY_HUBERT),
            "hubert_b": EncoderConfig("hubert", preset="hubert-base", overrides=_TINY_HUBERT),
        }
        llm_cfg = LLMConfig(config=_tiny_llm(vocab_size))
    else:
        strong = EncoderConfig("whisper", name_or_path="openai/whisper-large-v3")
        weak = {
            "whisper_tiny": EncoderConfig("whisper", name_or_path="openai/whisper-tiny", pad_to_30s=False),
            "whisper_tiny_en": EncoderConfig("whisper", name_or_path="openai/whisper-tiny.en", pad_to_30s=False),
            "hubert_base": EncoderConfig("hubert", name_or_path="facebook/hubert-base-ls960"),
            "wav2vec2_base": EncoderConfig("hubert", name_or_path="facebook/wav2vec2-base-960h"),
        }
        llm_cfg = LLMConfig(name_or_path=llm, dtype="bfloat16")
    cfg = MoWEConfig(strong=strong, weak=weak, router=RouterConfig(top_k=top_k, aux_loss_weight=0.1),
                     connector=ConnectorConfig("stack", {"stack": 4}), llm=llm_cfg, lora=LoRAConfig(r=8, alpha=16),
                     audio_token_id=audio_token_id)
    return Preset("mowe_paper", cfg, tuple(mowe_default_stages(steps)), PROMPT_TEMPLATES["mowe"], 1.0,
                  "Zhang et al., MoWE-Audio: Multitask AudioLLMs with Mixture of Weak Encoders, arXiv 2409.06635")


def base_only(*, tiny: bool = False, audio_token_id: int = 0, vocab_size: int = 512, steps: int = 1000,
              llm: str = "Qwen/Qwen2.5-1.5B-Instruct") -> Preset:
    """The MoWE paper configuration without the weak pool: the baseline MoWE is compared against."""
    p = mowe_paper(tiny=tiny, audio_token_id=audio_token_id, vocab_size=vocab_size, steps=steps, llm=llm)
    return Preset("base_only", p.config.replace(weak={}), p.stages, p.prompt_template, 1.0, p.reference)


def salmonn(*, tiny: bool = False, audio_token_id: int = 0, vocab_size: int = 512,
            llm: str = "lmsys/vicuna-13b-v1.1", beats_checkpoint: str | None = None,
            steps=(1000, 1000, 12)) -> Preset:
    """SALMONN (arXiv 2310.13289): Whisper-large-v2 + BEATs features concatenated, a window-level Q-Former
    (window = stride = 17 frames, one query each, 2 layers, hidden 768), Linear into the LLM, LoRA r=8 / alpha=32
    on q and v; three stages (pre-training, instruction tuning, activation tuning); LoRA scale halved at test.

    ``beats_checkpoint``: path to the official ``BEATs_iter3_plus_AS2M.pt`` (it is not on the hub as a
    transformers model; download it once from the BEATs release and pass the file).
    """
    from mowe.training.stages import salmonn_stages

    if tiny:
        strong = EncoderConfig("whisper", preset="tiny", overrides=_TINY_WHISPER, pad_to_30s=False)
        beats = EncoderConfig("beats", preset="tiny", overrides=_TINY_BEATS)
        llm_cfg = LLMConfig(config=_tiny_llm(vocab_size))
        qf = dict(hidden_dim=64, num_heads=4, num_layers=2, window=17, stride=17, num_queries=1)
    else:
        strong = EncoderConfig("whisper", name_or_path="openai/whisper-large-v2")
        beats = EncoderConfig("beats", name_or_path=beats_checkpoint) if beats_checkpoint else \
            EncoderConfig("beats", preset="base")
        llm_cfg = LLMConfig(name_or_path=llm, dtype="bfloat16")
        qf = dict(hidden_dim=768, num_heads=12, num_layers=2, window=17, stride=17, num_queries=1)
    # SALMONN concatenates BEATs to every Whisper frame: a one-encoder pool that every clip selects.
    cfg = MoWEConfig(strong=strong, weak={"beats": beats},
                     router=RouterConfig(data_dependent=False, top_k=1, aux_loss_weight=0.0),
                     connector=ConnectorConfig("qformer", qf), llm=llm_cfg,
                     lora=LoRAConfig(r=8, alpha=32, dropout=0.1, target_modules=("q_proj", "v_proj")),
                     audio_token_id=audio_token_id)
    return Preset("salmonn", cfg, tuple(salmonn_stages(steps, pretrain_tasks=SALMONN_PRETRAIN_TASKS,
                                                     activation_tasks=SALMONN_ACTIVATION_TASKS)), PROMPT_TEMPLATES["salmonn"], 0.5,
                  "Tang et al., SALMONN: Towards Generic Hearing Abilities for Large Language Models, arXiv 2310.13289")


def ltu_as(*, tiny: bool = False, audio_token_id: int = 0, vocab_size: int = 512,
           llm: str = "lmsys/vicuna-7b-v1.1", steps=(1000, 1000, 1000)) -> Preset:
    """LTU-AS (arXiv 2309.14405): all hidden layers of Whisper-large (v1), pooled x20 in time, a time-and-layer
    transformer, LayerNorm + Linear into the LLM, LoRA r=8 / alpha=16 on q and v; a 3-stage curriculum."""
    from mowe.training.stages import ltu_as_stages

    if tiny:
        strong = EncoderConfig("whisper", preset="tiny", overrides=_TINY_WHISPER, pad_to_30s=False,
                               output_all_layers=True)
        llm_cfg = LLMConfig(config=_tiny_llm(vocab_size))
        layers = _TINY_WHISPER["encoder_layers"] + 1
    else:
        strong = EncoderConfig("whisper", name_or_path="openai/whisper-large", output_all_layers=True)
        llm_cfg = LLMConfig(name_or_path=llm, dtype="bfloat16")
        layers = 33  # 32 layers + the embedding output
    cfg = MoWEConfig(strong=strong, weak={},
                     connector=ConnectorConfig("tltr", {"num_layers_in": layers, "time_pool": 20}),
                     llm=llm_cfg, lora=LoRAConfig(r=8, alpha=16, dropout=0.05, target_modules=("q_proj", "v_proj")),
                     audio_token_id=audio_token_id)
    return Preset("ltu_as", cfg, tuple(ltu_as_stages(steps, closed_ended_tasks=LTU_AS_CLOSED_ENDED_TASKS)), PROMPT_TEMPLATES["ltu_as"], 1.0,
                  "Gong et al., Joint Audio and Speech Understanding (LTU-AS), arXiv 2309.14405")


PRESETS = {"mowe_paper": mowe_paper, "base_only": base_only, "salmonn": salmonn, "ltu_as": ltu_as}

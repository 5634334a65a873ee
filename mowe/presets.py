"""The seed systems as presets built from mowe's own parts: MoWE-Audio, SALMONN and LTU-AS.

Each preset returns a :class:`Preset`: the :class:`~mowe.config.MoWEConfig`, its training curriculum, the
prompt format the system used and the LoRA scale it uses at inference. Real sizes and hub ids are the
defaults; ``tiny=True`` swaps in random-weight toy sizes that train on a CPU in seconds.

Only these builders hold hard-coded sizes; every module reads its dimensions from the modules it is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mowe.config import (
    ConnectorConfig,
    EncoderConfig,
    InferenceConfig,
    LLMConfig,
    LoRAConfig,
    MoWEConfig,
    RouterConfig,
)
from mowe.curriculum import ltu_as_stages, mowe_default_stages, salmonn_stages
from mowe.data.processor import MoWEProcessor
from mowe.data.templates import PROMPT_TEMPLATES
from mowe.data.tokenizer import add_audio_token, check_placeholder_agrees
from mowe.model import MoWEAudioLLM

__all__ = [
    "LTU_AS_CLOSED_ENDED_TASKS",
    "PRESETS",
    "PROMPT_TEMPLATES",
    "SALMONN_ACTIVATION_TASKS",
    "SALMONN_PRETRAIN_TASKS",
    "Preset",
    "base_only",
    "ltu_as",
    "mowe_paper",
    "salmonn",
]

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
        stages: the training curriculum (see :mod:`mowe.curriculum`).
        prompt_template: the system's prompt format with ``{audio}`` and ``{instruction}``.
        inference_lora_scale: factor for :meth:`MoWEAudioLLM.set_lora_scale` at test time (1.0 for all three:
            SALMONN's official decoding keeps its training scaling; see :func:`salmonn`).
        reference: the paper.

    ``config.inference`` records ``prompt_template`` and ``inference_lora_scale`` (unless the config already sets
    its own), so a model built from the preset saves them and ``from_pretrained`` applies them.
    """

    name: str
    config: MoWEConfig
    stages: tuple = field(default_factory=tuple)
    prompt_template: str = PROMPT_TEMPLATES["mowe"]
    inference_lora_scale: float = 1.0
    reference: str = ""

    def __post_init__(self):
        if self.config.inference == InferenceConfig():
            inference = InferenceConfig(prompt_template=self.prompt_template, lora_scale=self.inference_lora_scale)
            object.__setattr__(self, "config", self.config.replace(inference=inference))

    def build(self, **kwargs):
        """``MoWEAudioLLM.from_config(self.config, **kwargs)``."""
        return MoWEAudioLLM.from_config(self.config, **kwargs)

    def for_tokenizer(self, tokenizer, *, audio_token: str = "<|audio|>") -> Preset:
        """This preset with ``tokenizer``'s audio placeholder: ``audio_token`` is added to ``tokenizer`` as a
        special token (in place) unless it is one already, and ``config.audio_token_id`` becomes its id, checked to be
        one that no text produces (:func:`mowe.data.tokenizer.add_audio_token`). The LLM needs no row for it; a tiny
        preset's random LLM grows to hold every other token of the tokenizer.

        Raises:
            AudioPlaceholderError: the tokenizer's text can produce ``audio_token``'s id (names it).

        Example::

            tok = AutoTokenizer.from_pretrained("lmsys/vicuna-7b-v1.1")
            preset = ltu_as().for_tokenizer(tok)            # <|audio|> = 32000, past LLaMA's vocabulary
            model, processor = preset.build(), preset.processor(tok)
        """
        import dataclasses

        audio_id = add_audio_token(tokenizer, audio_token)
        cfg = self.config.replace(audio_token_id=audio_id)
        rows = len(tokenizer) - (audio_id == len(tokenizer) - 1)  # every token but the placeholder needs a row
        conf = cfg.llm.config
        if conf is not None and int(conf.get("vocab_size", 0)) < rows:
            cfg = cfg.replace(llm=dataclasses.replace(cfg.llm, config={**conf, "vocab_size": rows}))
        return dataclasses.replace(self, config=cfg)

    def processor(self, tokenizer, **kwargs):
        """A :class:`~mowe.data.processor.MoWEProcessor` with this system's ``prompt_template`` (kwargs win).

        Raises:
            ConfigError: the tokenizer's audio placeholder is not ``config.audio_token_id`` (use
                :meth:`for_tokenizer` first). AudioPlaceholderError: text can produce the placeholder.
        """
        proc = MoWEProcessor(tokenizer, **{"prompt_template": self.prompt_template, **kwargs})
        check_placeholder_agrees(proc, self.config.audio_token_id, what=f"the {self.name} preset")
        return proc

    def for_inference(self, model):
        """Apply this system's inference-time LoRA scale (SALMONN: 0.5) to a trained ``model``; returns it."""
        if self.inference_lora_scale != 1.0:
            model.set_lora_scale(self.inference_lora_scale)
        return model


def mowe_paper(*, tiny: bool = False, audio_token_id: int = 0, vocab_size: int = 512, top_k: int = 1,
               llm: str = "Qwen/Qwen2.5-1.5B-Instruct", steps: int = 1000, prompt_aware: bool = False) -> Preset:
    """MoWE-Audio (arXiv 2409.06635): frozen Whisper-large-v3 + a weak pool of 2 Whisper-tiny and 2 HuBERT-base,
    data-independent + data-dependent routers, top-1, load-balance loss weight 0.1, LoRA on the LLM.

    ``prompt_aware=True`` (beyond the paper; PaM, arXiv 2502.15178): the data-dependent router also sees the
    instruction (:class:`~mowe.routers.PromptAwareRouter`); everything else is unchanged."""
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
            # Frozen pretrained Whisper-tiny runs on the faithful 30 s path: on the real-length path tiny.en's
            # features leave its training distribution (its own decoder loops: WER 2.6 vs 0.07 measured by
            # benchmarks/whisper_real_weights.py). Cut to the clip's frames, as the pool aligns every weak
            # stream to the strong encoder's frames anyway (full_window frames past the clip would be dropped).
            "whisper_tiny": EncoderConfig("whisper", name_or_path="openai/whisper-tiny"),
            "whisper_tiny_en": EncoderConfig("whisper", name_or_path="openai/whisper-tiny.en"),
            "hubert_base": EncoderConfig("hubert", name_or_path="facebook/hubert-base-ls960"),
            "wav2vec2_base": EncoderConfig("hubert", name_or_path="facebook/wav2vec2-base-960h"),
        }
        llm_cfg = LLMConfig(name_or_path=llm, dtype="bfloat16")
    router = RouterConfig(top_k=top_k, aux_loss_weight=0.1, prompt_aware=prompt_aware)
    cfg = MoWEConfig(strong=strong, weak=weak, router=router,
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
            steps=(1000, 1000, 12), faithful: bool = True) -> Preset:
    """SALMONN (arXiv 2310.13289): Whisper-large-v2 + BEATs features concatenated, a window-level Q-Former
    (window = stride = 17 frames, one query each, 2 layers, hidden 768), Linear into the LLM, LoRA r=8 / alpha=32
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
    paper's training stage (sec. 3.3) that makes the discounted scaling unnecessary. The paper's observation that
    a lower scaling (e.g. 2.0) activates the LLM's own abilities can be reproduced with
    ``model.set_lora_scale(0.5)`` (``mowe infer --lora-scale 0.5``).

    ``beats_checkpoint``: path to the official BEATs file (SALMONN uses
    ``BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt``; it is not a transformers model on the hub).
    The released SALMONN checkpoint loads with :func:`mowe.checkpoints.from_salmonn`.
    """
    span = dict(min_seconds=1.0, max_seconds=30.0) if faithful else {}
    if tiny:
        strong = EncoderConfig("whisper", preset="tiny", overrides=_TINY_WHISPER, pad_to_30s=faithful,
                               full_window=faithful, **span)
        beats = EncoderConfig("beats", preset="tiny", overrides=_TINY_BEATS, **span)
        llm_cfg = LLMConfig(config=_tiny_llm(vocab_size))
        qf = dict(hidden_dim=64, num_heads=4, num_layers=2, window=17, stride=17, num_queries=1)
        dims = [_TINY_WHISPER["d_model"], _TINY_BEATS["encoder_embed_dim"]]
    else:
        strong = EncoderConfig("whisper", name_or_path="openai/whisper-large-v2", full_window=faithful, **span)
        beats = EncoderConfig("beats", name_or_path=beats_checkpoint, **span) if beats_checkpoint else \
            EncoderConfig("beats", preset="base", **span)
        llm_cfg = LLMConfig(name_or_path=llm, dtype="bfloat16")
        qf = dict(hidden_dim=768, num_heads=12, num_layers=2, window=17, stride=17, num_queries=1)
        dims = [1280, 768]
    if faithful:
        qf.update(stream_dims=dims, partial_window="drop")
    # SALMONN concatenates BEATs to every Whisper frame: a one-encoder pool that every clip selects (gate 1.0).
    router = RouterConfig(data_dependent=False, top_k=1, aux_loss_weight=0.0,
                          align="pad" if faithful else "interpolate")
    cfg = MoWEConfig(strong=strong, weak={"beats": beats}, router=router,
                     connector=ConnectorConfig("qformer", qf), llm=llm_cfg,
                     lora=LoRAConfig(r=8, alpha=32, dropout=0.1, target_modules=("q_proj", "v_proj")),
                     audio_token_id=audio_token_id)
    return Preset("salmonn", cfg, tuple(salmonn_stages(steps, pretrain_tasks=SALMONN_PRETRAIN_TASKS,
                                                      activation_tasks=SALMONN_ACTIVATION_TASKS)),
                  PROMPT_TEMPLATES["salmonn"], 1.0,
                  "Tang et al., SALMONN: Towards Generic Hearing Abilities for Large Language Models, arXiv 2310.13289")


def ltu_as(*, tiny: bool = False, audio_token_id: int = 0, vocab_size: int = 512, faithful: bool = True,
           llm: str = "lmsys/vicuna-7b-v1.1", whisper: str = "openai/whisper-large",
           steps=(1000, 1000, 1000)) -> Preset:
    """LTU-AS (arXiv 2309.14405): all hidden layers of Whisper-large (v1), pooled x20 in time, a time-and-layer
    transformer, LayerNorm + Linear into the LLM, LoRA r=8 / alpha=16 on q and v; a 3-stage curriculum.

    ``faithful=True`` computes what the official pipeline (YuanGongND/ltu) computes: every clip cut or padded to
    10 s in the log-mel domain (:mod:`mowe.encoders.whisper_ltu`), the raw outputs of Whisper's blocks (no
    embedding output, no final LayerNorm), always 25 audio tokens, a TLTR without key bias attending over the whole
    window, and the short Alpaca prompt with the audio tokens before it and Whisper's transcript as its input
    (:mod:`mowe.data.ltu_as_prompt`). ``faithful=False`` keeps mowe's real-length path: clips encoded at their
    own length (masked attention, no 10 s limit), ``ceil(frames / 20)`` tokens, the embedding output and the
    final-LayerNorm output among the 33 layers.

    ``whisper``: hub id, folder or openai-whisper ``.pt`` file (LTU-AS used ``large-v1.pt``).
    """
    if tiny:
        llm_cfg = LLMConfig(config=_tiny_llm(vocab_size))
    else:
        llm_cfg = LLMConfig(name_or_path=llm, dtype="bfloat16")
    options = {"time_pool": 20}
    if faithful:
        strong = (EncoderConfig("whisper_ltu", preset="tiny", overrides=_TINY_WHISPER) if tiny
                  else EncoderConfig("whisper_ltu", name_or_path=whisper))
        options.update(num_layers_in=_TINY_WHISPER["encoder_layers"] if tiny else 32, key_bias=False)
        template = PROMPT_TEMPLATES["ltu_as_faithful"]
    else:
        strong = (EncoderConfig("whisper", preset="tiny", overrides=_TINY_WHISPER, pad_to_30s=False,
                                output_all_layers=True) if tiny
                  else EncoderConfig("whisper", name_or_path=whisper, output_all_layers=True))
        options.update(num_layers_in=_TINY_WHISPER["encoder_layers"] + 1 if tiny else 33)  # + the embedding output
        template = PROMPT_TEMPLATES["ltu_as"]
    cfg = MoWEConfig(strong=strong, weak={}, connector=ConnectorConfig("tltr", options),
                     llm=llm_cfg, lora=LoRAConfig(r=8, alpha=16, dropout=0.05, target_modules=("q_proj", "v_proj")),
                     audio_token_id=audio_token_id)
    return Preset("ltu_as", cfg, tuple(ltu_as_stages(steps, closed_ended_tasks=LTU_AS_CLOSED_ENDED_TASKS)), template,
                  1.0,
                  "Gong et al., Joint Audio and Speech Understanding (LTU-AS), arXiv 2309.14405")


PRESETS = {"mowe_paper": mowe_paper, "base_only": base_only, "salmonn": salmonn, "ltu_as": ltu_as}

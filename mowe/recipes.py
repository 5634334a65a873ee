"""What every preset builder shares: :class:`Preset` (a config, its curriculum, its prompt format) and the toy
sizes of ``tiny=True`` builds. The builders themselves are listed in :mod:`mowe.presets`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from mowe.config import InferenceConfig, MoWEConfig
from mowe.data.processor import MoWEProcessor
from mowe.data.templates import PROMPT_TEMPLATES
from mowe.data.tokenizer import add_audio_token, check_placeholder_agrees
from mowe.model import MoWEAudioLLM

__all__ = ["TINY_BEATS", "TINY_HUBERT", "TINY_WEAK_WHISPER", "TINY_WHISPER", "Preset", "tiny_llm"]

# Toy sizes for tiny=True (random weights; CPU tests and the demo).
TINY_WHISPER = dict(d_model=64, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128)
TINY_WEAK_WHISPER = dict(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64)
TINY_HUBERT = dict(
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(32,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)
TINY_BEATS = dict(
    encoder_layers=2, encoder_embed_dim=64, encoder_attention_heads=4, encoder_ffn_embed_dim=128, embed_dim=32
)


def tiny_llm(vocab_size: int) -> dict:
    return dict(
        model_type="llama",
        vocab_size=vocab_size,
        hidden_size=96,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    )


@dataclass(frozen=True)
class Preset:
    """A ready recipe.

    Attributes:
        name: the preset's name in :data:`mowe.presets.PRESETS` (``"mowe_paper"``, ``"base_only"``, ...).
        config: what to build (``MoWEAudioLLM.from_config(preset.config)`` or ``preset.build()``).
        stages: the training curriculum (see :mod:`mowe.curriculum`).
        prompt_template: the system's prompt format with ``{audio}`` and ``{instruction}``.
        inference_lora_scale: factor for :meth:`MoWEAudioLLM.set_lora_scale` at test time (1.0 for every
            preset mowe ships: SALMONN's official decoding keeps its training scaling; see
            :func:`mowe.salmonn.salmonn`).
        reference: the paper.

    ``config.inference`` records ``prompt_template`` and ``inference_lora_scale`` (unless the config already
    sets its own), so a model built from the preset saves them and ``from_pretrained`` applies them.
    """

    name: str
    config: MoWEConfig
    stages: tuple = field(default_factory=tuple)
    prompt_template: str = PROMPT_TEMPLATES["mowe"]
    inference_lora_scale: float = 1.0
    reference: str = ""

    def __post_init__(self):
        if self.config.inference == InferenceConfig():
            inference = InferenceConfig(
                prompt_template=self.prompt_template, lora_scale=self.inference_lora_scale
            )
            object.__setattr__(self, "config", self.config.replace(inference=inference))

    def build(self, **kwargs):
        """``MoWEAudioLLM.from_config(self.config, **kwargs)``."""
        return MoWEAudioLLM.from_config(self.config, **kwargs)

    def for_tokenizer(self, tokenizer, *, audio_token: str = "<|audio|>") -> Preset:
        """This preset with ``tokenizer``'s audio placeholder: ``audio_token`` is added to ``tokenizer`` as a
        special token (in place) unless it is one already, and ``config.audio_token_id`` becomes its id,
           checked to be
        one that no text produces (:func:`mowe.data.tokenizer.add_audio_token`). The LLM needs no row for it;
        a tiny preset's random LLM grows to hold every other token of the tokenizer.

        Raises:
            AudioPlaceholderError: the tokenizer's text can produce ``audio_token``'s id (names it).

        Example::

            tok = AutoTokenizer.from_pretrained("lmsys/vicuna-7b-v1.1")
            preset = ltu_as().for_tokenizer(tok)            # <|audio|> = 32000, past LLaMA's vocabulary
            model, processor = preset.build(), preset.processor(tok)
        """
        audio_id = add_audio_token(tokenizer, audio_token)
        cfg = self.config.replace(audio_token_id=audio_id)
        rows = len(tokenizer) - (
            audio_id == len(tokenizer) - 1
        )  # every token but the placeholder needs a row
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

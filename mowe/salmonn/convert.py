"""``mowe convert salmonn``: the released checkpoint's command-line converter, described as data
(:class:`~mowe.checkpoints.converter.Converter`; :mod:`mowe.cli_convert` builds the parser)."""

from __future__ import annotations

from mowe.checkpoints.converter import COMMON_ARGUMENTS, Argument, Converter
from mowe.salmonn.checkpoint import load_salmonn
from mowe.salmonn.prompt import PROMPT_TEMPLATE

__all__ = ["CONVERTER"]


def _load(*, checkpoint, whisper, beats, llm, dtype, num_heads, lora_alpha, tokenizer, audio_token_id):
    return load_salmonn(
        checkpoint,
        whisper=whisper,
        beats=beats,
        llm=llm,
        num_heads=num_heads,
        lora_alpha=lora_alpha,
        lora_dropout=0.1,
        window=17,
        audio_token_id=audio_token_id,
        dtype=dtype,
        tokenizer=tokenizer,
    )


CONVERTER = Converter(
    name="salmonn",
    title="SALMONN",
    help="a released SALMONN checkpoint -> a mowe model folder",
    arguments=(
        Argument(("checkpoint",), {"help": "the official .pth file, e.g. salmonn_v1.pth"}),
        Argument(
            ("--whisper",), {"required": True, "help": "Whisper hub id or folder (openai/whisper-large-v2)"}
        ),
        Argument(
            ("--beats",),
            {"required": True, "help": "official BEATs file (BEATs_iter3_plus_AS2M_finetuned_*.pt)"},
        ),
        Argument(
            ("--llm",), {"required": True, "help": "base LLM hub id or folder (e.g. lmsys/vicuna-13b-v1.1)"}
        ),
        Argument(
            ("--num-heads",), {"type": int, "default": 12, "help": "Q-Former heads (not stored in the file)"}
        ),
        Argument(
            ("--lora-alpha",), {"type": int, "default": 32, "help": "LoRA alpha (not stored in the file)"}
        ),
        *COMMON_ARGUMENTS,
    ),
    load=_load,
    prompt_template=PROMPT_TEMPLATE,
)

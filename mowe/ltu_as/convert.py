"""``mowe convert ltu-as``: the released checkpoint's command-line converter, described as data
(:class:`~mowe.checkpoints.converter.Converter`; :mod:`mowe.cli_convert` builds the parser)."""

from __future__ import annotations

from mowe.checkpoints.converter import COMMON_ARGUMENTS, Argument, Converter
from mowe.ltu_as.checkpoint import load_ltu_as
from mowe.ltu_as.prompt import PROMPT_TEMPLATE
from mowe.tensors import DTYPES

__all__ = ["CONVERTER"]


def _load(*, checkpoint, whisper, llm, dtype, tokenizer, audio_token_id):
    return load_ltu_as(
        checkpoint,
        whisper=whisper,
        llm=llm,
        dtype=DTYPES[dtype],
        audio_token_id=audio_token_id,
        faithful=True,
        tokenizer=tokenizer,
    )


CONVERTER = Converter(
    name="ltu-as",
    title="LTU-AS",
    help="load a released LTU-AS checkpoint and save it as a mowe model",
    arguments=(
        Argument(("checkpoint",), {"help": "the official LTU-AS .bin (e.g. ltuas_long_noqa_a6.bin)"}),
        Argument(
            ("--whisper",),
            {"required": True, "help": "openai-whisper .pt (large-v1.pt) or a transformers id/folder"},
        ),
        Argument(
            ("--llm",), {"required": True, "help": "the Vicuna/LLaMA folder or hub id LTU-AS was trained on"}
        ),
        *COMMON_ARGUMENTS,
    ),
    load=_load,
    # The processor's prompt: the Alpaca format, audio first; the released model's exact prompt (with
    # Whisper's transcript as its input) is built by mowe.ltu_as.prompt.ltu_as_batch.
    prompt_template=PROMPT_TEMPLATE,
)

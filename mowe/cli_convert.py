"""``mowe convert {whisper,salmonn,ltu-as}``: the argument parsers and commands; the conversions themselves are
:func:`mowe.convert.convert_whisper`, :mod:`mowe.checkpoints.salmonn` and :mod:`mowe.checkpoints.ltu_as`."""

from __future__ import annotations

import argparse

from mowe.checkpoints.ltu_as import load_ltu_as
from mowe.checkpoints.placeholder import save_converted
from mowe.checkpoints.salmonn import load_salmonn
from mowe.convert import convert_whisper
from mowe.data.templates import PROMPT_TEMPLATES
from mowe.tensors import DTYPES

__all__ = ["add_convert_cli"]


def _cmd_convert_whisper(args: argparse.Namespace) -> int:
    out = convert_whisper(args.src, args.dst, dtype=DTYPES[args.dtype])
    print(f"wrote a transformers Whisper to {out}")
    return 0


def add_convert_cli(subparsers) -> None:
    """Add ``mowe convert {whisper,salmonn,ltu-as} ...`` to the ``mowe`` command's subparsers."""
    p = subparsers.add_parser("convert", help="convert a released checkpoint (Whisper, SALMONN, LTU-AS)")
    kinds = p.add_subparsers(dest="kind", metavar="kind")
    kinds.required = True
    w = kinds.add_parser("whisper", help="CTranslate2 folder / openai-whisper .pt -> transformers Whisper folder")
    w.add_argument("src", help="CTranslate2 Whisper folder (model.bin), openai-whisper .pt file, "
                               "or transformers folder")
    w.add_argument("dst", help="output folder")
    w.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="weights dtype (default float32)")
    w.set_defaults(func=_cmd_convert_whisper)
    _add_salmonn(kinds)
    _add_ltu_as(kinds)


def _add_salmonn(subparsers) -> argparse.ArgumentParser:
    """Add ``salmonn`` to a ``convert`` sub-command's subparsers:
    ``mowe convert salmonn CHECKPOINT --whisper W --beats B --llm L --out DIR``."""
    p = subparsers.add_parser("salmonn", help="a released SALMONN checkpoint -> a mowe model folder")
    p.add_argument("checkpoint", help="the official .pth file, e.g. salmonn_v1.pth")
    p.add_argument("--whisper", required=True, help="Whisper hub id or folder (openai/whisper-large-v2)")
    p.add_argument("--beats", required=True, help="official BEATs file (BEATs_iter3_plus_AS2M_finetuned_*.pt)")
    p.add_argument("--llm", required=True, help="base LLM hub id or folder (e.g. lmsys/vicuna-13b-v1.1)")
    p.add_argument("--out", required=True, help="output folder, loadable by MoWEAudioLLM.from_pretrained")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--num-heads", type=int, default=12, help="Q-Former heads (not stored in the file)")
    p.add_argument("--lora-alpha", type=int, default=32, help="LoRA alpha (not stored in the file)")
    p.add_argument("--tokenizer", default=None, help="the LLM's tokenizer folder / hub id (default: --llm's)")
    p.add_argument("--audio-token-id", type=int, default=None,
                   help="placeholder id (default: <|audio|> added to the tokenizer as a special token)")
    p.set_defaults(func=_cmd_convert_salmonn)
    return p


def _cmd_convert_salmonn(args: argparse.Namespace) -> int:
    model, tok = load_salmonn(args.checkpoint, whisper=args.whisper, beats=args.beats, llm=args.llm,
                       num_heads=args.num_heads, lora_alpha=args.lora_alpha, lora_dropout=0.1, window=17,
                       audio_token_id=args.audio_token_id, dtype=args.dtype, tokenizer=args.tokenizer)
    note = save_converted(model, args.out, tok, prompt_template=PROMPT_TEMPLATES["salmonn"])
    print(f"wrote {args.out} ({note})")
    return 0


def _add_ltu_as(subparsers) -> None:
    """Register ``ltu-as`` under ``mowe convert``: ``mowe convert ltu-as CKPT --whisper W --llm L --out DIR``."""
    p = subparsers.add_parser("ltu-as", help="load a released LTU-AS checkpoint and save it as a mowe model")
    p.add_argument("checkpoint", help="the official LTU-AS .bin (e.g. ltuas_long_noqa_a6.bin)")
    p.add_argument("--whisper", required=True, help="openai-whisper .pt (large-v1.pt) or a transformers id/folder")
    p.add_argument("--llm", required=True, help="the Vicuna/LLaMA folder or hub id LTU-AS was trained on")
    p.add_argument("--out", required=True, help="output folder, loadable by MoWEAudioLLM.from_pretrained")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--tokenizer", default=None, help="the LLM's tokenizer folder / hub id (default: --llm's)")
    p.add_argument("--audio-token-id", type=int, default=None,
                   help="placeholder id (default: <|audio|> added to the tokenizer as a special token)")
    p.set_defaults(func=_cmd_convert_ltu_as)


def _cmd_convert_ltu_as(args: argparse.Namespace) -> int:
    model, tok = load_ltu_as(args.checkpoint, whisper=args.whisper, llm=args.llm, dtype=DTYPES[args.dtype],
                       audio_token_id=args.audio_token_id, faithful=True, tokenizer=args.tokenizer)
    # The processor's prompt: LTU-AS's alpaca format, audio first; the released model's exact prompt (with Whisper's
    # transcript as its input) is built by mowe.data.ltu_as_prompt.ltu_as_batch.
    note = save_converted(model, args.out, tok, prompt_template=PROMPT_TEMPLATES["ltu_as"])
    print(f"wrote {args.out} (LTU-AS from {args.checkpoint}; {model.num_parameters(trainable_only=True):,} "
          f"trainable parameters; {note})")
    return 0

"""``mowe convert {whisper,...}``: the argument parsers and commands. Whisper's conversion is
:func:`mowe.convert.convert_whisper`; every other format is a :class:`~mowe.checkpoints.converter.Converter`
listed in :data:`mowe.presets.CONVERTERS` (the seed systems' released checkpoints), turned into a sub-command
here."""

from __future__ import annotations

import argparse

from mowe.checkpoints.converter import Converter
from mowe.checkpoints.placeholder import save_converted
from mowe.convert import convert_whisper
from mowe.presets import CONVERTERS
from mowe.tensors import DTYPES

__all__ = ["add_convert_cli"]


def _cmd_convert_whisper(args: argparse.Namespace) -> int:
    out = convert_whisper(args.src, args.dst, dtype=DTYPES[args.dtype])
    print(f"wrote a transformers Whisper to {out}")
    return 0


def add_convert_cli(subparsers) -> None:
    """Add ``mowe convert {whisper,...} ...`` to the ``mowe`` command's subparsers: ``whisper`` and one
    sub-command per entry of :data:`mowe.presets.CONVERTERS`."""
    titles = ", ".join(["Whisper", *(c.title for c in CONVERTERS.values())])
    p = subparsers.add_parser("convert", help=f"convert a released checkpoint ({titles})")
    kinds = p.add_subparsers(dest="kind", metavar="kind")
    kinds.required = True
    w = kinds.add_parser(
        "whisper", help="CTranslate2 folder / openai-whisper .pt -> transformers Whisper folder"
    )
    w.add_argument(
        "src", help="CTranslate2 Whisper folder (model.bin), openai-whisper .pt file, or transformers folder"
    )
    w.add_argument("dst", help="output folder")
    w.add_argument(
        "--dtype", choices=sorted(DTYPES), default="float32", help="weights dtype (default float32)"
    )
    w.set_defaults(func=_cmd_convert_whisper)
    for converter in CONVERTERS.values():
        _add_converter(kinds, converter)


def _add_converter(subparsers, converter: Converter) -> argparse.ArgumentParser:
    """``mowe convert <converter.name> ...`` from its description."""
    p = subparsers.add_parser(converter.name, help=converter.help)
    dests = [p.add_argument(*a.flags, **a.options).dest for a in converter.arguments]

    def run(args: argparse.Namespace) -> int:
        model, tok = converter.load(**{d: getattr(args, d) for d in dests if d != "out"})
        note = save_converted(model, args.out, tok, prompt_template=converter.prompt_template)
        print(
            f"wrote {args.out} ({converter.title} from {args.checkpoint}; "
            f"{model.num_parameters(trainable_only=True):,} trainable parameters; {note})"
        )
        return 0

    p.set_defaults(func=run)
    return p

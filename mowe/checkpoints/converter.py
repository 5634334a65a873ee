"""What ``mowe convert NAME`` needs to know about a released checkpoint format, as data.

A system's package describes its converter with a :class:`Converter` (its command-line arguments and a
loader); :mod:`mowe.presets` lists them by name and :mod:`mowe.cli_convert` turns each into an ``argparse``
sub-command, so the command line reaches the systems only through that list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mowe.tensors import DTYPES

__all__ = ["COMMON_ARGUMENTS", "Argument", "Converter"]


@dataclass(frozen=True)
class Argument:
    """One command-line argument: ``flags`` and the keywords of ``argparse``'s ``add_argument``.

    Example:
        >>> Argument(("--llm",), {"required": True, "help": "base LLM hub id or folder"}).flags
        ('--llm',)
    """

    flags: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Converter:
    """A released checkpoint format that ``mowe convert <name>`` reads into a mowe model folder.

    Attributes:
        name: the sub-command (``mowe convert <name> ...``).
        title: the system's name in messages.
        help: one line for ``mowe convert --help``.
        arguments: the sub-command's arguments; one has the destination ``checkpoint`` (the file read).
        load: called with every argument's parsed value by its destination name except ``out``; returns
            ``(model, tokenizer or None)``, the tokenizer holding the model's audio placeholder.
        prompt_template: the processor's prompt format saved beside the model.
    """

    name: str
    title: str
    help: str
    arguments: tuple[Argument, ...]
    load: Callable[..., tuple[Any, Any]]
    prompt_template: str


#: The arguments every converter takes after its own: where to write, the dtype, the tokenizer and the
#: placeholder id (``load`` receives all but ``out``).
COMMON_ARGUMENTS: tuple[Argument, ...] = (
    Argument(
        ("--out",), {"required": True, "help": "output folder, loadable by MoWEAudioLLM.from_pretrained"}
    ),
    Argument(("--dtype",), {"default": "float32", "choices": sorted(DTYPES)}),
    Argument(
        ("--tokenizer",), {"default": None, "help": "the LLM's tokenizer folder / hub id (default: --llm's)"}
    ),
    Argument(
        ("--audio-token-id",),
        {
            "type": int,
            "default": None,
            "help": "placeholder id (default: <|audio|> added to the tokenizer as a special token)",
        },
    ),
)

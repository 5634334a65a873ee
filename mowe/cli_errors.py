"""How the ``mowe`` command reports failures: one line on stderr and a documented exit code.

Every failure a user can cause ends as ``mowe <command>: error: <message>`` naming the file, key or flag,
with no traceback (``--debug`` or ``MOWE_DEBUG=1`` adds it). Exit codes:

====  ==========================================================================================
0     success
1     an unexpected internal error (a bug: please report it with the ``--debug`` traceback)
2     bad configuration or usage: run file, ``--set``, a flag, an argument (``ConfigError``,
      ``MoWEInputError``; argparse's own usage errors also exit 2)
3     bad data: manifest, audio file (``ManifestError``, ``AudioLoadError``)
4     bad checkpoint or saved model: missing, corrupt, from another run or stage, refused by
      ``torch.load(weights_only=True)`` (``CheckpointError``, ``UnpicklingError``)
5     the file system: disk full, read-only folder, permission denied, a FIFO with no writer, a file in
      the way of a folder (``OSError``; the message names the path)
6     training diverged: a non-finite loss with ``on_nonfinite_loss="stop"``, or more skipped steps than
      ``train.max_nonfinite_fraction`` allows (``NonFiniteLossError``)
130   interrupted (Ctrl-C)
====  ==========================================================================================
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import pickle
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from mowe.errors import (
    AudioLoadError,
    CheckpointError,
    ConfigError,
    ManifestError,
    MoWEInputError,
    NonFiniteLossError,
)
from mowe.io import strip_ansi
from mowe.tensors import DTYPES
from mowe.validation import LORA_SCALE, MAX_SEED, int_at_least, int_in, real_in

__all__ = [
    "DEPENDENCY_WARNINGS",
    "EXIT_CHECKPOINT",
    "EXIT_CONFIG",
    "EXIT_DATA",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_IO",
    "EXIT_NONFINITE",
    "add_debug_flag",
    "check_flags",
    "describe",
    "quiet_dependency_warnings",
    "run_command",
    "add_allow_components_arg",
    "add_generation_args",
]

EXIT_INTERNAL, EXIT_CONFIG, EXIT_DATA, EXIT_CHECKPOINT, EXIT_IO, EXIT_NONFINITE = 1, 2, 3, 4, 5, 6
EXIT_INTERRUPTED = 130

# The subcommands' numeric flags, checked by the rules of mowe.validation (the same rule where a config holds
# the same value: --seed as train.seed, --lora-scale as a stage's lora_scale).
_FLAG_RULES = {
    **{
        attr: (flag, int_at_least(attr, lo))
        for attr, (flag, lo) in {
            "max_new_tokens": ("--max-new-tokens", 1),
            "num_beams": ("--num-beams", 1),
            "batch_size": ("--batch-size", 1),
            "workers": ("--workers", 1),
            "size": ("--size", 1),
            "num_heads": ("--num-heads", 1),
            "lora_alpha": ("--lora-alpha", 1),
            "audio_token_id": ("--audio-token-id", 0),
            "windows_per_batch": ("--windows-per-batch", 1),
        }.items()
    },
    "port": ("--port", int_in("port", 0, 65535)),
    "seed": ("--seed", int_in("seed", 0, MAX_SEED)),
    "max_wait_ms": ("--max-wait-ms", real_in("max_wait_ms", 0, math.inf)),
    "lora_scale": ("--lora-scale", LORA_SCALE),
    "max_audio_seconds": ("--max-audio-seconds", real_in("max_audio_seconds", 0, math.inf, lo_open=True)),
}


# Warnings a user of the command line cannot act on: deprecations inside mowe's dependencies, raised by one
# dependency reading another's deprecated API. Each is filtered by its category, the module it is attributed
# to and its message, so nothing else is hidden; mowe's own calls use the current APIs.
DEPENDENCY_WARNINGS = (
    # peft's get_peft_model reads transformers' deprecated PreTrainedModel.is_gradient_checkpointing property.
    (FutureWarning, r"transformers\.modeling_utils", r"`is_gradient_checkpointing` is deprecated"),
)


def quiet_dependency_warnings() -> None:
    """Ignore :data:`DEPENDENCY_WARNINGS` in this process (the ``mowe`` command calls it; the library does
    not)."""
    import warnings

    for category, module, message in DEPENDENCY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def check_flags(args: argparse.Namespace) -> None:
    """The subcommand's numeric flags are in range (``--max-new-tokens 0`` is an error naming the flag).

    Raises:
        ConfigError: ``"--num-beams: must be an integer >= 1, got 0"``.
    """
    for attr, (flag, rule) in _FLAG_RULES.items():
        value = getattr(args, attr, None)
        if value is not None:
            rule.check(value, flag)


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """``--debug`` (print tracebacks) on the parser and on every subcommand, before or after the command."""
    parser.add_argument("--debug", action="store_true", help="print the traceback of a failure")
    _add_debug_to_subcommands(parser)


def _add_debug_to_subcommands(parser: argparse.ArgumentParser) -> None:
    """``--debug`` on every subcommand at any depth (``mowe corpus build --debug``), not overriding the
    top's."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if not any("--debug" in a.option_strings for a in sub._actions):
                    sub.add_argument(
                        "--debug",
                        action="store_true",
                        default=argparse.SUPPRESS,
                        help="print the traceback of a failure",
                    )
                _add_debug_to_subcommands(sub)


def _os_message(e: OSError) -> str:
    path = e.filename if e.filename is not None else None
    named = f"'{os.fsdecode(path)}'" if path is not None else "(the system named no file)"
    reason = strip_ansi(e.strerror or str(e))
    if e.errno == errno.ENOSPC:
        return f"no space left on the device while writing {named}; free some space and resume"
    if e.errno == errno.EROFS:
        return f"cannot write {named}: the file system is read-only"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied: {named}"
    if e.errno in (errno.EEXIST, errno.ENOTDIR):
        return f"cannot create the folder {named}: a file is in the way ({reason})"
    if e.errno == errno.ENOENT:
        return f"no such file or folder: {named}"
    return f"{named}: {reason}"


def describe(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one-line message for ``exc`` (see the module docstring for the codes)."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    msg = strip_ansi(str(exc)).strip() or type(exc).__name__
    if isinstance(exc, (ManifestError, AudioLoadError)):
        return EXIT_DATA, msg
    if isinstance(exc, CheckpointError):
        return EXIT_CHECKPOINT, msg
    if isinstance(exc, pickle.UnpicklingError):
        return EXIT_CHECKPOINT, f"a checkpoint file was refused by torch.load(weights_only=True): {msg}"
    if isinstance(exc, (ConfigError, MoWEInputError)):
        return EXIT_CONFIG, msg
    if isinstance(exc, NonFiniteLossError):
        return EXIT_NONFINITE, msg
    if isinstance(exc, OSError):
        return EXIT_IO, _os_message(exc)
    if isinstance(exc, MemoryError):
        return EXIT_IO, "out of memory"
    return EXIT_INTERNAL, (
        f"internal error: {type(exc).__name__}: {msg} (rerun with --debug for the traceback "
        f"and please report it)"
    )


def _one_line(text: str) -> str:
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else text
    return lines[0] + "\n" + "\n".join("  " + ln.lstrip() for ln in lines[1:])


def run_command(
    command: str, fn: Callable[[], Any], *, debug: bool = False, printer: Callable[[str], None] | None = None
) -> int:
    """Run ``fn()`` and turn any failure into ``mowe <command>: error: ...`` on stderr and an exit code."""
    debug = debug or os.environ.get("MOWE_DEBUG", "") not in ("", "0")
    say = printer or (lambda s: print(s, file=sys.stderr, flush=True))
    try:
        return int(fn() or 0)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - every failure becomes one message and an exit code
        code, msg = describe(e)
        if debug:
            traceback.print_exc(file=sys.stderr)
        say(f"mowe {command}: error: {_one_line(msg)}")
        return code


def exit_codes_table() -> Sequence[tuple[int, str]]:
    """``(code, meaning)`` pairs, as documented above (the README lists the same)."""
    return [
        (0, "success"),
        (EXIT_INTERNAL, "internal error (a bug)"),
        (EXIT_CONFIG, "configuration or usage"),
        (EXIT_DATA, "manifest or audio"),
        (EXIT_CHECKPOINT, "checkpoint or saved model"),
        (EXIT_IO, "file system (disk full, read-only, permission, special file)"),
        (EXIT_NONFINITE, "non-finite loss / skip budget"),
        (EXIT_INTERRUPTED, "interrupted"),
    ]


def add_allow_components_arg(p: argparse.ArgumentParser) -> None:
    """``--allow-components PKG`` (repeatable): packages outside mowe a saved model's config may name."""
    p.add_argument(
        "--allow-components",
        action="append",
        metavar="PKG",
        default=None,
        help="allow the saved model's config to build components from this package (and its "
        "submodules); importing it runs its code. Repeatable",
    )


def add_generation_args(p: argparse.ArgumentParser, *, max_new_tokens: int | None) -> None:
    """The options ``mowe infer`` and ``mowe eval`` share: --processor, --max-new-tokens, --num-beams,
    --device, --dtype (generation settings left unset come from the model's saved generation_config.json)."""
    p.add_argument("--processor", default=None, help="processor folder (default: the model folder)")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=max_new_tokens,
        help="default: the model's generation config" if max_new_tokens is None else None,
    )
    p.add_argument("--num-beams", type=int, default=None, help="default: the model's generation config")
    p.add_argument("--device", default="cpu", help="torch device to run on, e.g. cuda:0 (default: cpu)")
    p.add_argument(
        "--dtype",
        default=None,
        choices=list(DTYPES),
        help="cast the LLM and the connector (default: as saved)",
    )

"""Exception types raised by mowe.

Every error a user can cause with bad input is a subclass of :class:`ValueError`, so
``except ValueError`` catches them all, and each message names the argument, sample,
file or manifest line that is wrong.
"""

from __future__ import annotations

__all__ = [
    "AudioLoadError",
    "AudioPlaceholderError",
    "AudioTooLongError",
    "CheckpointError",
    "ConfigError",
    "ManifestError",
    "MissingExtraError",
    "MoWEInputError",
    "NonFiniteLossError",
]


class MoWEInputError(ValueError):
    """A tensor or argument handed to a mowe module is malformed (names the argument or sample)."""


class AudioLoadError(ValueError):
    """An audio file could not be read or is not usable audio (names the file)."""


class AudioTooLongError(AudioLoadError):
    """A clip is longer than the configured maximum duration (names the limit, the clip's duration and its
    file).

    Attributes:
        limit_seconds: the maximum that was exceeded (``MoWEProcessor(max_duration_seconds=...)``, ``mowe
            serve --max-audio-seconds``).
        duration_seconds: the clip's duration as far as it is known (a header's claim, or the audio decoded
            before the limit was crossed: then at least this long).
        source: the file or argument the clip came from.
    """

    def __init__(self, message: str, *, limit_seconds: float, duration_seconds: float, source: str):
        super().__init__(message)
        self.limit_seconds, self.duration_seconds, self.source = limit_seconds, duration_seconds, source


class ManifestError(ValueError):
    """A line of a JSONL manifest is malformed (names the manifest and the line number)."""


class ConfigError(ValueError):
    """A configuration file or dict is invalid, e.g. an unknown key (names the key)."""


class MissingExtraError(ConfigError):
    """A feature needs an optional dependency that is not installed (names the ``mowe[extra]`` to install)."""


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated or tampered with (names the file)."""


class AudioPlaceholderError(ConfigError):
    """The audio placeholder token is one that text can produce (an ordinary vocabulary piece, or a token the
    tokenizer inserts itself): a prompt could then hold more placeholders than clips (names the token and
       id)."""


class NonFiniteLossError(RuntimeError):
    """Training met a NaN/Inf loss or gradient norm with ``on_nonfinite_loss="stop"``."""

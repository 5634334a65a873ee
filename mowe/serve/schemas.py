"""Requests of the OpenAI Chat Completions API with audio input: checked, decoded, turned into model inputs.

Shape legend: ``s`` audio samples (16 kHz mono).

Everything a client sends passes through :func:`parse_chat_request`; anything wrong raises :class:`ApiError`
with a 4xx status and a message naming the field (``messages[0].content[1].input_audio.data``), rendered in
the OpenAI error shape ``{"error": {"message", "type", "param", "code"}}``. Audio arrives only as base64
bytes: the server never opens a path or URL a client names.

Example:
    >>> body = json_body(body)  # doctest: +SKIP
    >>> req = parse_chat_request(body, processor=proc, limits=Limits(), model_name="tiny")  # doctest: +SKIP
    >>> req.input_ids[:3], [c.shape for c in req.clips]  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from mowe.data.audio_stream import audio_too_long, stream_audio
from mowe.errors import AudioLoadError, AudioTooLongError, MoWEInputError

__all__ = [
    "SUPPORTED_FORMATS",
    "TOKENIZER_LOCK",
    "ApiError",
    "ChatRequest",
    "Limits",
    "decode_audio",
    "json_body",
    "parse_chat_request",
    "sniff_duration",
    "too_long_error",
]

# Requests are parsed in a thread pool while the model thread decodes answers: one tokenizer, used by one
# thread at a time (a fast tokenizer may refuse a call while another thread holds it: "Already borrowed").
TOKENIZER_LOCK = threading.Lock()
# What libsndfile decodes by content (see mowe.data.audio); "ogg" covers Vorbis and Opus.
SUPPORTED_FORMATS = ("wav", "mp3", "flac", "ogg")
# Parameters of the Chat Completions API this server does not implement: refused rather than ignored, so a
# client never believes a constraint was applied.
_UNSUPPORTED = (
    "tools",
    "functions",
    "tool_choice",
    "function_call",
    "response_format",
    "logprobs",
    "top_logprobs",
    "stop",
    "audio",
    "logit_bias",
    "prediction",
)


class ApiError(Exception):
    """An error answered in the OpenAI shape with an HTTP status (4xx: the client's fault)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server.

    Attributes:
        max_body_bytes: request body cap (checked before decoding; 413 above it).
        max_audio_seconds: longest clip (413 above it, from the file's header before any sample is decoded);
            max_clips: audio parts per request.
        window_seconds: a clip longer than this is decoded window by window and sent to the model as
            consecutive windows of this length, one placeholder each (the processor's ``max_audio_seconds``;
            None: whole).
        min_samples: shortest clip the model's encoders take (16 kHz samples).
        max_prompt_tokens: text tokens of the prompt; max_tokens: cap of ``max_tokens``;
        default_max_tokens: used when the request gives none; max_n: most choices per request.
    """

    max_body_bytes: int = 32 * 2**20
    max_audio_seconds: float = 600.0
    max_clips: int = 4
    window_seconds: float | None = 30.0
    min_samples: int = 400
    max_prompt_tokens: int = 2048
    max_tokens: int = 512
    default_max_tokens: int = 128
    max_n: int = 8


@dataclass
class ChatRequest:
    """A checked request: prompt ids (one placeholder per clip), the clips ``(s,)``, decoding settings.

    A long audio part is several clips (its windows, see :attr:`Limits.window_seconds`) with as many
    placeholders in a row; ``windows`` says how many each part has.

    ``temperature == 0`` is greedy decoding (the default here, so answers are reproducible); ``n`` choices are
    sampled from one encoding of the clips.
    """

    model: str
    input_ids: list[int]
    clips: list[torch.Tensor]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    prompt: str = field(default="", repr=False)
    windows: list[int] = field(default_factory=list)

    @property
    def sampling(self) -> tuple[float, float] | None:
        """``(temperature, top_p)``, or None for greedy decoding: requests batch together only when equal."""
        return None if self.temperature == 0 else (self.temperature, self.top_p)


def json_body(body: bytes) -> dict[str, Any]:
    """Parse a request body as a JSON object (400 otherwise)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise ApiError(
            400, f"the request body is not valid JSON ({str(e)[:200]})", code="invalid_json"
        ) from e
    if not isinstance(data, dict):
        raise ApiError(
            400, f"the request body must be a JSON object, got {type(data).__name__}", code="invalid_json"
        )
    return data


def decode_audio(data: Any, fmt: Any, *, where: str, limits: Limits) -> list[torch.Tensor]:
    """Base64 ``data`` of a ``fmt`` file -> its windows, ``(s_i,)`` float32 mono at 16 kHz each (one window
    unless the clip is longer than ``limits.window_seconds``), decoded window by window
    (:func:`mowe.data.audio_stream.stream_audio`).

    The bytes go to a private temporary file (libsndfile reads files); nothing the client sends names a path.
    The clip's duration is checked on the file's header before any sample is decoded, and again on the samples
    (a compressed file's header only estimates its length).

    Raises:
        ApiError: 413 (``audio_too_long``) for a clip past ``limits.max_audio_seconds``, naming the limit and
            the clip's duration; 400 for an unsupported format, bad base64, empty or undecodable audio, a clip
            too short.
    """
    if not isinstance(fmt, str) or fmt.lower() not in SUPPORTED_FORMATS:
        raise ApiError(
            400,
            f"{where}.format: unsupported audio format {fmt!r}; supported: {', '.join(SUPPORTED_FORMATS)}",
            param=f"{where}.format",
            code="unsupported_format",
        )
    if not isinstance(data, str):
        raise ApiError(400, f"{where}.data must be a base64 string", param=f"{where}.data")
    if data.startswith("data:") and "," in data[:200]:  # a data URL, as browsers write them
        data = data.split(",", 1)[1]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ApiError(
            400, f"{where}.data is not valid base64 ({e})", param=f"{where}.data", code="invalid_audio"
        ) from e
    if not raw:
        raise ApiError(400, f"{where}.data is empty: no audio", param=f"{where}.data", code="invalid_audio")
    fd, path = tempfile.mkstemp(prefix="mowe-serve-", suffix="." + fmt.lower())
    option = "--max-audio-seconds"
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        del raw
        window = limits.window_seconds or limits.max_audio_seconds
        waves = list(
            stream_audio(
                path, window_seconds=window, max_duration_seconds=limits.max_audio_seconds, option=option
            )
        )
    except AudioTooLongError as e:
        msg = str(e).replace(f"audio file '{path}'", "the audio").replace(path, "the audio")
        raise ApiError(413, f"{where}: {msg}", param=f"{where}.data", code="audio_too_long") from e
    except AudioLoadError as e:
        msg = str(e).replace(f"audio file '{path}'", "the audio").replace(path, "the audio")
        raise ApiError(400, f"{where}: {msg}", param=f"{where}.data", code="invalid_audio") from e
    finally:
        os.unlink(path)
    total = sum(w.shape[0] for w in waves)
    if total < limits.min_samples:
        raise ApiError(
            400,
            f"{where}: the audio is {total / 16000:.4f} s long, shorter than the "
            f"{limits.min_samples / 16000:.4f} s this model's encoders need",
            param=f"{where}.data",
            code="audio_too_short",
        )
    if waves[-1].shape[0] < limits.min_samples:  # a tail of a few ms: padded with silence to min_samples
        waves[-1] = torch.nn.functional.pad(waves[-1], (0, limits.min_samples - waves[-1].shape[0]))
    return waves


_DATA_KEY = re.compile(rb'"data"\s*:\s*"(?:data:[^,"]{0,100},)?([A-Za-z0-9+/]{16,})')


def sniff_duration(prefix: bytes) -> float | None:
    """The duration of the first audio part of a request body, read from the start of the body alone, or None.

    Looks for the first ``"data": "<base64>"`` in the JSON text and reads the header at the start of that
    base64: a WAV's ``fmt `` byte rate and ``data`` chunk size, or a FLAC's STREAMINFO sample count and rate.
    Other formats (MP3, Ogg), headers that do not state a length, or too short a prefix give None; then the
    duration is checked once the body is in (:func:`decode_audio`). Lets the server refuse a too-long upload
    with a 413 after its first few kilobytes instead of after the whole body.
    """
    m = _DATA_KEY.search(prefix)
    if m is None:
        return None
    b64 = m.group(1)
    try:
        head = base64.b64decode(b64[: len(b64) // 4 * 4])
    except (binascii.Error, ValueError):
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        pos, byte_rate = 12, None
        while pos + 8 <= len(head):
            tag, size = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
            if tag == b"fmt " and pos + 20 <= len(head):
                byte_rate = int.from_bytes(head[pos + 16 : pos + 20], "little")
            elif tag == b"data":
                return size / byte_rate if byte_rate else None
            pos += 8 + size + (size & 1)
        return None
    if head[:4] == b"fLaC" and len(head) >= 26 and head[4] & 0x7F == 0:  # STREAMINFO comes first
        info = int.from_bytes(head[18:26], "big")  # rate 20 bits, channels 3, bits 5, total samples 36
        rate, total = info >> 44, info & ((1 << 36) - 1)
        return total / rate if rate and total else None
    return None


def too_long_error(duration: float, limit: float) -> ApiError:
    """The 413 for a clip found past ``--max-audio-seconds`` from the start of the body
    (:func:`sniff_duration`; the same words as :func:`decode_audio`'s, which names the part)."""
    err = audio_too_long("the first audio part", duration, limit, option="--max-audio-seconds")
    return ApiError(413, f"messages: {err}", param="messages", code="audio_too_long")


def _number(body: dict, key: str, default: float, lo: float, hi: float, *, integer: bool = False) -> Any:
    value = body.get(key)
    if value is None:
        return default
    kind = int if integer else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, kind)
        or not math.isfinite(value)
        or not lo <= value <= hi
    ):
        what = "an integer" if integer else "a number"
        raise ApiError(400, f"{key} must be {what} in [{lo}, {hi}], got {json.dumps(value)[:50]}", param=key)
    return value


def _audio_parts(messages: list) -> list[tuple[str, Any, Any]]:
    """``(where, data, format)`` of every input_audio part, in reading order."""
    found = []
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "input_audio":
                where = f"messages[{i}].content[{j}].input_audio"
                audio = part.get("input_audio")
                if not isinstance(audio, dict):
                    raise ApiError(400, f"{where} must be an object with 'data' and 'format'", param=where)
                found.append((where, audio.get("data"), audio.get("format")))
    return found


def parse_chat_request(
    body: dict[str, Any], *, processor: Any, limits: Limits, model_name: str
) -> ChatRequest:
    """Check a Chat Completions body and build the model inputs (the prompt is
    ``processor.apply_chat_template``).

    Raises:
        ApiError: 400 for anything malformed (naming the field), 404 for another model's name.
    """
    model = body.get("model", model_name)
    if not isinstance(model, str):
        raise ApiError(400, "model must be a string", param="model")
    if model != model_name:
        raise ApiError(
            404,
            f"the model {model!r} does not exist; this server serves {model_name!r}",
            type="invalid_request_error",
            param="model",
            code="model_not_found",
        )
    for key in _UNSUPPORTED:
        if body.get(key) not in (None, False, [], {}):
            raise ApiError(
                400,
                f"the parameter {key!r} is not supported by this server",
                param=key,
                code="unsupported_parameter",
            )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list", param="messages")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _number(
        {key: max_tokens}, key, limits.default_max_tokens, 1, limits.max_tokens, integer=True
    )
    temperature = float(_number(body, "temperature", 0.0, 0.0, 2.0))
    top_p = float(_number(body, "top_p", 1.0, 0.0, 1.0))
    n = _number(body, "n", 1, 1, limits.max_n, integer=True)
    if top_p == 0.0:
        raise ApiError(400, "top_p must be greater than 0", param="top_p")
    if n > 1 and temperature == 0:
        raise ApiError(400, "n > 1 needs temperature > 0: greedy decoding gives one answer", param="n")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "stream must be true or false", param="stream")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise ApiError(400, "stream_options must be an object", param="stream_options")
    parts = _audio_parts(messages)
    if not parts:
        raise ApiError(
            400,
            "the messages hold no input_audio part; this model answers about audio",
            param="messages",
            code="no_audio",
        )
    if len(parts) > limits.max_clips:
        raise ApiError(
            400,
            f"the messages hold {len(parts)} audio clips, more than this server's limit of "
            f"{limits.max_clips}",
            param="messages",
            code="too_many_clips",
        )
    try:
        with TOKENIZER_LOCK:
            prompt = processor.apply_chat_template(messages)
    except MoWEInputError as e:
        raise ApiError(400, str(e), param="messages") from e
    if len(prompt) > 16 * limits.max_prompt_tokens:  # cheap bound before tokenizing a huge text
        raise ApiError(
            400,
            f"the prompt text is {len(prompt)} characters, too long",
            param="messages",
            code="prompt_too_long",
        )
    with TOKENIZER_LOCK:
        ids = list(processor.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if len(ids) > limits.max_prompt_tokens:
        raise ApiError(
            400,
            f"the prompt is {len(ids)} text tokens, more than this server's limit of "
            f"{limits.max_prompt_tokens}",
            param="messages",
            code="prompt_too_long",
        )
    if ids.count(processor.audio_token_id) != len(parts):
        raise ApiError(
            400,
            f"the prompt holds {ids.count(processor.audio_token_id)} audio placeholders for "
            f"{len(parts)} audio parts",
            param="messages",
        )
    windows = [decode_audio(data, fmt, where=where, limits=limits) for where, data, fmt in parts]
    audio_id = processor.audio_token_id
    if any(len(w) > 1 for w in windows):  # a long part: one placeholder per window, in a row
        counts, expanded = iter([len(w) for w in windows]), []
        for t in ids:
            expanded.extend([t] * next(counts) if t == audio_id else [t])
        ids = expanded
    return ChatRequest(
        model=model,
        input_ids=ids,
        clips=[c for w in windows for c in w],
        max_tokens=int(max_tokens),
        temperature=temperature,
        top_p=top_p,
        n=int(n),
        stream=stream,
        include_usage=bool(opts.get("include_usage")),
        prompt=prompt,
        windows=[len(w) for w in windows],
    )

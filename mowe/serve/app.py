"""The HTTP server: OpenAI Chat Completions with audio input, ``/v1/models``, ``/health`` and a web page at
``/``.

Routes:

* ``POST /v1/chat/completions`` -- ``messages`` with ``input_audio`` parts (base64 ``data`` + ``format``) and
  text parts; ``max_tokens`` / ``max_completion_tokens``, ``temperature`` (default 0: greedy), ``top_p``,
  ``n``, ``stream`` (server-sent events, ``data: [DONE]`` last). Answers carry a ``mowe`` object with the
  router's choice per clip (selected weak encoders and their gates).
* ``GET /v1/models``, ``GET /health`` (queue length and batching counters), ``GET /`` and ``/static/<asset>``.

Every error is JSON in the OpenAI shape. The body is capped before it is parsed (413), so is a clip's duration
(413 from the file's header, before its samples are decoded; ``--max-audio-seconds``; for a WAV or FLAC first
audio part already from the body's first kilobytes, so the rest of the upload is not kept), a request has a
deadline (408 while its body arrives, 504 while it waits for the model), and a client that leaves frees its
place in the queue.

Example:
    >>> app = create_app(model=model, processor=proc, model_name="tiny")   # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)                      # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from mowe.serve.batching import DynamicBatcher
from mowe.serve.engine import Engine, Job
from mowe.serve.schemas import ApiError, Limits, json_body, parse_chat_request, sniff_duration, too_long_error

__all__ = ["create_app"]

_ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


def _error(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


# How much of a body's start is searched for its first audio part's header (:func:`sniff_duration`).
_SNIFF_BYTES = 1 << 16


async def _read_body(request: Request, limit: int, max_audio_seconds: float | None = None) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes, or, from the
    header of its first audio part (a WAV or FLAC one, within the first 64 KB), to hold a clip past
    ``max_audio_seconds``: such an upload is then read to its end but not kept (at most its first 64 KB were),
    and refused."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "the Content-Length header is not a number")
        if int(declared) > limit:
            raise ApiError(
                413,
                f"the request body is {int(declared)} bytes, more than this server's limit of "
                f"{limit} bytes (--max-body-mb)",
                code="body_too_large",
            )
    chunks, size, sniffed, refused = [], 0, max_audio_seconds is None, None
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(
                413,
                f"the request body is more than this server's limit of {limit} bytes (--max-body-mb)",
                code="body_too_large",
            )
        if refused is not None:
            continue  # the rest of a refused upload is read and dropped: nothing more is kept
        chunks.append(chunk)
        if not sniffed and size >= 4096:
            seconds = sniff_duration(b"".join(chunks)[:_SNIFF_BYTES])
            sniffed = seconds is not None or size >= _SNIFF_BYTES
            if seconds is not None and seconds > max_audio_seconds + 1e-9:
                refused, chunks = too_long_error(seconds, max_audio_seconds), []
    if refused is not None:
        # Answered once the client has sent its body (it reads the 413 then, instead of a reset connection).
        raise refused
    return b"".join(chunks)


class _Server:
    """Request handlers around one :class:`DynamicBatcher` (the model is loaded once, by the caller)."""

    def __init__(
        self, batcher: DynamicBatcher, *, processor: Any, model_name: str, limits: Limits, timeout: float
    ):
        self.batcher, self.processor, self.model_name = batcher, processor, model_name
        self.limits, self.timeout, self.created = limits, timeout, int(time.time())
        self.assets = {
            n: (resources.files("mowe.serve").joinpath("static", n).read_bytes(), t)
            for n, t in _ASSETS.items()
        }

    async def page(self, request: Request) -> Response:
        name = request.path_params.get("name", "index.html")
        if name not in self.assets:  # a fixed set of names: no client string reaches the filesystem
            raise ApiError(404, f"no asset {name[:100]!r}", code="not_found")
        body, kind = self.assets[name]
        return Response(body, media_type=kind, headers={"cache-control": "no-cache"})

    async def health(self, request: Request) -> Response:
        s = self.batcher.stats
        return JSONResponse(
            {
                "status": "ok",
                "model": self.model_name,
                "queued": self.batcher.queued,
                "batches": s.batches,
                "requests": s.requests,
                "rows": s.rows,
                "largest_batch": s.largest_batch,
                "cancelled": s.cancelled,
                "failed": s.failed,
                "max_batch": self.batcher.max_batch,
            }
        )

    async def models(self, request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "mowe"}
                ],
            }
        )

    async def chat(self, request: Request) -> Response:
        deadline = time.monotonic() + self.timeout
        try:
            body = await asyncio.wait_for(
                _read_body(request, self.limits.max_body_bytes, self.limits.max_audio_seconds), self.timeout
            )
        except asyncio.TimeoutError:  # noqa: UP041 - not the builtin before Python 3.11
            raise ApiError(
                408, f"the request body did not arrive within {self.timeout:g} s", code="timeout"
            ) from None
        payload = json_body(body)
        del body
        req = await run_in_threadpool(
            parse_chat_request,
            payload,
            processor=self.processor,
            limits=self.limits,
            model_name=self.model_name,
        )
        job = Job(req, asyncio.get_running_loop())
        self.batcher.submit(job)
        meta = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "created": int(time.time()),
            "model": self.model_name,
        }
        if req.stream:
            return StreamingResponse(
                self._sse(job, meta, deadline),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
            )
        return await self._complete(request, job, meta, deadline)

    async def _next(self, job: Job, deadline: float) -> tuple:
        try:
            return await asyncio.wait_for(job.events.get(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:  # noqa: UP041 - not the builtin before Python 3.11
            self.batcher.cancel(job)
            raise ApiError(
                504,
                f"the answer did not come within the request timeout of {self.timeout:g} s (--timeout)",
                type="server_error",
                code="timeout",
            ) from None

    async def _complete(self, request: Request, job: Job, meta: dict, deadline: float) -> Response:
        async def watch() -> None:  # the body is read: the next message is the client leaving
            while (await request.receive())["type"] != "http.disconnect":
                pass
            self.batcher.cancel(job)

        watcher = asyncio.ensure_future(watch())
        route: list = []
        try:
            while True:
                event = await self._next(job, deadline)
                if event[0] == "route":
                    route = event[1]
                elif event[0] == "error":
                    raise event[1]
                elif event[0] == "done":
                    break
        finally:
            watcher.cancel()
        choices, prompt_tokens = event[1], event[2]
        used = sum(len(c.token_ids) for c in choices)
        return JSONResponse(
            {
                **meta,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": c.index,
                        "message": {"role": "assistant", "content": c.text},
                        "finish_reason": c.finish_reason,
                    }
                    for c in choices
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": used,
                    "total_tokens": prompt_tokens + used,
                },
                "mowe": {"router": route},
            }
        )

    async def _sse(self, job: Job, meta: dict, deadline: float):
        def chunk(choices: list, **extra) -> str:
            return (
                "data: "
                + json.dumps({**meta, "object": "chat.completion.chunk", "choices": choices, **extra})
                + "\n\n"
            )

        n, sent = job.request.n, [""] * job.request.n
        try:
            route = None
            while route is None:  # the route comes first: the role chunks carry it
                event = await self._next(job, deadline)
                if event[0] == "error":
                    raise event[1]
                route = event[1]
            yield chunk(
                [
                    {"index": k, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                    for k in range(n)
                ],
                mowe={"router": route},
            )
            while True:
                event = await self._next(job, deadline)
                if event[0] == "delta":
                    sent[event[1]] += event[2]
                    yield chunk([{"index": event[1], "delta": {"content": event[2]}, "finish_reason": None}])
                elif event[0] == "error":
                    raise event[1]
                else:
                    break
            choices, prompt_tokens = event[1], event[2]
            for c in choices:
                rest = c.text[len(sent[c.index]) :] if c.text.startswith(sent[c.index]) else ""
                yield chunk(
                    [
                        {
                            "index": c.index,
                            "delta": {"content": rest} if rest else {},
                            "finish_reason": c.finish_reason,
                        }
                    ]
                )
            if job.request.include_usage:
                used = sum(len(c.token_ids) for c in choices)
                yield chunk(
                    [],
                    usage={
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": used,
                        "total_tokens": prompt_tokens + used,
                    },
                )
            yield "data: [DONE]\n\n"
        except ApiError as e:  # the status line is sent: report in the stream
            yield "data: " + json.dumps(e.body()) + "\n\n"
        finally:  # also when the client disconnected and this generator was cancelled
            self.batcher.cancel(job)


async def _api_error(request: Request, exc: Exception) -> Response:
    return _error(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    kind = "invalid_request_error" if status < 500 else "server_error"
    code = {404: "not_found", 405: "method_not_allowed"}.get(status)
    return _error(
        ApiError(
            status,
            f"{request.method} {request.url.path[:200]}: {getattr(exc, 'detail', '')}",
            type=kind,
            code=code,
        )
    )


async def _server_error(request: Request, exc: Exception) -> Response:
    return _error(ApiError(500, f"internal error: {type(exc).__name__}", type="server_error"))


def create_app(
    *,
    model: Any,
    processor: Any,
    model_name: str,
    limits: Limits | None = None,
    max_batch: int = 8,
    max_wait_ms: float = 10.0,
    max_queue: int = 256,
    timeout: float = 120.0,
    device: Any = "cpu",
) -> Starlette:
    """The ASGI app serving ``model`` (already loaded, in eval mode, on ``device``) with ``processor``.

    Args:
        model: a :class:`~mowe.model.MoWEAudioLLM`.
        processor: its :class:`~mowe.data.processor.MoWEProcessor`.
        model_name: the id clients send as ``model``.
        limits: request limits (:class:`~mowe.serve.schemas.Limits`).
        max_batch, max_wait_ms, max_queue: dynamic batching (:class:`~mowe.serve.batching.DynamicBatcher`).
        timeout: seconds a request may take, body upload and answer together.
    """
    limits = limits or Limits()
    batcher = DynamicBatcher(
        Engine(model=model, processor=processor, device=device),
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
    )
    server = _Server(batcher, processor=processor, model_name=model_name, limits=limits, timeout=timeout)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        batcher.stop()

    routes = [
        Route("/", server.page),
        Route("/static/{name}", server.page),
        Route("/health", server.health),
        Route("/v1/models", server.models),
        Route("/v1/chat/completions", server.chat, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _server_error},
    )
    app.state.batcher = batcher
    return app

"""``mowe serve MODEL_DIR``: load a trained model once and serve it over HTTP (see :mod:`mowe.serve.app`)."""

from __future__ import annotations

import argparse
import os
import sys

from mowe.cli_errors import add_allow_components_arg
from mowe.inference import load_for_inference
from mowe.serve.app import create_app
from mowe.serve.schemas import Limits
from mowe.tensors import DTYPES

__all__ = ["add_serve_cli", "load_for_serving"]


def load_for_serving(
    path: str, *, device: str = "cpu", dtype: str | None = None, allow_components: list[str] | None = None
):
    """``(model, processor)`` from a ``mowe train`` output folder (or its ``final/``), the model in eval mode.

    ``dtype`` casts the LLM and the connector (the encoders keep their own precision). ``allow_components``:
    the packages outside mowe the saved config may name (see :mod:`mowe.components`).

    Raises:
        CheckpointError / ConfigError: no saved model or processor there (naming the file).
    """
    return load_for_inference(path, device=device, dtype=dtype, allow_components=allow_components)


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

    except ImportError as e:
        print(
            f"mowe serve: error: {e.name} is missing; install the serving extra: pip install 'mowe[serve]'",
            file=sys.stderr,
        )
        return 2
    model, processor = load_for_serving(
        args.model_dir, device=args.device, dtype=args.dtype, allow_components=args.allow_components
    )
    name = args.model_name or os.path.basename(os.path.normpath(args.model_dir)) or "mowe"
    limits = Limits(
        max_body_bytes=int(args.max_body_mb * 2**20),
        max_audio_seconds=args.max_audio_seconds,
        window_seconds=processor.max_audio_seconds,
        max_clips=args.max_clips,
        min_samples=int(model.min_samples),
        max_tokens=args.max_tokens_limit,
        default_max_tokens=min(args.default_max_tokens, args.max_tokens_limit),
    )
    app = create_app(
        model=model,
        processor=processor,
        model_name=name,
        limits=limits,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        timeout=args.timeout,
        device=args.device,
    )
    print(
        f"mowe serve: {name} on http://{args.host}:{args.port} (batches of up to {args.max_batch}, "
        f"wait {args.max_wait_ms:g} ms)",
        flush=True,
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        limit_concurrency=args.max_queue + 64,
        timeout_keep_alive=5,
    )
    return 0


def add_serve_cli(subparsers) -> None:
    """Add the ``serve`` command to the ``mowe`` argument parser's subparsers."""
    p = subparsers.add_parser(
        "serve", help="serve a trained model: OpenAI-compatible audio chat API + web page"
    )
    p.add_argument(
        "model_dir", metavar="MODEL_DIR", help="a `mowe train` output folder, or its final/ folder"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: localhost only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--model-name", default=None, help="the model id clients send (default: the folder's name)"
    )
    p.add_argument(
        "--max-batch", type=_positive(int), default=8, help="most answers generated in one model call"
    )
    p.add_argument(
        "--max-wait-ms", type=float, default=10.0, help="how long a request waits for others to batch with"
    )
    p.add_argument("--max-queue", type=_positive(int), default=256, help="waiting requests before 503")
    p.add_argument(
        "--timeout", type=_positive(float), default=120.0, help="seconds a request may take in all"
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--dtype", choices=list(DTYPES), default=None, help="precision of the LLM and connector")
    p.add_argument(
        "--max-body-mb",
        type=_positive(float),
        default=32.0,
        help="request body limit (413 above; 10 min of 16 kHz 16-bit WAV is 25.6 MB in base64)",
    )
    p.add_argument(
        "--max-audio-seconds",
        type=_positive(float),
        default=600.0,
        help="longest audio clip a request may hold, in seconds (default 600: 10 min; 413 above, "
        "checked on the file's header before decoding); longer clips than the processor's "
        "max_audio_seconds are decoded and encoded window by window",
    )
    p.add_argument("--max-clips", type=_positive(int), default=4, help="audio parts per request")
    p.add_argument("--max-tokens-limit", type=_positive(int), default=512, help="largest max_tokens accepted")
    p.add_argument(
        "--default-max-tokens", type=_positive(int), default=128, help="max_tokens when none is given"
    )
    add_allow_components_arg(p)
    p.add_argument(
        "--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug")
    )
    p.set_defaults(func=_cmd_serve)

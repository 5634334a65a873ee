"""Serving: ``mowe serve MODEL_DIR``, an OpenAI-compatible audio chat endpoint with dynamic batching and a web
page.

Needs the ``serve`` extra (``pip install "mowe[serve]"``: Starlette + uvicorn). Importing this package is
cheap; the server modules load when used.
"""

from __future__ import annotations

from mowe.serve.app import create_app
from mowe.serve.cli import add_serve_cli

__all__ = ["add_serve_cli", "create_app"]


def __getattr__(name: str):
    if name == "create_app":
        return create_app
    raise AttributeError(f"module 'mowe.serve' has no attribute {name!r}")

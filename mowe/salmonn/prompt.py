"""SALMONN's prompt format (arXiv 2310.13289, sec. 3): the audio tokens inside ``<Speech></Speech>`` in a
Vicuna-style user turn (``{audio}`` and ``{instruction}`` as in :mod:`mowe.data.templates`)."""

from __future__ import annotations

__all__ = ["PROMPT_TEMPLATE"]

PROMPT_TEMPLATE = "USER: <Speech>{audio}</Speech> {instruction}\nASSISTANT:"

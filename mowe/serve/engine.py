"""One batched model call for a group of requests: encode every clip once, generate, hand back tokens and
routing.

Shape legend: ``b`` the batch (text: one row per choice, so a request with ``n`` choices is ``n`` rows;
audio: one row per clip), ``s`` samples, ``n`` audio tokens.

Greedy batches that nobody streams go through :meth:`MoWEAudioLLM.generate` as it is (its prefill runs in
length groups), so a served answer is exactly what ``model.generate`` gives for that prompt. Streamed or
sampled batches pass a streamer and a per-row stopping criterion, which sends that call through transformers'
``generate``: rows are handed their tokens as they come, and a row whose client left or whose ``max_tokens``
is reached stops there.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from mowe.data.audio import pad_batch
from mowe.inference import ENCODE_BUDGET_SAMPLES, encode_windows
from mowe.model import AudioEncoding
from mowe.serve.schemas import TOKENIZER_LOCK, ChatRequest

__all__ = ["Choice", "Engine", "Job"]


@dataclass
class Choice:
    """One finished answer: ``token_ids`` (eos excluded), the decoded ``text``, ``finish_reason``
    stop/length."""

    index: int
    token_ids: list[int]
    text: str
    finish_reason: str


@dataclass(eq=False)
class Job:
    """A request in flight. The model thread reports to the request's event loop through ``events``:
    ``("route", list)``, ``("delta", choice_index, text)``, ``("done", list[Choice], prompt_tokens)``,
    ``("error", ApiError)``."""

    request: ChatRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def rows(self) -> int:
        return self.request.n

    def emit(self, *event: Any) -> None:
        """Thread-safe: queue an event for the request's coroutine (dropped when its loop is gone)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:
            pass


class _Rows:
    """Per-row bookkeeping of a streamed/sampled call: a transformers streamer and a stopping criterion.

    ``put`` receives each step's ``(b,)`` tokens; rows of streaming jobs get the newly decodable text. As a
    stopping criterion it marks rows done whose job was cancelled or reached its ``max_tokens``.
    """

    def __init__(self, owners: list[tuple[Job, int]], decode, eos: set[int]):
        self.owners, self.decode, self.eos = owners, decode, eos
        self.tokens: list[list[int]] = [[] for _ in owners]
        self.sent = [""] * len(owners)
        self.done = [False] * len(owners)

    # streamer protocol
    def put(self, value: torch.Tensor) -> None:
        if value.dim() != 1:  # the prompt ids, (b, 0) for an embeddings prompt
            return
        for r, tok in enumerate(value.tolist()):
            job, k = self.owners[r]
            if self.done[r]:
                continue
            if tok in self.eos or len(self.tokens[r]) >= job.request.max_tokens:
                self.done[r] = True
                continue
            self.tokens[r].append(tok)
            if job.request.stream and not job.cancelled.is_set():
                text = self.decode(self.tokens[r])
                if (
                    not text.endswith("\ufffd")
                    and text.startswith(self.sent[r])
                    and len(text) > len(self.sent[r])
                ):
                    job.emit("delta", k, text[len(self.sent[r]) :])
                    self.sent[r] = text

    def end(self) -> None:
        pass

    # stopping-criterion protocol: (b, generated) ids -> (b,) bool
    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs) -> torch.Tensor:
        stop = [
            job.cancelled.is_set() or input_ids.shape[1] >= job.request.max_tokens for job, _ in self.owners
        ]
        return torch.tensor(stop, dtype=torch.bool, device=input_ids.device)


class Engine:
    """Runs batches of :class:`Job` on one loaded model.

    Args:
        model: a :class:`~mowe.model.MoWEAudioLLM` in eval mode, on ``device``.
        processor: its :class:`~mowe.data.processor.MoWEProcessor`.
        device: where the clips go.
        windows_per_batch: clips (windows) encoded together when a batch holds more than
            :data:`~mowe.inference.ENCODE_BUDGET_SAMPLES` of audio (None: 1 on CPU, 8 on an accelerator).
    """

    def __init__(
        self,
        *,
        model: Any,
        processor: Any,
        device: torch.device | str = "cpu",
        windows_per_batch: int | None = None,
    ):
        self.model, self.processor, self.device = model, processor, torch.device(device)
        self.windows_per_batch = windows_per_batch
        pool = getattr(model, "weak_encoders", None)
        self.encoder_names = list(pool.names) if pool is not None else []
        eos = model.llm.generation_config.eos_token_id
        eos = processor.tokenizer.eos_token_id if eos is None else eos
        self.eos = {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}

    def _decode(self, ids: list[int]) -> str:
        with TOKENIZER_LOCK:
            return self.processor.decode([ids])[0]

    def _routes(self, enc: AudioEncoding, start: int, count: int) -> list[dict[str, Any]]:
        """The router's choice for clips ``start .. start+count``: selected encoders with their gates."""
        if enc.router is None:
            return []
        gates, idx = enc.router.gates.float().cpu(), enc.router.indices.cpu()
        out = []
        for c in range(start, start + count):
            chosen = [
                {"encoder": self.encoder_names[e], "gate": round(float(gates[c, e]), 6)}
                for e in idx[c].tolist()
            ]
            out.append(
                {
                    "clip": c - start,
                    "selected": chosen,
                    "gates": {n: round(float(gates[c, e]), 6) for e, n in enumerate(self.encoder_names)},
                }
            )
        return out

    @torch.no_grad()
    def run(self, jobs: list[Job]) -> list[tuple[list[Choice], int]]:
        """Encode the jobs' clips once and generate every row in one call.

        Routes and streamed text go to the jobs as they come; returns each job's choices and prompt length
        (text + audio tokens), for the caller to hand over as the ``"done"`` event.
        """
        clips = [c for job in jobs for c in job.request.clips]
        prompt = None
        if self.model.needs_prompt:  # a prompt-aware router reads each clip's own request (one row per job)
            own = self.processor.pad([job.request.input_ids for job in jobs], padding_side="left")
            prompt = self.model.prompt_embeddings(
                own["input_ids"].to(self.device), own["attention_mask"].to(self.device)
            )
        # Up to ENCODE_BUDGET_SAMPLES of audio in one encoder call (short clips: the whole batch, as before);
        # past it (long clips are many windows) a few windows at a time, so the encoders' memory stays that of
        # a few windows.
        if sum(c.shape[0] for c in clips) <= ENCODE_BUDGET_SAMPLES:
            waves, lengths = pad_batch(clips)
            enc = self.model.encode_audio(waves.to(self.device), lengths.to(self.device), prompt)
            del waves
        else:
            enc = encode_windows(
                self.model,
                clips,
                windows_per_batch=self.windows_per_batch,
                prompt_embeds=prompt,
                device=self.device,
            )
        rows, clip_rows, owners, first = [], [], [], 0
        audio_len = enc.lengths.tolist()
        prompt_tokens = []
        for job in jobs:
            count = len(job.request.clips)
            job.emit("route", self._routes(enc, first, count))
            prompt_tokens.append(len(job.request.input_ids) - count + sum(audio_len[first : first + count]))
            for k in range(job.request.n):
                rows.append(job.request.input_ids)
                clip_rows.extend(range(first, first + count))
                owners.append((job, k))
            first += count
        pick = torch.tensor(clip_rows, device=enc.lengths.device)
        audio = AudioEncoding(enc.embeds[pick], enc.lengths[pick], enc.router)
        batch = self.processor.pad(rows, padding_side="left")
        sampling = jobs[0].request.sampling
        kwargs: dict[str, Any] = {}
        if sampling is not None:
            kwargs.update(do_sample=True, temperature=sampling[0], top_p=sampling[1])
        tracker = None
        if sampling is not None or any(job.request.stream for job in jobs):
            from transformers import StoppingCriteriaList

            tracker = _Rows(owners, self._decode, self.eos)
            kwargs.update(streamer=tracker, stopping_criteria=StoppingCriteriaList([tracker]))
        ids = self.model.generate(
            batch["input_ids"].to(self.device),
            None,
            None,
            attention_mask=batch["attention_mask"].to(self.device),
            audio=audio,
            max_new_tokens=max(job.request.max_tokens for job in jobs),
            **kwargs,
        )
        results: dict[int, list[Choice]] = {}
        for r, row in enumerate(ids.tolist()):
            job, k = owners[r]
            row = row[: job.request.max_tokens]
            cut = next((i for i, t in enumerate(row) if t in self.eos), None)
            toks = row if cut is None else row[:cut]
            results.setdefault(id(job), []).append(
                Choice(k, toks, self._decode(toks), "length" if cut is None else "stop")
            )
        return [(results[id(job)], used) for job, used in zip(jobs, prompt_tokens)]

"""Loading a saved model for inference, as ``mowe infer``, ``mowe eval`` and ``mowe serve`` do, placing it on
a device in a dtype, and answering about long audio files in bounded memory.

Shape legend: ``b`` batch, one row per clip (a long file's windows are clips), ``s`` samples, ``n`` audio
tokens, ``d`` LLM width, ``e`` weak encoders.

Long files: :func:`encode_windows` encodes a stream of windows (e.g. :meth:`MoWEProcessor.stream_windows
<mowe.data.processor.MoWEProcessor.stream_windows>`, which decodes a file window by window) a few windows at a
time, keeping only each window's audio tokens; :func:`answer_audio_file` puts that in front of the LLM. What
is held at once is ``windows_per_batch`` windows of waveform and the encoders' intermediates on them, plus the
audio tokens of the whole file (``b x n x d`` floats: what the LLM must read anyway), never the whole
waveform.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from mowe.data.audio import pad_batch
from mowe.data.processor import MoWEProcessor
from mowe.errors import CheckpointError, MoWEInputError
from mowe.hub import looks_like_path
from mowe.model import AudioEncoding, MoWEAudioLLM
from mowe.tensors import DTYPES

__all__ = [
    "ENCODE_BUDGET_SAMPLES",
    "answer_audio_file",
    "encode_clips",
    "encode_windows",
    "find_model_dir",
    "load_for_inference",
    "place_model",
]

#: audio (16 kHz samples) :func:`encode_clips` hands the encoders in one call: 4 minutes, eight 30 s windows
ENCODE_BUDGET_SAMPLES = 8 * 30 * 16_000

#: windows of one file encoded together by :func:`encode_windows` when not given: one on a CPU (measured on 2
#: cores with the test suite's tiny model on 20 minutes: 1 window at a time 8.6 s and 656 MB peak RSS, 4 at a
#: time 11.7 s, all 40 at once 15.2 s and 2.3 GB), eight on an accelerator (where batching pays)
WINDOWS_PER_BATCH = {"cpu": 1, "other": 8}


def find_model_dir(path: str) -> str:
    """The saved model in ``path`` or ``path/final``; a hub id (``org/name``, no such local folder) as
    given."""
    for cand in (os.path.join(path, "final"), path):
        if os.path.isfile(os.path.join(cand, "config.json")) and os.path.isfile(
            os.path.join(cand, "model.safetensors")
        ):
            return cand
    if not os.path.exists(path) and not looks_like_path(path) and path.count("/") == 1:
        return path  # from_pretrained resolves hub ids (and names what it cannot find)
    raise CheckpointError(f"{path}: no saved model (config.json + model.safetensors) here or in {path}/final")


def load_for_inference(
    path: str | os.PathLike,
    *,
    device: str = "cpu",
    dtype: str | None = None,
    processor: str | os.PathLike | None = None,
    allow_components: Sequence[str] | None = None,
):
    """``(model, processor)`` as ``mowe infer``, ``mowe eval`` and ``mowe serve`` load them: the model of a
    ``mowe train`` output folder (or its ``final/``, or any folder ``save_pretrained`` wrote) through
    :meth:`MoWEAudioLLM.from_pretrained` (weights, ``llm_adapter/``, generation config), in eval mode on
    ``device`` (:func:`place_model` casts to ``dtype``), and the processor saved beside it (or in
    ``processor``).

    Raises:
        CheckpointError / ConfigError: no saved model or processor there (naming the file).
    """
    model_dir = find_model_dir(os.fspath(path))
    model = MoWEAudioLLM.from_pretrained(model_dir, allow_components=list(allow_components or ()))
    model = place_model(model, device=device, dtype=dtype).eval()
    return model, MoWEProcessor.from_pretrained(processor or model_dir)


def place_model(model, *, device: str = "cpu", dtype: str | None = None):
    """``--device`` / ``--dtype``: move ``model`` to ``device``; cast its LLM and connector to ``dtype`` (the
    encoders keep the precision their config gives them: ``EncoderConfig.dtype``). Returns the model."""
    model = model.to(device)
    if dtype is not None and dtype != "float32":
        for part in (model.llm, model.connector):
            part.to(DTYPES[dtype])
    return model


def _pad_cat(xs: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along dim 0, zero-padding the other dims to the largest (tensors with a clip axis
    first)."""
    shape = [max(x.shape[d] for x in xs) for d in range(1, xs[0].dim())]
    out = []
    for x in xs:
        pad: list[int] = []
        for d in range(x.dim() - 1, 0, -1):
            pad += [0, shape[d - 1] - x.shape[d]]
        out.append(F.pad(x, pad) if any(pad) else x)
    return torch.cat(out)


def _cat_routes(parts: list[Any]) -> Any:
    """Router outputs of consecutive groups of clips as one: per-clip tensors concatenated along the clip
    axis, scalars (the load-balance loss) averaged over the groups weighted by their clips; other fields from
    the first."""
    if not parts or any(p is None for p in parts):
        return None
    if len(parts) == 1:
        return parts[0]
    sizes = [int(p.gates.shape[0]) for p in parts]
    values = {}
    for f in dataclasses.fields(parts[0]):
        xs = [getattr(p, f.name) for p in parts]
        per_clip = all(
            isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] == n for x, n in zip(xs, sizes)
        )
        if per_clip:
            values[f.name] = _pad_cat(xs)
        elif isinstance(xs[0], torch.Tensor) and xs[0].dim() == 0:
            values[f.name] = sum(x * n for x, n in zip(xs, sizes)) / sum(sizes)
        else:
            values[f.name] = xs[0]
    return type(parts[0])(**values)


@torch.no_grad()
def encode_windows(
    model: MoWEAudioLLM,
    windows: Iterable[torch.Tensor],
    *,
    windows_per_batch: int | None = None,
    prompt_embeds: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> AudioEncoding:
    """Encode a stream of windows (clips) ``windows_per_batch`` at a time: :meth:`MoWEAudioLLM.encode_audio`
    of all of them, without holding them all.

    Each window is a clip of its own (one placeholder each, as the processor's ``"chunk"`` policy lays them
    out), so the result is ``model.encode_audio(*pad_batch(list(windows)))`` up to the float rounding of
    batching (bit for bit with ``windows_per_batch=1`` against clips encoded one by one).

    Args:
        model: the model (eval mode).
        windows: ``(s_i,)`` float32 16 kHz clips, e.g. ``processor.stream_windows(path)``; consumed lazily.
        windows_per_batch: windows encoded together (memory: that many windows' waveforms and encoder
            intermediates); None: :data:`WINDOWS_PER_BATCH` for the device (1 on CPU, where batching gains
            nothing, 8 on an accelerator).
        prompt_embeds: pooled prompt embeddings (:meth:`MoWEAudioLLM.prompt_embeddings`), required by a
            prompt-aware router: ``(d,)`` or ``(1, d)`` shared by every window, or ``(b, d)`` one per window.
        device: where the windows are encoded (default: the model's).

    Returns:
        An :class:`~mowe.model.AudioEncoding` over all ``b`` windows: ``embeds (b, n, d)`` (zeros past each
        window's ``lengths``), and the router's outputs concatenated along the clip axis (None for a base-only
        model).

    Raises:
        MoWEInputError: no windows, a bad ``windows_per_batch``, or a prompt-aware router without
            ``prompt_embeds``.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if windows_per_batch is None:
        windows_per_batch = WINDOWS_PER_BATCH["cpu" if device.type == "cpu" else "other"]
    if isinstance(windows_per_batch, bool) or not isinstance(windows_per_batch, int) or windows_per_batch < 1:
        raise MoWEInputError(f"windows_per_batch must be a positive int, got {windows_per_batch!r}")
    if model.needs_prompt and prompt_embeds is None:
        raise MoWEInputError("encode_windows: this model's router is prompt-aware; pass prompt_embeds")
    pe = None if prompt_embeds is None else prompt_embeds.to(device)
    if pe is not None and pe.dim() == 1:
        pe = pe[None]
    embeds: list[torch.Tensor] = []
    routes: list[Any] = []
    group: list[torch.Tensor] = []
    min_samples = int(model.min_samples)

    def flush() -> None:
        first = len(embeds)
        waves, lengths = pad_batch(group)
        group.clear()
        prompt = None
        if pe is not None and model.needs_prompt:
            prompt = pe.expand(waves.shape[0], -1) if pe.shape[0] == 1 else pe[first : first + waves.shape[0]]
        enc = model.encode_audio(waves.to(device), lengths.to(device), prompt)
        del waves
        embeds.extend(e[:n] for e, n in zip(enc.embeds, enc.lengths.tolist()))
        routes.append(enc.router)

    for i, w in enumerate(windows):
        if i and w.shape[-1] < min_samples:  # a tail window of a few ms: padded with silence to min_samples
            w = F.pad(w, (0, min_samples - w.shape[-1]))
        group.append(w)
        if len(group) == windows_per_batch:
            flush()
    if group:
        flush()
    if not embeds:
        raise MoWEInputError("encode_windows: no windows to encode")
    lengths = torch.tensor([e.shape[0] for e in embeds], dtype=torch.long, device=embeds[0].device)
    n = int(lengths.max())
    out = embeds[0].new_zeros(len(embeds), n, embeds[0].shape[-1])
    for i, e in enumerate(embeds):
        out[i, : e.shape[0]] = e
    return AudioEncoding(out, lengths, _cat_routes(routes))


@torch.no_grad()
def encode_clips(
    model: MoWEAudioLLM,
    waveforms: torch.Tensor,
    wave_lengths: torch.Tensor,
    prompt_embeds: torch.Tensor | None = None,
    *,
    budget_samples: int = ENCODE_BUDGET_SAMPLES,
) -> AudioEncoding:
    """``model.encode_audio`` of a padded batch ``(b, s)``, bounded: a batch of at most ``budget_samples`` of
    real audio is one call, exactly as before; a larger one (long clips chunked into many windows) goes
    through :func:`encode_windows` a few clips at a time, so the encoders' intermediates stay those of a few
    windows. ``mowe eval`` and ``mowe serve`` encode through this.

    ``prompt_embeds``: ``(b, d)`` for a prompt-aware router."""
    if int(wave_lengths.sum()) <= budget_samples:
        return model.encode_audio(waveforms, wave_lengths, prompt_embeds)
    clips = [w[:n] for w, n in zip(waveforms, wave_lengths.tolist())]
    return encode_windows(model, clips, prompt_embeds=prompt_embeds, device=waveforms.device)


@torch.no_grad()
def answer_audio_file(
    model: MoWEAudioLLM,
    processor: MoWEProcessor,
    audio: Any,
    prompt: str,
    *,
    length_policy: str | None = "chunk",
    windows_per_batch: int | None = None,
    read_frames: int | None = None,
    **generate_kwargs: Any,
) -> tuple[str, AudioEncoding]:
    """Answer ``prompt`` about one audio file (or array) of any length up to the processor's
    ``max_duration_seconds``, as ``mowe infer`` does.

    Under ``"chunk"`` the file is decoded window by window (windows of ``processor.max_audio_seconds``, one
    placeholder each), encoded ``windows_per_batch`` at a time (:func:`encode_windows`), and the LLM reads
    every window's audio tokens: the whole waveform is never held. When all windows fit one batch (a clip of
    one window, or ``windows_per_batch`` at least the window count) this is exactly
    ``model.generate(**processor(text=prompt, audio=audio))``.

    Args:
        length_policy: the processor's policy for this call (``"chunk"``: the whole file; ``"truncate"``: the
            first window; None: the processor's own).
        read_frames: the decoder's read-chunk size (the answer does not depend on it).
        generate_kwargs: ``max_new_tokens``, ``num_beams``, ... for :meth:`MoWEAudioLLM.generate`.

    Returns:
        ``(answer, encoding)``: the decoded answer and the windows' :class:`~mowe.model.AudioEncoding`
        (routing per window in ``encoding.router``).

    Raises:
        AudioTooLongError: the file is longer than ``processor.max_duration_seconds`` (before decoding it,
            when its header says so). AudioLoadError / MoWEInputError: as
            :meth:`MoWEProcessor.stream_windows`.
    """
    if length_policy is not None and length_policy != processor.length_policy:
        processor = copy.copy(processor)
        processor.options = processor.options.replace(length_policy=length_policy)
    device = next(model.parameters()).device
    ids, _ = processor.encode(prompt)
    pe = None
    if model.needs_prompt:
        pe = model.prompt_embeddings(torch.tensor([ids], device=device))
    enc = encode_windows(
        model,
        processor.stream_windows(audio, read_frames=read_frames),
        windows_per_batch=windows_per_batch,
        prompt_embeds=pe,
        device=device,
    )
    ids, _ = processor.encode(prompt, num_clips=int(enc.embeds.shape[0]))
    batch = processor.pad([ids], padding_side="left")
    out = model.generate(
        batch["input_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
        audio=enc,
        **generate_kwargs,
    )
    return processor.decode(out)[0], enc

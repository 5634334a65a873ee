"""Whisper's own transcript of a clip: LTU-AS's ``### Input`` (arXiv 2309.14405, sec. 3: joint audio and
speech).

Shape legend: ``b`` batch, ``s`` samples, ``m`` mel bins, ``f`` mel frames, ``n`` generated tokens.

The official pipeline transcribes each clip with Whisper and writes the text into the prompt.
:class:`WhisperTranscriber` runs a Whisper checkpoint's own decoder greedily (temperature 0) on the clip's
first 30 s, the log-mel computed as openai-whisper does (whole-clip floor, zero-padded log-mel, see
:func:`mowe.encoders.whisper_window.clip_log_mel`), and cleans the text as the official demo does.

Where it differs from the official demo, on purpose or for lack of parts: the demo transcribes with a second
model (whisper-at ``large-v2``) and openai's full ``transcribe`` (temperature fallback, 30 s windows sliding
over long clips, openai's suppression of blank and non-speech tokens); here one checkpoint's decoder decodes
plain greedy, the first 30 s only. Pass ``transcripts=`` to the prompt helpers to use text from anywhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from transformers import WhisperForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from mowe.encoders.base import check_waveforms
from mowe.encoders.whisper import N_FFT, LogMelFrontend
from mowe.encoders.whisper_formats import load_openai_whisper
from mowe.encoders.whisper_window import clip_log_mel
from mowe.errors import MoWEInputError
from mowe.hub import naming_refused_pickles
from mowe.ltu_as.prompt import clean_transcript

__all__ = ["WhisperTranscriber"]


class WhisperTranscriber(nn.Module):
    """Greedy Whisper transcription, batched; each clip's text is what it gets alone.

    Args:
        model: a transformers ``WhisperForConditionalGeneration`` (e.g. from :func:`load_openai_whisper`).
        prefix_ids: the decoder prompt (``<|startoftranscript|>``, language, ``<|transcribe|>``,
            ``<|notimestamps|>``).
        eos_token_id: ``<|endoftext|>``.
        decode: token ids (specials included) -> text, e.g. a Whisper tokenizer's ``decode`` with
            ``skip_special_tokens=True``.
        max_new_tokens: openai-whisper's sample length (224 = half the text context).
        clean: strip leading spaces and "thanks for watching" (the official demo's clean-up).

    Example:
        >>> tok = "openai/whisper-large"
        >>> tr = WhisperTranscriber.from_pretrained("large-v1.pt", tokenizer=tok)  # doctest: +SKIP
        >>> tr(waveforms, lengths)  # doctest: +SKIP
        ['Hello world.', ...]
    """

    def __init__(
        self,
        *,
        model: WhisperForConditionalGeneration,
        prefix_ids: Sequence[int],
        eos_token_id: int,
        decode: Callable[[list[int]], str],
        max_new_tokens: int = 224,
        clean: bool = True,
    ):
        super().__init__()
        self.model = model.eval()
        self.prefix_ids = [int(i) for i in prefix_ids]
        if not self.prefix_ids:
            raise MoWEInputError("prefix_ids must hold at least <|startoftranscript|>")
        self.eos_token_id = int(eos_token_id)
        self.decode = decode
        room = model.config.max_target_positions - len(self.prefix_ids)
        self.max_new_tokens = min(int(max_new_tokens), room)
        self.clean = clean
        self.frontend = LogMelFrontend(model.config.num_mel_bins)
        self.mel_frames = 2 * model.config.max_source_positions  # Whisper's 30 s window

    @classmethod
    def from_pretrained(
        cls, name_or_path: str, *, tokenizer=None, language: str | None = "en", **kwargs
    ) -> WhisperTranscriber:
        """A ``.pt`` file (openai-whisper) or a transformers checkpoint, with a Whisper tokenizer: a tokenizer
        object, or its hub id or folder (by default the checkpoint's own folder)."""
        from transformers import WhisperTokenizer

        if str(name_or_path).endswith(".pt"):
            model = load_openai_whisper(name_or_path, model=True)
        else:
            with naming_refused_pickles(name_or_path, what="Whisper"):
                model = WhisperForConditionalGeneration.from_pretrained(name_or_path, dtype=torch.float32)
        tok = (
            tokenizer
            if tokenizer is not None and not isinstance(tokenizer, str)
            else WhisperTokenizer.from_pretrained(tokenizer or name_or_path)
        )
        names = ["<|startoftranscript|>"]
        if model.config.vocab_size >= 51865:  # multilingual vocabularies carry language and task tokens
            names += [f"<|{language}|>"] if language else []
            names += ["<|transcribe|>"]
        names += ["<|notimestamps|>"]
        prefix = tok.convert_tokens_to_ids(names)
        return cls(
            model=model,
            prefix_ids=prefix,
            eos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
            decode=lambda ids: tok.decode(ids, skip_special_tokens=True),
            **kwargs,
        )

    @torch.no_grad()
    def generate(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Greedy token ids ``(b, n)`` after the prefix, ``eos_token_id`` once a clip has ended."""
        lengths = check_waveforms(waveforms, lengths, min_samples=N_FFT // 2 + 1)
        mel, _ = clip_log_mel(
            waveforms,
            lengths,
            filters=self.frontend.filters,
            window=self.frontend.window,
            num_frames=self.mel_frames,
        )
        dtype = self.model.model.encoder.conv1.weight.dtype
        enc = self.model.model.encoder(input_features=mel.to(dtype)).last_hidden_state
        b = waveforms.shape[0]
        step_ids = torch.tensor([self.prefix_ids] * b, device=waveforms.device)
        done = torch.zeros(b, dtype=torch.bool, device=waveforms.device)
        cache, tokens = None, []
        for _ in range(self.max_new_tokens):
            out = self.model(
                encoder_outputs=BaseModelOutput(last_hidden_state=enc),
                decoder_input_ids=step_ids,
                cache=cache,
                use_cache=True,
            )
            cache = out.cache
            nxt = out.logits[:, -1].argmax(-1).masked_fill(done, self.eos_token_id)
            tokens.append(nxt)
            done |= nxt == self.eos_token_id
            if bool(done.all()):
                break
            step_ids = nxt[:, None]
        return torch.stack(tokens, dim=1)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> list[str]:
        """``(b, s)`` 16 kHz clips -> one transcript each."""
        texts = []
        for row in self.generate(waveforms, lengths).tolist():
            ids = row[: row.index(self.eos_token_id)] if self.eos_token_id in row else row
            text = self.decode(ids)
            texts.append(clean_transcript(text) if self.clean else text)
        return texts

"""MoWEAudioLLM: strong encoder + routed weak pool + connector + causal LM.

Shape legend: ``b`` the batch (one row per clip in audio tensors, per sample in text tensors: they differ
only when ``length_policy="chunk"`` splits a long clip), ``s`` samples of audio, ``t`` strong frames, ``n``
audio tokens, ``L`` prompt tokens, ``T`` merged length, ``V`` vocabulary, ``e`` weak encoders, ``k`` selected
per clip.

Data flow of one forward::

    waveforms (b, s) -> strong encoder (b, t, d_s) -> routers -> selected weak encoders (sparse)
      -> aligned to the strong grid, gated, slotted (b, t, d_s + d_pool) -> connector (b, n, d_llm)
      -> merged into the prompt at the placeholders (b, T, d_llm) -> causal LM (+ LoRA)

Long audio (README "Long audio"): with ``window_seconds`` each window of a clip is routed on its own
(:func:`mowe.routers.route_per_window`) and the weak encoders run per window; encoders that declare a maximum
input or a window (:mod:`mowe.encoders.windows`) see long clips in windows; a
:class:`~mowe.connectors.TokenBudget` pools frames before the connector to cap the audio tokens.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mowe.builders import build_connector, build_encoder, build_llm, build_router
from mowe.components import check_allowed, config_components
from mowe.config import MoWEConfig, RouterConfig
from mowe.connectors.budget import TokenBudget
from mowe.constants import SAMPLE_RATE
from mowe.encoders.base import EncoderOutput, check_encoder_output, check_waveforms
from mowe.encoders.cache import FeatureCache, cached_encode
from mowe.encoders.pool import WeakEncoderPool
from mowe.encoders.windows import (
    check_window_seconds,
    encode_in_windows,
    encoder_window_seconds,
    seconds_to_frames,
)
from mowe.errors import ConfigError, MoWEInputError
from mowe.generation import (
    default_generation_config,
    generation_settings,
    greedy_settings,
    grouped_greedy_generate,
)
from mowe.hf import saving
from mowe.hf.adapter import set_lora_scale
from mowe.hf.auto import register_auto_classes
from mowe.hf.mixin import MoWEHubMixin
from mowe.merge import (
    MergedInputs,
    cheapest_llm_layout,
    grouped_llm_pass,
    llm_sizes,
    merge_audio_features,
    pack_merged,
)
from mowe.routers.base import RouterOutput
from mowe.routers.prompt import clip_prompt_embeddings
from mowe.routers.windows import route_per_window
from mowe.state_dicts import rename_legacy_keys
from mowe.tensors import check_bucket_padding, resolve_bucket_padding

__all__ = ["AudioEncoding", "MoWEAudioLLM", "MoWEOutput"]

WEIGHTS_NAME, CONFIG_NAME = saving.WEIGHTS_NAME, saving.CONFIG_NAME  # kept here for existing imports


@dataclass
class AudioEncoding:
    """Audio tokens for a batch of clips: ``embeds`` ``(b, n, d_llm)``, ``lengths`` ``(b,)``, routing (or
    None; its ``window_*`` fields are set when routing is per window, :class:`~mowe.routers.RouterOutput`)."""

    embeds: torch.Tensor
    lengths: torch.Tensor
    router: RouterOutput | None


@dataclass
class MoWEOutput:
    """Result of :meth:`MoWEAudioLLM.forward`.

    Attributes:
        loss: ``lm_loss + aux_loss_weight * aux_loss`` (None without labels).
        lm_loss: next-token loss on the answer tokens only (labels -100 elsewhere).
        aux_loss: the router's load-balance loss (None for a base-only model).
        logits: ``(b, T, V)`` over the merged sequence.
        router: per-clip gates ``(b, e)``, selected indices ``(b, k)``, probabilities, aux loss; routed per
            window, also per window (``window_gates`` ``(b, w, e)``, ...,
            :meth:`~mowe.routers.RouterOutput.per_window`).
        attention_mask: ``(b, T)`` of the merged sequence; labels: ``(b, T)`` merged labels.
    """

    loss: torch.Tensor | None
    lm_loss: torch.Tensor | None
    aux_loss: torch.Tensor | None
    logits: torch.Tensor
    router: RouterOutput | None
    attention_mask: torch.Tensor
    labels: torch.Tensor | None


class MoWEAudioLLM(MoWEHubMixin, nn.Module):
    """An audio LLM built from a strong encoder, an optional routed pool of weak encoders, a connector and an
    LLM.

    Args:
        strong_encoder: any encoder module (``out_dim``, ``frame_rate``, ``min_samples``; see
            :mod:`mowe.encoders.base`), typically a frozen :class:`~mowe.encoders.WhisperEncoder`.
        connector: maps ``(b, t, strong.out_dim + weak_encoders.out_dim)`` to ``(b, n, d_llm)``.
        llm: a transformers causal LM (optionally wrapped by peft).
        audio_token_id: the placeholder token id in prompts (one per clip).
        weak_encoders: name -> encoder, or a ready :class:`WeakEncoderPool` (``model.weak_encoders``); None
            for a base-only model.
        router: routes clips over the pool; by default both MoWE routers with top-1.
        aux_loss_weight: weight of the load-balance loss (MoWE-Audio: 0.1).
        config: the :class:`MoWEConfig` that built this model, if any (needed to reload by path alone).
        window_seconds: route each window of this many seconds on its own
            (:func:`mowe.routers.route_per_window`); encoders that window (:mod:`mowe.encoders.windows`) then
            run in these windows. None: one decision per clip. Settable later (``model.window_seconds = 30``);
            checked against every encoder.
        token_budget: caps on audio tokens per clip / per window (:class:`~mowe.connectors.TokenBudget`).

    Example:
        See the README quickstart, which a test runs as it is.
    """

    def __init__(
        self,
        *,
        strong_encoder: nn.Module,
        connector: nn.Module,
        llm: nn.Module,
        audio_token_id: int,
        weak_encoders: Mapping[str, nn.Module] | WeakEncoderPool | None = None,
        router: nn.Module | None = None,
        aux_loss_weight: float = 0.1,
        config: MoWEConfig | None = None,
        window_seconds: float | None = None,
        token_budget: TokenBudget | None = None,
    ):
        super().__init__()
        self.strong_encoder = strong_encoder
        if weak_encoders is not None and not isinstance(weak_encoders, WeakEncoderPool):
            weak_encoders = WeakEncoderPool(encoders=weak_encoders)
        self.weak_encoders = weak_encoders
        if self.weak_encoders is not None and router is None:
            pool = self.weak_encoders
            router = build_router(
                RouterConfig(top_k=pool.top_k), strong_dim=int(strong_encoder.out_dim), num_encoders=len(pool)
            )
        self.router = router if self.weak_encoders is not None else None
        self.connector = connector
        self.llm = llm
        self.audio_token_id = int(audio_token_id)
        self.aux_loss_weight = aux_loss_weight
        self.config = config
        self.generation_config = default_generation_config(llm)  # saved as generation_config.json
        # A state dict from before the weak pool's rename (``pool.`` keys) loads through load_state_dict too.
        self.register_load_state_dict_pre_hook(_rename_legacy_keys)
        _check_dims(self)
        self.window_seconds = window_seconds  # checked against every encoder (the property below)
        self.token_budget = token_budget
        if token_budget is not None and token_budget.active:
            _connector_out_lengths(self)  # a connector without out_lengths cannot take a budget
            token_budget.check(self.connector.out_lengths, who=_connector_name(self.connector))
        self.train(self.training)

    def train(self, mode: bool = True) -> MoWEAudioLLM:
        """Like ``nn.Module.train``, but frozen encoders stay in eval mode.

        A frozen encoder is a fixed feature extractor: in train mode HuBERT would still apply dropout and
        layer drop to its features, making them noisy and step times uneven for nothing.
        """
        super().train(mode)
        pool = self.weak_encoders
        encoders = [self.strong_encoder] + (list(pool.encoders.values()) if pool is not None else [])
        for enc in encoders:
            if not any(p.requires_grad for p in enc.parameters()):
                enc.eval()
        return self

    # ------------------------------------------------------------------------------------------- building
    @classmethod
    def from_config(
        cls,
        config: MoWEConfig,
        *,
        encoders: Mapping[str, nn.Module] | None = None,
        llm: nn.Module | None = None,
        allow_components: bool | Sequence[str] | None = True,
    ) -> MoWEAudioLLM:
        """Build every part a config names; ``encoders`` supplies modules (by name, ``"strong"`` for the
        strong one) for ``family="custom"`` entries or to replace built ones, ``llm`` an already built LLM.
        ``allow_components``: packages outside mowe whose ``component`` entries may be imported (True: any;
        see :mod:`mowe.components`)."""
        allow = allow_components
        for where, path in config_components(config):  # refuse before importing or building anything
            if not (encoders and where.split(".")[-1] in encoders):
                check_allowed(path, allow, where=where)
        strong = build_encoder(config.strong, name="strong", custom=encoders, allow=allow)
        pool = None
        if config.weak_encoders:
            weak = {
                n: build_encoder(c, name=n, custom=encoders, allow=allow)
                for n, c in config.weak_encoders.items()
            }
            pool = WeakEncoderPool(
                encoders=weak,
                layout=config.router.layout,
                top_k=config.router.top_k,
                slot_dim=config.router.slot_dim,
                align=config.router.align,
            )
        if llm is None:
            llm = build_llm(config.llm, config.lora)
        d_llm = llm.get_input_embeddings().embedding_dim
        in_dim = int(strong.out_dim) + (pool.out_dim if pool is not None else 0)
        connector = build_connector(config.connector, in_dim=in_dim, out_dim=d_llm, allow=allow)
        router = None
        if pool is not None:
            router = build_router(
                config.router,
                strong_dim=int(strong.out_dim),
                num_encoders=len(pool),
                prompt_dim=d_llm,
                allow=allow,
            )
        window = config.router.window_seconds
        budget = None
        if config.connector.max_tokens is not None or config.connector.max_tokens_per_window is not None:
            try:
                frames = seconds_to_frames(
                    window or BUDGET_WINDOW_SECONDS,
                    float(strong.frame_rate),
                    who="the strong encoder",
                    what="the token budget's window",
                )
                budget = TokenBudget(
                    max_tokens=config.connector.max_tokens,
                    window_frames=frames,
                    max_tokens_per_window=config.connector.max_tokens_per_window,
                )
                budget.check(_connector_out_lengths_of(connector), who=_connector_name(connector))
            except MoWEInputError as e:
                raise ConfigError(f"model.connector: {e}") from e
        try:
            return cls(
                strong_encoder=strong,
                weak_encoders=pool,
                router=router,
                connector=connector,
                llm=llm,
                audio_token_id=config.audio_token_id,
                aux_loss_weight=config.router.aux_loss_weight,
                config=config,
                window_seconds=window,
                token_budget=budget,
            )
        except WindowSettingError as e:
            raise ConfigError(f"model.router.window_seconds: {e}") from e

    # ------------------------------------------------------------------------------------------- running
    @property
    def min_samples(self) -> int:
        """Shortest clip every encoder can take (HuBERT: 400 samples)."""
        weak = self.weak_encoders.min_samples if self.weak_encoders is not None else 0
        return max(int(self.strong_encoder.min_samples), weak)

    @property
    def needs_prompt(self) -> bool:
        """Whether the router is prompt-aware, so :meth:`encode_audio` needs ``prompt_embeds``."""
        return self.router is not None and bool(getattr(self.router, "needs_prompt", False))

    def prompt_embeddings(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Each clip's pooled, detached prompt embedding ``(b, d_llm)`` for a prompt-aware router: the mean
        LLM input embedding of its sample's real tokens that are neither placeholders nor answer tokens
        (``labels != -100``); see :func:`mowe.routers.prompt.clip_prompt_embeddings`."""
        return clip_prompt_embeddings(
            embedding=self.llm.get_input_embeddings(),
            input_ids=input_ids,
            audio_token_id=self.audio_token_id,
            attention_mask=attention_mask,
            labels=labels,
        )

    def encode_audio(
        self,
        waveforms: torch.Tensor,
        wave_lengths: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
    ) -> AudioEncoding:
        """Waveforms ``(b, s)`` (16 kHz, right-padded) and lengths ``(b,)`` -> audio tokens ``(b, n, d_llm)``.

        ``prompt_embeds``: ``(b, d_llm)`` from :meth:`prompt_embeddings`; required when :attr:`needs_prompt`,
        ignored otherwise.
        """
        lengths = check_waveforms(waveforms, wave_lengths, min_samples=self.min_samples)
        strong = self.encode_strong(waveforms, lengths)
        feats, flens, route = strong.features, strong.lengths, None
        if getattr(self.connector, "needs_all_layers", False):
            if strong.hidden_states is None:
                raise MoWEInputError(
                    "the connector needs all layers: build the strong encoder with output_all_layers=True"
                )
            feats = strong.hidden_states
        elif self.weak_encoders is not None:
            prompt = prompt_embeds if self.needs_prompt else None
            if self.window_frames is not None:
                route = route_per_window(
                    self.router, feats, flens, window_frames=self.window_frames, prompt=prompt
                )
            else:
                route = self.router(feats, flens, prompt) if self.needs_prompt else self.router(feats, flens)
            rate = float(self.strong_encoder.frame_rate)
            weak = self.weak_encoders(
                waveforms, lengths, route, frame_rate=rate, frame_lengths=flens, num_frames=feats.shape[1]
            )
            feats = torch.cat([feats.float(), weak], dim=-1)
        if self.token_budget is not None and self.token_budget.active:
            feats, flens = self.token_budget(
                feats, flens, out_lengths=_connector_out_lengths(self), who=_connector_name(self.connector)
            )
        dtype = next(self.connector.parameters()).dtype
        out = self.connector(feats.to(dtype), flens)
        return AudioEncoding(out.embeds, out.lengths, route)

    def encode_strong(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        """The strong encoder's output for ``(b, s)`` waveforms and ``(b,)`` lengths: the frame grid
        everything is aligned to. An encoder that windows (:mod:`mowe.encoders.windows`) sees a clip longer
        than its window (:attr:`window_seconds` where routing is per window) in windows, their frames stitched
        in time on its nominal grid (a full window is exactly ``window_seconds * frame_rate`` frames, so
        routing windows and encoder windows coincide)."""
        enc = self.strong_encoder

        def run(wav: torch.Tensor, lens: torch.Tensor) -> EncoderOutput:
            return check_encoder_output(
                cached_encode(enc, wav, lens, self.feature_cache, name="strong"),
                batch=wav.shape[0],
                out_dim=int(enc.out_dim),
                who="strong",
            )

        seconds = encoder_window_seconds(enc, self.window_seconds)
        if seconds is not None:
            window = round(seconds * SAMPLE_RATE)
            if int(lengths.max()) > window:
                # full_window (SALMONN's Whisper) gives a whole window of frames however short: keep them as
                # given.
                grid = None if getattr(enc, "full_window", False) else float(enc.frame_rate)
                return encode_in_windows(
                    run,
                    waveforms,
                    lengths,
                    window=window,
                    frame_rate=grid,
                    min_samples=int(getattr(enc, "min_samples", 0)),
                )
        return run(waveforms, lengths)

    @property
    def window_seconds(self) -> float | None:
        """Seconds per routing window (None: routing per clip); see the constructor."""
        return self._window_seconds

    @window_seconds.setter
    def window_seconds(self, seconds: float | None) -> None:
        self.window_frames = _check_windows(self, seconds)
        self._window_seconds = None if seconds is None else float(seconds)

    feature_cache: FeatureCache | None = None

    def use_feature_cache(
        self, cache: FeatureCache | str | os.PathLike | None, *, max_bytes: int | None = None
    ) -> FeatureCache | None:
        """Run frozen, eval-mode encoders (strong and weak) through an on-disk feature cache.

        Args:
            cache: a :class:`~mowe.encoders.cache.FeatureCache`, a folder to open one in (several processes
                may share it), or None to run every encoder live again.
            max_bytes: size bound when ``cache`` is a folder (least recently used entries are evicted).

        Returns:
            The cache now in use (also ``model.feature_cache``). The state dict does not change.
        """
        if cache is not None and not isinstance(cache, FeatureCache):
            cache = FeatureCache(cache, max_bytes=max_bytes)
        self.feature_cache = cache
        if self.weak_encoders is not None:
            self.weak_encoders.feature_cache = cache
        return cache

    @contextlib.contextmanager
    def without_encoders(self, names: Sequence[str]):
        """Within the block, the router never selects the weak encoders ``names``: an ablation that asks what
        each encoder adds. Clips that did not choose one of them are computed exactly as before; the others
           take their
        next-best encoder (see :meth:`mowe.routers.MixtureRouter.exclude`).

        Example::

            with model.without_encoders(["pitch"]):
                result = evaluate_model(model, processor, test_set)

        Raises:
            MoWEInputError: a base-only model, a name not in the pool, or a router without ``exclude``.
        """
        if self.weak_encoders is None or self.router is None:
            raise MoWEInputError("without_encoders: this model has no weak pool (base-only)")
        pool = list(self.weak_encoders.names)
        unknown = [n for n in names if n not in pool]
        if unknown:
            raise MoWEInputError(f"without_encoders: {unknown} not in the weak pool {pool}")
        if not hasattr(self.router, "exclude"):
            raise MoWEInputError(
                f"without_encoders: the router {type(self.router).__name__} has no exclude(indices)"
            )
        before = getattr(self.router, "excluded", frozenset())
        self.router.exclude([pool.index(n) for n in names])
        try:
            yield self
        finally:
            self.router.exclude(before)

    def _merge(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        audio: AudioEncoding,
        labels: torch.Tensor | None,
        padding_side: str,
    ) -> MergedInputs:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        is_audio = input_ids == self.audio_token_id
        embed = self.llm.get_input_embeddings()
        text = embed(input_ids.masked_fill(is_audio, 0))
        return merge_audio_features(
            input_ids=input_ids,
            inputs_embeds=text,
            attention_mask=attention_mask,
            audio_embeds=audio.embeds.to(text.dtype),
            audio_lengths=audio.lengths,
            audio_token_id=self.audio_token_id,
            labels=labels,
            padding_side=padding_side,
        )

    def _llm_layout(self, attention_mask: torch.Tensor) -> bool | str:
        """The cheapest LLM pass for this batch (:func:`mowe.merge.cheapest_llm_layout`)."""
        return cheapest_llm_layout(
            attention_mask,
            group_padding=resolve_bucket_padding("auto", attention_mask.device),
            **llm_sizes(self.llm),
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        waveforms: torch.Tensor,
        wave_lengths: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        padding_side: str = "right",
        pack: bool | str = False,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> MoWEOutput:
        """Teacher-forced forward.

        Args:
            input_ids: ``(b, L)`` prompts (+ answers for training), one placeholder per clip.
            waveforms: ``(b, s)`` clips in placeholder reading order; ``wave_lengths`` ``(b,)``.
            attention_mask: ``(b, L)``; labels ``(b, L)`` with -100 on tokens that carry no loss.
            padding_side: padding of the merged sequence.
            pack: how the LLM runs the merged batch; every choice gives the same loss and logits (on real
                tokens) up to float rounding, only the cost differs:

                - False: one batch padded to the longest sample;
                - True: one packed row of the real tokens, position ids restarting per sample, so transformers
                  keeps the samples apart in attention (:func:`mowe.merge.pack_merged`). Needs an LLM whose
                  masks come from ``masking_utils`` (Llama, Qwen2, Mistral, Gemma, GPT-2, ... in transformers
                  5); without a variable-length kernel (flash-attention) its attention mask is dense over the
                  whole row;
                - ``"groups"``: rows of similar length run together, each group padded only to its own longest
                  row (budget as the encoders' ``bucket_padding="auto"``);
                - ``"auto"``: the cheapest of the three for this batch by :func:`mowe.merge.llm_pass_flops`.

                Under FSDP (an FSDP-sharded LLM) ``"groups"`` runs padded: every process must call the sharded
                LLM the same number of times.
            num_items_in_batch: the answer-token count of the whole global batch (all processes, all
                accumulation micro-batches); ``lm_loss`` is then this batch's *summed* token loss divided by
                it, so the parts of a global batch add up to its mean (:mod:`mowe.training.distributed`).
                None: the mean here.
        """
        if not (isinstance(pack, bool) or pack in ("auto", "groups")):
            raise MoWEInputError(f"pack must be True, False, 'groups' or 'auto', got {pack!r}")
        prompt = self.prompt_embeddings(input_ids, attention_mask, labels) if self.needs_prompt else None
        audio = self.encode_audio(waveforms, wave_lengths, prompt)
        merged = self._merge(input_ids, attention_mask, audio, labels, padding_side)
        if pack == "auto":
            pack = self._llm_layout(merged.attention_mask)
        if pack == "groups" and hasattr(self.llm, "unshard"):  # FSDP2: one LLM call per process (see above)
            pack = False
        items = (
            {} if num_items_in_batch is None or labels is None else {"num_items_in_batch": num_items_in_batch}
        )
        if pack == "groups":
            lm_loss, logits = grouped_llm_pass(self.llm, merged, padding_side, **items)
        elif pack:
            packed = pack_merged(merged)
            out = self.llm(
                inputs_embeds=packed.inputs_embeds,
                position_ids=packed.position_ids,
                labels=packed.shift_labels,
                shift_labels=packed.shift_labels,
                use_cache=False,
                **items,
            )
            # Back to the batch layout callers expect: (b, T, V), zeros on padding.
            logits = out.logits.new_zeros(*packed.keep.shape, out.logits.shape[-1])
            logits[packed.keep] = out.logits[0]
            lm_loss = out.loss
        else:
            out = self.llm(
                inputs_embeds=merged.inputs_embeds,
                attention_mask=merged.attention_mask,
                position_ids=merged.position_ids,
                labels=merged.labels,
                use_cache=False,
                **items,
            )
            lm_loss, logits = out.loss, out.logits
        aux = audio.router.aux_loss if audio.router is not None else None
        loss = None
        if lm_loss is not None:
            loss = lm_loss + (self.aux_loss_weight * aux if aux is not None else 0.0)
        return MoWEOutput(
            loss=loss,
            lm_loss=lm_loss,
            aux_loss=aux,
            logits=logits,
            router=audio.router,
            attention_mask=merged.attention_mask,
            labels=merged.labels,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        waveforms: torch.Tensor | None = None,
        wave_lengths: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
        use_cache: bool = True,
        audio: AudioEncoding | None = None,
        prefill_padding: float | str | None = "auto",
        generation_config=None,
        **generate_kwargs,
    ) -> torch.Tensor:
        """Batched generation (KV cache, greedy or beam search).

        Prompts may be padded on either side; they are re-padded on the left after the merge.

        Args:
            waveforms: ``(b, s)`` clips, one per placeholder; None (and no ``audio``) for text-only prompts,
            which
                then hold no placeholder: the LLM answers them as it is (e.g. a chat before any audio).
            audio: the clips' :meth:`encode_audio` result when the caller already has it (skips re-encoding).
            prefill_padding: greedy decoding runs its prefill in groups of similarly long prompts, each padded
                only to its own longest, then decodes from one left-padded KV cache (:mod:`mowe.generation`):
                the same tokens as transformers' ``generate`` up to float rounding, with a prefill that costs
                what the prompts' real lengths do. The value is each group's padding budget, as the encoders'
                ``bucket_padding``: ``"auto"`` is 0.05 on CPU and 0.25 on accelerators, and settings that are
                not plain greedy (beams, sampling, logits processors) then go to ``generate``; a number raises
                for them instead. None: transformers' ``generate`` on the one left-padded batch.
            max_new_tokens, num_beams: override ``model.generation_config`` (None: keep its values).
            generation_config: a ``GenerationConfig`` for this call instead of ``model.generation_config``.
            generate_kwargs: more settings (e.g. ``min_new_tokens``, ``eos_token_id``) or transformers
                ``generate`` arguments.

        Returns:
            ``(b, new_tokens)`` generated ids (prompt not included), padded with the pad / eos id.
        """
        budget = check_bucket_padding(prefill_padding, name="prefill_padding")
        if audio is None and waveforms is None:
            audio = self._no_audio(input_ids)
        elif audio is None:
            prompt = self.prompt_embeddings(input_ids, attention_mask) if self.needs_prompt else None
            audio = self.encode_audio(waveforms, wave_lengths, prompt)
        merged = self._merge(input_ids, attention_mask, audio, None, "left")
        gen, kwargs = generation_settings(
            self.generation_config,
            generation_config,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            use_cache=use_cache,
            **generate_kwargs,
        )
        if budget is not None:
            settings = greedy_settings(self.llm, gen, **kwargs)
            if not isinstance(settings, str):
                return grouped_greedy_generate(
                    self.llm,
                    merged,
                    settings,
                    max_padding=resolve_bucket_padding(budget, merged.inputs_embeds.device),
                )
            if budget != "auto":
                raise MoWEInputError(
                    f"generate(prefill_padding={budget}) does plain greedy decoding only: "
                    f"{settings}; use prefill_padding='auto' or None for these settings"
                )
        return self.llm.generate(
            inputs_embeds=merged.inputs_embeds,
            attention_mask=merged.attention_mask,
            generation_config=gen,
            **kwargs,
        )

    def _no_audio(self, input_ids: torch.Tensor) -> AudioEncoding:
        """Zero clips, for text-only prompts (which must then hold no placeholder)."""
        if input_ids is not None and bool((input_ids == self.audio_token_id).any()):
            raise MoWEInputError(
                "generate: the prompts hold audio placeholders but no waveforms (or audio) were "
                "given; pass one clip per placeholder, or leave the placeholders out"
            )
        weight = self.llm.get_input_embeddings().weight
        return AudioEncoding(
            weight.new_zeros(0, 0, weight.shape[1]),
            torch.zeros(0, dtype=torch.long, device=weight.device),
            None,
        )

    # ------------------------------------------------------------------------------------------- saving
    # save_pretrained / from_pretrained (folders, hub ids) / push_to_hub / merge_lora / export_llm:
    # MoWEHubMixin.
    def set_lora_scale(self, factor: float) -> None:
        """Scale every LoRA adapter's output by ``factor`` relative to its configured ``alpha / r``.

        SALMONN trains with scaling 4.0 and tests with 2.0 (``factor=0.5``) to undo task over-fitting
        (arXiv 2310.13289, sec. 3.3); ``1.0`` restores the trained behaviour.
        """
        if not set_lora_scale(self.llm, factor):
            raise MoWEInputError(
                "set_lora_scale: this model's LLM has no LoRA adapters (llm.train is not 'lora')"
            )

    def num_parameters(self, *, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def _rename_legacy_keys(module, state_dict, prefix, *args) -> None:
    """``load_state_dict`` pre-hook: keys under an old prefix (``pool.``) take their current name, in
    place."""
    renamed = rename_legacy_keys(state_dict, where="load_state_dict", prefix=prefix)
    if list(renamed) != list(state_dict):
        state_dict.clear()
        state_dict.update(renamed)


#: The window of ``ConnectorConfig.max_tokens_per_window`` when routing is per clip (seconds).
BUDGET_WINDOW_SECONDS = 30.0


class WindowSettingError(MoWEInputError):
    """A window setting that does not fit an encoder (names the encoder and the value)."""


def _check_windows(model: MoWEAudioLLM, seconds: float | None) -> int | None:
    """Strong frames per routing window of ``seconds`` (None: routing per clip); raises WindowSettingError
    naming the encoder and the value when the windows do not fit it (longer than its maximum input, or not a
    whole number of its frames)."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise WindowSettingError(f"window_seconds must be a number of seconds > 0 or None, got {seconds!r}")
    seconds = float(seconds)
    strong = model.strong_encoder
    try:
        frames = seconds_to_frames(seconds, float(strong.frame_rate), who="the strong encoder")
        if getattr(strong, "full_window", False) and seconds != getattr(strong, "max_input_seconds", seconds):
            whole = strong.max_input_seconds
            raise MoWEInputError(
                f"window_seconds={seconds:g} does not fit the strong encoder: with "
                f"full_window it gives a whole {whole:g} s window of frames whatever the "
                f"audio; choose {whole:g}"
            )
        encoders = [("the strong encoder", strong)]
        if model.weak_encoders is not None:
            encoders += [(f"weak encoder {n!r}", e) for n, e in model.weak_encoders.encoders.items()]
        for who, enc in encoders:
            check_window_seconds(enc, seconds, who=who, what="window_seconds")
    except WindowSettingError:
        raise
    except MoWEInputError as e:
        raise WindowSettingError(str(e)) from e
    return frames


def _connector_name(connector: nn.Module) -> str:
    return f"the connector ({type(connector).__name__})"


def _connector_out_lengths(model: MoWEAudioLLM):
    return _connector_out_lengths_of(model.connector)


def _connector_out_lengths_of(connector: nn.Module):
    fn = getattr(connector, "out_lengths", None)
    if fn is None:
        raise MoWEInputError(
            f"a token budget needs connector.out_lengths(frames) -> tokens; the connector "
            f"{type(connector).__name__} has none"
        )
    return fn


def _check_dims(model: MoWEAudioLLM) -> None:
    """The connector must take the encoders' feature width and give the LLM's embedding width."""
    for attr in ("in_dim", "out_dim"):
        if not hasattr(model.connector, attr):
            raise MoWEInputError(
                f"the connector ({type(model.connector).__name__}) lacks the attribute {attr!r}; "
                f"connector.in_dim / out_dim are part of the connector protocol"
            )
    pool = model.weak_encoders
    want = int(model.strong_encoder.out_dim) + (pool.out_dim if pool is not None else 0)
    if getattr(model.connector, "needs_all_layers", False):
        if pool is not None:
            raise MoWEInputError(
                "a connector that needs all layers (TLTR) takes the strong encoder alone; "
                "it cannot be combined with a weak pool"
            )
        want = int(model.strong_encoder.out_dim)
    if int(model.connector.in_dim) != want:
        raise MoWEInputError(
            f"connector.in_dim is {model.connector.in_dim} but the encoders give {want} features "
            f"(strong {model.strong_encoder.out_dim}"
            f"{' + weak_encoders ' + str(pool.out_dim) if pool is not None else ''})"
        )
    d_llm = model.llm.get_input_embeddings().embedding_dim
    if int(model.connector.out_dim) != d_llm:
        raise MoWEInputError(f"connector.out_dim is {model.connector.out_dim} but the LLM width is {d_llm}")


register_auto_classes(MoWEAudioLLM)  # AutoConfig / AutoModel / AutoProcessor learn "mowe"

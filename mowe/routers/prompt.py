"""Prompt-aware routing: the router sees the instruction as well as the audio.

MoWE-Audio's routers (arXiv 2409.06635, sec. 3) see only the strong encoder's features, so the same clip
goes to the same weak encoder whether the question is *what was said* or *who said it*. PaM
(arXiv 2502.15178) lets the prompt choose among audio encoders instead. :class:`PromptAwareRouter` does
both: it maps the pooled audio features **and** the pooled LLM input embeddings of the sample's prompt
to logits over the weak pool, as one more router inside :class:`~mowe.routers.MixtureRouter`, so its output
is the same :class:`~mowe.routers.RouterOutput`.

Shape legend: ``b`` the batch (``input_ids``: one row per sample; outputs: one row per clip, in placeholder
reading order), ``L`` tokens, ``d`` width,
``e`` weak encoders.

What "the prompt" is (:func:`prompt_token_mask`): the real tokens of the sample (``attention_mask`` 1) that
are neither an audio placeholder nor an answer token (``labels != -100`` in training). In generation only
the prompt is present, so a prompt pools to the same vector in training and in generation, whatever the
padding side. Chat-template and system tokens are part of it: they are the same for every sample, so they
shift every pooled vector alike and only the instruction tokens make samples differ.

Gradient: the embeddings are pooled **detached**. With LoRA or a frozen LLM the table does not train anyway;
with full fine-tuning a gradient through the prompt would let the routing losses (including the load-balance
loss) move word embeddings to suit the router rather than the LM. The router learns to read the embeddings
as the LLM has them.
"""

from __future__ import annotations

import torch
from torch import nn

from mowe.constants import IGNORE_INDEX
from mowe.errors import MoWEInputError

__all__ = ["PromptAwareRouter", "clip_prompt_embeddings", "pool_prompt_embeddings", "prompt_token_mask"]


def prompt_token_mask(
    input_ids: torch.Tensor,
    *,
    audio_token_id: int,
    attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Which tokens are the prompt: real, not an audio placeholder, not an answer token.

    Args:
        input_ids: ``(b, L)`` token ids, either padding side.
        audio_token_id: the placeholder id (excluded).
        attention_mask: ``(b, L)``, 0 on padding (excluded); None: every token is real.
        labels: ``(b, L)``; tokens with a label other than -100 are answer tokens (excluded). None
            (generation, or a forward without labels): no token is an answer token.

    Returns:
        ``(b, L)`` bool.
    """
    mask = input_ids != audio_token_id
    if attention_mask is not None:
        mask &= attention_mask.bool()
    if labels is not None:
        mask &= labels == IGNORE_INDEX
    return mask


def pool_prompt_embeddings(
    inputs_embeds: torch.Tensor, input_ids: torch.Tensor, prompt_mask: torch.Tensor, *, audio_token_id: int
) -> torch.Tensor:
    """Mean of each sample's prompt-token embeddings, one row per clip in placeholder reading order.

    Clip ``i`` is the ``i``-th audio placeholder reading the batch row by row (as :func:`mowe.merge.
    merge_audio_features` assigns clips), so a sample with several clips gives each of them its vector.

    Args:
        inputs_embeds: ``(b, L, d)`` token embeddings (any dtype; pooled in float32).
        input_ids: ``(b, L)``, to find the placeholders.
        prompt_mask: ``(b, L)`` bool from :func:`prompt_token_mask`.
        audio_token_id: the placeholder id.

    Returns:
        ``(b, d)`` float32; the zero vector for a sample without prompt tokens.
    """
    if inputs_embeds.shape[:2] != input_ids.shape or prompt_mask.shape != input_ids.shape:
        raise MoWEInputError(
            f"inputs_embeds {tuple(inputs_embeds.shape)}, input_ids {tuple(input_ids.shape)} and "
            f"prompt_mask {tuple(prompt_mask.shape)} must agree on (batch, length)"
        )
    m = prompt_mask.to(torch.float32)[..., None]
    per_sample = (inputs_embeds.float() * m).sum(1) / m.sum(1).clamp(min=1.0)  # (b, d)
    rows = (input_ids == audio_token_id).nonzero(as_tuple=True)[0]  # row-major: reading order
    return per_sample[rows]


def clip_prompt_embeddings(
    *,
    embedding: nn.Module,
    input_ids: torch.Tensor,
    audio_token_id: int,
    attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each clip's pooled prompt embedding, from the LLM's input embedding table (detached, see the module
    notes).

    :func:`prompt_token_mask` then :func:`pool_prompt_embeddings`; placeholders are looked up as id 0 and
    masked out, so the placeholder id need not be inside the table.

    Args:
        embedding: the LLM's input embedding module (``llm.get_input_embeddings()``), ``(b, L) -> (b, L, d)``.
        input_ids, attention_mask, labels: ``(b, L)``, as the model's ``forward`` (labels) or ``generate``
        takes them.
        audio_token_id: the placeholder id.

    Returns:
        ``(b, d)`` float32, clips in placeholder reading order.
    """
    is_audio = input_ids == audio_token_id
    with torch.no_grad():
        embeds = embedding(input_ids.masked_fill(is_audio, 0))
    mask = prompt_token_mask(
        input_ids, audio_token_id=audio_token_id, attention_mask=attention_mask, labels=labels
    )
    return pool_prompt_embeddings(embeds, input_ids, mask, audio_token_id=audio_token_id)


class PromptAwareRouter(nn.Module):
    """Logits over the weak pool from the pooled audio features and the pooled prompt embedding.

    ``logits = W_o GELU(W_a LN(audio) + W_p LN(prompt))`` (the two inputs normalised apart: Whisper features
    and LLM embeddings have unrelated scales). The hidden GELU lets the instruction and the audio interact,
    e.g. "route by voice only when asked about the speaker".

    Args:
        in_dim: pooled audio width ``d_a`` (the strong encoder's ``out_dim``).
        prompt_dim: pooled prompt width ``d_p`` (the LLM's embedding width).
        num_encoders: pool size ``e``.
        hidden_dim: width of the hidden layer.

    Call as ``router(pooled, prompt)``: ``(b, d_a)`` and ``(b, d_p)`` -> ``(b, e)`` logits. The class
    attribute ``needs_prompt`` tells :class:`~mowe.routers.MixtureRouter` to pass the prompt.

    Example:
        >>> r = PromptAwareRouter(in_dim=64, prompt_dim=96, num_encoders=4)
        >>> r(torch.randn(2, 64), torch.randn(2, 96)).shape
        torch.Size([2, 4])
    """

    needs_prompt = True

    def __init__(self, *, in_dim: int, prompt_dim: int, num_encoders: int, hidden_dim: int = 256):
        super().__init__()
        self.in_dim, self.prompt_dim, self.num_encoders = in_dim, prompt_dim, num_encoders
        self.audio_norm = nn.LayerNorm(in_dim)
        self.prompt_norm = nn.LayerNorm(prompt_dim)
        self.audio_proj = nn.Linear(in_dim, hidden_dim)
        self.prompt_proj = nn.Linear(prompt_dim, hidden_dim, bias=False)
        self.act = nn.GELU()
        self.out = nn.Linear(hidden_dim, num_encoders)
        # Small last layer, as DataDependentRouter: training starts near the data-independent prior.
        nn.init.normal_(self.out.weight, std=0.02)
        nn.init.zeros_(self.out.bias)

    def forward(self, pooled: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        if pooled.dim() != 2 or prompt.dim() != 2 or prompt.shape[0] != pooled.shape[0]:
            raise MoWEInputError(
                f"PromptAwareRouter takes pooled audio (b, d) and prompt (b, d_p) with one row per "
                f"clip; got {tuple(pooled.shape)} and {tuple(prompt.shape)} (the prompts must hold "
                f"one audio placeholder per clip)"
            )
        if prompt.shape[1] != self.prompt_dim:
            raise MoWEInputError(
                f"prompt width is {prompt.shape[1]}, but this router was built for prompt_dim="
                f"{self.prompt_dim} (the LLM's embedding width)"
            )
        h = self.audio_proj(self.audio_norm(pooled)) + self.prompt_proj(
            self.prompt_norm(prompt.to(pooled.dtype))
        )
        return self.out(self.act(h))

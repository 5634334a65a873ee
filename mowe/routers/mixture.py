"""Combining routers, top-k selection, gates and the load-balance loss.

Shape legend: ``b`` batch, ``t`` frames, ``d`` width, ``e`` weak encoders, ``k`` selected per clip.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mowe.errors import MoWEInputError
from mowe.routers.base import RouterOutput
from mowe.tensors import lengths_to_mask

__all__ = ["MixtureRouter", "load_balance_loss", "masked_mean"]


def masked_mean(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(b, t, d)`` features, ``(b,)`` lengths -> ``(b, d)`` mean over valid frames."""
    m = lengths_to_mask(lengths, features.shape[1]).to(features.dtype)[..., None]
    return (features * m).sum(1) / lengths.clamp(min=1)[:, None].to(features.dtype)


def load_balance_loss(probs: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Switch-Transformer load balance ``e * sum_i f_i * P_i`` (Fedus et al. 2021, eq. 4).

    ``f_i`` is the fraction of selections that went to encoder ``i`` and ``P_i`` its mean router probability.
    It equals 1 for a perfectly uniform router and grows as routing collapses onto few encoders.
    """
    e = probs.shape[-1]
    counts = F.one_hot(indices, e).sum(dim=(0, 1)).to(probs.dtype)
    frac = counts / counts.sum()
    return e * (frac * probs.mean(0)).sum()


class MixtureRouter(nn.Module):
    """Sum of router logits, top-k selection and gates.

    MoWE-Audio combines a data-independent and a data-dependent router; any module mapping pooled strong
    features ``(b, d)`` to logits ``(b, e)`` can be one of ``routers``. A router with a true ``needs_prompt``
    attribute (:class:`~mowe.routers.PromptAwareRouter`) is called as ``r(pooled, prompt)`` instead.

    Args:
        routers: modules whose logits are summed.
        num_encoders: pool size ``e``.
        top_k: weak encoders selected per clip.
        noise_std: std of Gaussian noise added to the logits in training only (noisy top-k; 0 disables).

    Gates are the selected encoders' probabilities under the full softmax (Switch Transformer style), not
    a softmax renormalised over the selection: with ``top_k=1`` a renormalised gate is the constant 1 and
    the routers would get no gradient through the features.
    """

    def __init__(
        self, *, routers: list[nn.Module], num_encoders: int, top_k: int = 1, noise_std: float = 0.0
    ):
        super().__init__()
        if not routers:
            raise MoWEInputError("MixtureRouter needs at least one router")
        if not 1 <= top_k <= num_encoders:
            raise MoWEInputError(f"top_k={top_k} must be between 1 and the pool size {num_encoders}")
        self.routers = nn.ModuleList(routers)
        self.num_encoders = num_encoders
        self.top_k = top_k
        self.noise_std = noise_std
        self.excluded: frozenset[int] = frozenset()

    def exclude(self, indices) -> None:
        """Never select the weak encoders at ``indices`` (an ablation: "this encoder removed"); ``()``
        restores.

        Logits and probabilities stay as computed, so a clip whose choice did not involve an excluded encoder
        gets exactly the same indices and gates; a clip that chose one takes its next-best encoder, gated by
        that encoder's own probability.

        Raises:
            MoWEInputError: an index outside the pool, or fewer than ``top_k`` encoders left.
        """
        idx = frozenset(int(i) for i in indices)
        bad = sorted(i for i in idx if not 0 <= i < self.num_encoders)
        if bad:
            raise MoWEInputError(
                f"exclude: encoder indices {bad} are outside the pool of {self.num_encoders}"
            )
        if self.num_encoders - len(idx) < self.top_k:
            raise MoWEInputError(
                f"exclude: {len(idx)} of {self.num_encoders} encoders excluded leaves fewer than "
                f"top_k={self.top_k}"
            )
        self.excluded = idx

    @property
    def needs_prompt(self) -> bool:
        """Whether a router here also reads the instruction (then ``forward`` needs ``prompt``)."""
        return any(getattr(r, "needs_prompt", False) for r in self.routers)

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor, prompt: torch.Tensor | None = None
    ) -> RouterOutput:
        """Route clips from the strong encoder's ``(b, t, d)`` features and ``(b,)`` frame lengths.

        ``prompt``: ``(b, d_p)`` pooled prompt embedding per clip, for prompt-aware routers (others ignore
        it).
        """
        pooled = masked_mean(features, lengths).float()
        if prompt is None and self.needs_prompt:
            raise MoWEInputError(
                "this router is prompt-aware: pass prompt (b, d_p), the pooled prompt embedding "
                "of each clip's sample (MoWEAudioLLM.prompt_embeddings)"
            )
        logits = sum(
            r(pooled, prompt.float()) if getattr(r, "needs_prompt", False) else r(pooled)
            for r in self.routers
        )
        if logits.shape != (features.shape[0], self.num_encoders):
            raise MoWEInputError(
                f"router logits have shape {tuple(logits.shape)}; expected ({features.shape[0]}, "
                f"{self.num_encoders})"
            )
        if self.training and self.noise_std > 0:
            logits = logits + torch.randn_like(logits) * self.noise_std
        probs = logits.softmax(-1)
        choose = logits
        if self.excluded:
            drop = torch.zeros(self.num_encoders, dtype=torch.bool, device=logits.device)
            drop[list(self.excluded)] = True
            choose = logits.masked_fill(drop, float("-inf"))
        indices = choose.topk(self.top_k, dim=-1).indices
        gates = torch.zeros_like(probs).scatter(-1, indices, probs.gather(-1, indices))
        return RouterOutput(
            logits=logits,
            probs=probs,
            gates=gates,
            indices=indices,
            aux_loss=load_balance_loss(probs, indices),
        )

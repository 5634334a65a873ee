"""Routers over the weak-encoder pool."""

from mowe.routers.base import RouterOutput
from mowe.routers.dependent import DataDependentRouter
from mowe.routers.independent import DataIndependentRouter
from mowe.routers.mixture import MixtureRouter, load_balance_loss, masked_mean
from mowe.routers.prompt import PromptAwareRouter, pool_prompt_embeddings, prompt_token_mask

__all__ = [
           "DataDependentRouter",
           "DataIndependentRouter",
           "MixtureRouter",
           "PromptAwareRouter",
           "RouterOutput",
           "load_balance_loss",
           "masked_mean",
           "pool_prompt_embeddings",
           "prompt_token_mask",
]

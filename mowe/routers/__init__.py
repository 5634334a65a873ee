"""Routers over the weak-encoder pool."""

from mowe.routers.base import RouterOutput, WindowRoute
from mowe.routers.dependent import DataDependentRouter
from mowe.routers.independent import DataIndependentRouter
from mowe.routers.mixture import MixtureRouter, load_balance_loss, masked_mean
from mowe.routers.prompt import PromptAwareRouter, pool_prompt_embeddings, prompt_token_mask
from mowe.routers.windows import route_per_window

__all__ = [
    "DataDependentRouter",
    "DataIndependentRouter",
    "MixtureRouter",
    "PromptAwareRouter",
    "RouterOutput",
    "WindowRoute",
    "load_balance_loss",
    "masked_mean",
    "pool_prompt_embeddings",
    "prompt_token_mask",
    "route_per_window",
]

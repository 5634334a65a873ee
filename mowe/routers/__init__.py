"""Routers over the weak-encoder pool."""

from mowe.routers.base import RouterOutput
from mowe.routers.dependent import DataDependentRouter
from mowe.routers.independent import DataIndependentRouter
from mowe.routers.mixture import MixtureRouter, load_balance_loss, masked_mean

__all__ = [
           "DataDependentRouter",
           "DataIndependentRouter",
           "MixtureRouter",
           "RouterOutput",
           "load_balance_loss",
           "masked_mean",
]

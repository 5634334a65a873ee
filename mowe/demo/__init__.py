"""The local demo: a synthetic multi-task corpus (:mod:`mowe.demo.corpus`) and the base-only vs MoWE experiment
(:mod:`mowe.demo.run`, ``python -m mowe.demo``). Nothing in the core library imports this package."""

from mowe.demo.run import prepare, train_and_evaluate

__all__ = ["prepare", "train_and_evaluate"]

"""The local demo: the question corpus (:mod:`mowe.demo.questions`), the demo's parts
(:mod:`mowe.demo.systems`) and the base-only vs MoWE experiment (:mod:`mowe.demo.run`, ``python -m
   mowe.demo``). Nothing in the core library
imports this package."""

from mowe.demo.run import prepare, run_system

__all__ = ["prepare", "run_system"]

"""Evaluation: per-task metrics (:mod:`~mowe.evaluation.metrics`) and the harness
(:mod:`~mowe.evaluation.evaluate`)."""

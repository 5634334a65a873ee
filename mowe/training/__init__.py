"""Training: the run file (:mod:`~mowe.training.run_file`), the trainer (:mod:`~mowe.training.trainer`) and
how stages (:mod:`mowe.curriculum`) select parameters (:mod:`~mowe.training.stages`)."""

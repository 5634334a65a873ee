"""Training: the trainer (:mod:`~mowe.training.trainer`) and the stage schedules (:mod:`~mowe.training.stages`)."""

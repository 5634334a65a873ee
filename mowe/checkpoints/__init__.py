"""What every released-checkpoint converter shares: the audio placeholder of a converted model
(:mod:`mowe.checkpoints.placeholder`) and the description of a ``mowe convert`` sub-command
(:mod:`mowe.checkpoints.converter`). The formats themselves live in the seed systems' packages."""

"""A user package of components (two conv encoders at 25 / 50 Hz, a duration router), written into a temp folder.

The tests put that folder on ``sys.path`` / ``PYTHONPATH`` so that ``my_parts.Conv`` and ``my_parts.DurationRouter``
are importable only where the test says, as a user's own package would be.
"""

from __future__ import annotations

import os

PACKAGE = "my_parts"

SOURCE = '''
"""A user's own encoder and router (not part of mowe)."""
import torch
from torch import nn

from mowe.encoders.base import EncoderOutput
from mowe.routers import RouterOutput, load_balance_loss


class Conv(nn.Module):
    """Log-energy frames (hop samples each) through a Conv1d: (b, s) -> (b, s // hop, out_dim)."""

    def __init__(self, *, out_dim: int = 8, hop: int = 320):
        super().__init__()
        self.out_dim, self.hop = out_dim, hop
        self.frame_rate = 16000 / hop
        self.min_samples = hop
        self.net = nn.Conv1d(1, out_dim, 3, padding=1)

    def forward(self, waveforms, lengths):
        b, s = waveforms.shape
        t = s // self.hop
        energy = waveforms[:, : t * self.hop].reshape(b, t, self.hop).pow(2).mean(-1).add(1e-6).log()
        return EncoderOutput(features=self.net(energy[:, None]).transpose(1, 2),
                             lengths=torch.div(lengths, self.hop, rounding_mode="floor"))


class DurationRouter(nn.Module):
    """Routes by clip duration: a learned table of logits per duration bucket (strong frames // frames_per_bucket)."""

    def __init__(self, *, num_encoders: int, top_k: int, buckets: int = 4, frames_per_bucket: int = 10):
        super().__init__()
        self.num_encoders, self.top_k = num_encoders, top_k
        self.buckets, self.frames_per_bucket = buckets, frames_per_bucket
        self.table = nn.Embedding(buckets, num_encoders)

    def forward(self, features, lengths):
        bucket = torch.div(lengths, self.frames_per_bucket, rounding_mode="floor").clamp(max=self.buckets - 1)
        logits = self.table(bucket.to(features.device))
        probs = logits.softmax(-1)
        indices = logits.topk(self.top_k, dim=-1).indices
        gates = torch.zeros_like(probs).scatter(-1, indices, probs.gather(-1, indices))
        return RouterOutput(logits=logits, probs=probs, gates=gates, indices=indices,
                            aux_loss=load_balance_loss(probs, indices))
'''


def write_package(folder: str | os.PathLike) -> str:
    """Write ``my_parts/__init__.py`` under ``folder``; returns ``folder`` (the path entry to add)."""
    pkg = os.path.join(folder, PACKAGE)
    os.makedirs(pkg, exist_ok=True)
    with open(os.path.join(pkg, "__init__.py"), "w") as f:
        f.write(SOURCE)
    return os.fspath(folder)

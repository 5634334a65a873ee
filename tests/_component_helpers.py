"""A user package of components (two conv encoders at 25 / 50 Hz, a duration router, a zero-crossing encoder
and a router that reads it), written into a temp folder.

The tests put that folder on ``sys.path`` / ``PYTHONPATH`` so that ``my_parts.Conv`` and
``my_parts.DurationRouter`` are importable only where the test says, as a user's own package would be.
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
    """Routes by clip duration: a learned table of logits per duration bucket
    (strong frames // frames_per_bucket)."""

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


class ZeroCrossings(nn.Module):
    """Zero crossings per second of each 20 ms frame, divided by 1000 (a tone of f Hz gives about 2 f / 1000),
    as ``out_dim`` equal columns: a deterministic 50 Hz encoder whose features follow the pitch."""

    frame_rate = 50.0
    min_samples = 320

    def __init__(self, *, out_dim: int = 4):
        super().__init__()
        self.out_dim = out_dim
        self.scale = nn.Parameter(torch.ones(()), requires_grad=False)  # an encoder has parameters

    def forward(self, waveforms, lengths):
        b, s = waveforms.shape
        t = s // 320
        sign = waveforms[:, : t * 320].reshape(b, t, 320) >= 0
        rate = (sign[..., 1:] != sign[..., :-1]).float().sum(-1) * 50.0 / 1000.0  # (b, t)
        n = torch.div(lengths, 320, rounding_mode="floor").clamp(min=1)
        keep = (torch.arange(t, device=waveforms.device)[None, :] < n[:, None]).float()
        feats = (rate * keep * self.scale)[..., None].expand(-1, -1, self.out_dim).contiguous()
        return EncoderOutput(features=feats, lengths=n)


class PitchRouter(nn.Module):
    """A fixed function of the pooled strong features: encoder 0 below ``threshold`` (pooled zero-crossing
    rate, see ZeroCrossings), encoder 1 above it. No learned weights: the choice follows the audio alone."""

    def __init__(self, *, num_encoders: int, top_k: int, threshold: float = 0.6):
        super().__init__()
        self.num_encoders, self.top_k, self.threshold = num_encoders, top_k, threshold

    def forward(self, features, lengths):
        m = (torch.arange(features.shape[1], device=features.device)[None, :] < lengths[:, None]).float()
        pooled = (features[..., 0] * m).sum(1) / lengths.clamp(min=1).float()  # (b,)
        high = 20.0 * (pooled - self.threshold)
        logits = torch.zeros(features.shape[0], self.num_encoders, device=features.device)
        logits[:, 0], logits[:, 1] = -high, high
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

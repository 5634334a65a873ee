"""The optional ``source`` attribute of the encoder protocol: frozen encoders with a source are referenced,
not copied, by checkpoints (mowe.encoders.base's module docstring)."""

import torch
from conftest import make_batch, tiny_config
from safetensors import safe_open
from torch import nn

from mowe import MoWEAudioLLM
from mowe.config import EncoderConfig
from mowe.encoders import EncoderOutput


class _Frames(nn.Module):
    """A custom frozen weak encoder: frame energies through a fixed random projection at 100 Hz."""

    out_dim, frame_rate, min_samples = 4, 100.0, 160

    def __init__(self, source=None):
        super().__init__()
        torch.manual_seed(7)  # the "pretrained" weights a source would reload
        self.net = nn.Linear(1, 4).requires_grad_(False)
        if source is not None:
            self.source = source

    def forward(self, wav, lengths):
        frames = wav[:, : wav.shape[1] // 160 * 160].unflatten(1, (-1, 160))
        return EncoderOutput(
            self.net(frames.pow(2).mean(-1, keepdim=True)), torch.div(lengths, 160, rounding_mode="floor")
        )


def _saved_keys(model, path):
    model.save_pretrained(path)
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        return set(f.keys())


def test_frozen_custom_encoder_with_source_is_referenced_and_without_is_copied(tmp_path):
    cfg = tiny_config()
    cfg = cfg.replace(weak_encoders={**cfg.weak_encoders, "frames": EncoderConfig("custom")})
    with_src = MoWEAudioLLM.from_config(cfg, encoders={"frames": _Frames(source="/models/frames.pt")}).eval()
    without = MoWEAudioLLM.from_config(cfg, encoders={"frames": _Frames()}).eval()
    ref = _saved_keys(with_src, tmp_path / "a")
    cop = _saved_keys(without, tmp_path / "b")
    mine = {"weak_encoders.encoders.frames.net.weight", "weak_encoders.encoders.frames.net.bias"}
    assert not (mine & ref) and mine <= cop
    assert ref - cop == set() and cop - ref == mine  # nothing else differs
    # Reloading with the module the source promises gives the same model.
    again = MoWEAudioLLM.from_pretrained(
        tmp_path / "a", encoders={"frames": _Frames(source="/models/frames.pt")}
    )
    wav, wl, ids, am, _ = make_batch()
    with torch.no_grad():
        torch.testing.assert_close(
            with_src(ids, wav, wl, attention_mask=am).logits,
            again.eval()(ids, wav, wl, attention_mask=am).logits,
            atol=0,
            rtol=0,
        )
    # A source does not hide trainable weights: those are always saved.
    with_src.weak_encoders.encoders["frames"].net.weight.requires_grad_(True)
    assert "weak_encoders.encoders.frames.net.weight" in _saved_keys(with_src, tmp_path / "c")

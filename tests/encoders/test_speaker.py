"""SpeakerEncoder: resemblyzer's pretrained GE2E through mowe's own modules and torch mel frontend."""

from __future__ import annotations

import importlib.util
import math
import shutil

import pytest
import torch
from torch import nn

from mowe.builders import build_encoder
from mowe.config import EncoderConfig
from mowe.encoders import SpeakerEncoder
from mowe.encoders.speaker import slaney_mel_filters
from mowe.errors import CheckpointError, ConfigError, MoWEInputError

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("resemblyzer") is None,
    reason="resemblyzer (the package shipping pretrained.pt) is not installed",
)


def _voice_like(seconds: float, f0: float = 130.0, seed: int = 0) -> torch.Tensor:
    """A deterministic harmonic signal with vibrato and a formant-like envelope (no RNG across versions)."""
    t = torch.arange(int(seconds * 16000), dtype=torch.float64) / 16000
    phase = 2 * math.pi * (f0 * t + 3.0 * torch.sin(2 * math.pi * 5 * t) / (2 * math.pi * 5) * (1 + seed))
    x = sum(torch.sin(k * phase) / k * (1 + 0.5 * math.cos(k + seed)) for k in range(1, 12))
    return (0.1 * x * (0.6 + 0.4 * torch.sin(2 * math.pi * 2.3 * t))).float()


@pytest.fixture(scope="module")
def enc():
    return SpeakerEncoder.from_pretrained().eval()


@needs_weights
def test_pinned_values_from_shipped_weights(enc):
    """A fixed synthetic clip gives the same numbers as when this test was written (weights + frontend)."""
    x = _voice_like(2.3)
    with torch.no_grad():
        u = enc.embed_utterance(x)
        f = enc(x[None]).features[0]
    assert u.shape == (256,) and abs(float(u.norm()) - 1) < 1e-5
    assert f.shape == (5, 256)  # ceil(2.3 s / 0.5 s)
    top = torch.topk(u, 3)
    assert top.indices.tolist() == PINNED["utt_top"]
    torch.testing.assert_close(top.values, torch.tensor(PINNED["utt_val"]), atol=2e-4, rtol=0)
    torch.testing.assert_close(
        f[[0, 2, 4], [224, 146, 122]], torch.tensor(PINNED["frames"]), atol=2e-4, rtol=0
    )


# Recorded from resemblyzer 0.1.4's pretrained.pt with this module (equal to resemblyzer's own to 1e-7).
PINNED = {
    "utt_top": [224, 146, 122],
    "utt_val": [0.35339, 0.23096, 0.22194],
    "frames": [0.36532, 0.21266, 0.21779],
}


def test_mel_filters_are_slaney_triangles():
    """Unit-area triangles: each filter integrates (over Hz) to ~1 and peaks at its centre band."""
    fb = slaney_mel_filters(n_mels=40, n_fft=400, sample_rate=16000)
    assert fb.shape == (40, 201) and bool((fb >= 0).all())
    area = fb.sum(1) * 40.0  # bin spacing 40 Hz; a triangle's area is width * height / 2 = 1 by construction
    torch.testing.assert_close(area[5:], torch.ones(35), atol=0.05, rtol=0)
    assert fb.argmax(1).diff().ge(0).all()


@needs_weights
def test_batching_and_padding_do_not_change_a_clip(enc):
    clips = [_voice_like(s, seed=i) for i, s in enumerate((2.7, 0.9, 1.75))]
    lengths = torch.tensor([len(c) for c in clips])
    batch = torch.zeros(3, 50000)
    for i, c in enumerate(clips):
        batch[i, : len(c)] = c
    with torch.no_grad():
        out = enc(batch, lengths)
        for i, c in enumerate(clips):
            alone = enc(c[None])
            n = int(alone.lengths[0])
            assert int(out.lengths[i]) == n == math.ceil(len(c) / 8000)
            torch.testing.assert_close(out.features[i, :n], alone.features[0], atol=1e-5, rtol=0)
            assert not out.features[i, n:].any()


@needs_weights
def test_short_clip_frames_equal_its_utterance_embedding(enc):
    """Under 1.6 s every frame reads the one zero-padded partial, which is also embed_utterance's only
    partial."""
    x = _voice_like(1.1, f0=200.0)
    with torch.no_grad():
        f = enc(x[None]).features[0]
        u = enc.embed_utterance(x)
    assert f.shape[0] == 3
    for row in f:
        torch.testing.assert_close(row, u, atol=1e-5, rtol=0)


@needs_weights
def test_volume_normalisation_raises_quiet_clips_only(enc):
    x = _voice_like(2.0)  # about -21 dBFS
    with torch.no_grad():
        quiet, quieter = enc.embed_utterance(x * 0.1), enc.embed_utterance(x * 0.01)
        loud, louder = enc.embed_utterance(x), enc.embed_utterance(x * 3)
    torch.testing.assert_close(
        quiet, quieter, atol=1e-5, rtol=0
    )  # both below -30 dBFS: raised to the same level
    assert (
        float(loud @ louder) < 1 - 1e-6
    )  # above -30 dBFS the level is kept, and GE2E's mel input is not log


@needs_weights
def test_matches_resemblyzer_embed_utterance(enc):
    try:
        from resemblyzer import VoiceEncoder
        from resemblyzer.audio import normalize_volume
    except ImportError as e:
        pytest.skip(f"resemblyzer cannot be imported here (it needs librosa, scipy and webrtcvad): {e}")
    ref = VoiceEncoder("cpu", verbose=False)
    for seconds, seed in ((0.7, 0), (2.3, 1), (4.1, 2)):
        x = _voice_like(seconds, seed=seed) * 0.02
        want = ref.embed_utterance(normalize_volume(x.numpy(), -30, increase_only=True))
        got = enc.embed_utterance(x).numpy()
        assert float(want @ got) > 0.99
        assert abs(want - got).max() < 1e-4


VOICES = ["en-us+m1", "en-us+f2", "en-gb+m3", "en-gb-scotland+f4", "en-029+m7", "en-gb-x-rp+f1"]
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "Please call me back before seven tonight.",
    "A rainbow appeared after the summer storm.",
]


@needs_weights
@pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)"
)
def test_separates_espeak_voices(enc):
    """Nearest-centroid voice ID: enroll on 2 sentences per voice, identify the other 2 (chance is 1/6)."""
    from mowe.demo.corpus import _speak

    emb = {
        v: [enc.embed_utterance(torch.from_numpy(_speak(s, v, 170, 50))) for s in SENTENCES] for v in VOICES
    }
    centroids = torch.stack([torch.nn.functional.normalize(sum(emb[v][:2]), dim=0) for v in VOICES])
    hits = [int((centroids @ e).argmax()) == i for i, v in enumerate(VOICES) for e in emb[v][2:]]
    assert sum(hits) / len(hits) >= 0.75


def test_errors(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="does not exist"):
        SpeakerEncoder.from_pretrained(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"model_state": {"foo": torch.zeros(1)}}, bad)
    with pytest.raises(CheckpointError, match="lstm.weight_ih_l0"):
        SpeakerEncoder.from_pretrained(bad)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        SpeakerEncoder.from_pretrained(tmp_path / "junk.pt")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(CheckpointError, match="resemblyzer is not installed"):
        SpeakerEncoder.from_pretrained()
    monkeypatch.undo()
    lstm, lin = nn.LSTM(40, 8, 1, batch_first=True), nn.Linear(8, 4)
    with pytest.raises(MoWEInputError, match="hop_ms"):
        SpeakerEncoder(lstm=lstm, linear=lin, hop_ms=25)
    with pytest.raises(MoWEInputError, match="batch_first"):
        SpeakerEncoder(lstm=nn.LSTM(40, 8, 1), linear=lin)
    small = SpeakerEncoder(lstm=lstm, linear=lin)
    with pytest.raises(MoWEInputError, match="1-D"):
        small.embed_utterance(torch.zeros(1, 100))
    with pytest.raises(MoWEInputError, match="clip 0"):
        small(torch.full((1, 100), float("nan")))


def test_random_weights_roundtrip_and_builder(tmp_path):
    """A checkpoint in resemblyzer's layout loads by path, through the builder too, and keeps its source."""
    lstm, lin = nn.LSTM(40, 16, 2, batch_first=True), nn.Linear(16, 8)
    state = {
        **{f"lstm.{k}": v for k, v in lstm.state_dict().items()},
        **{f"linear.{k}": v for k, v in lin.state_dict().items()},
    }
    path = tmp_path / "ge2e.pt"
    torch.save({"model_state": state, "step": 1}, path)
    enc = build_encoder(
        EncoderConfig(family="speaker", name_or_path=str(path), overrides={"hop_ms": 250}), name="spk"
    )
    assert (enc.out_dim, enc.frame_rate, enc.source) == (8, 4.0, str(path))
    assert not any(p.requires_grad for p in enc.parameters())
    x = _voice_like(1.0)
    with torch.no_grad():
        got = enc.embed_partials(enc.frontend(x[None])[:, :160].clone())
        direct = nn.functional.normalize(
            torch.relu(lin(lstm(enc.frontend(x[None])[:, :160])[1][0][-1])), dim=-1
        )
    torch.testing.assert_close(got, direct)
    with pytest.raises(ConfigError, match="overrides"):
        build_encoder(
            EncoderConfig(family="speaker", name_or_path=str(path), overrides={"hop": 1}), name="spk"
        )

"""Length-grouped encoding: same features as one padded batch, at a cost that follows the clips' lengths (the
grouping itself: tests/test_tensors.py)."""

import pytest
import torch
from conftest import HUBERT_TINY, WHISPER_TINY

from mowe.encoders import HubertEncoder, WhisperEncoder
from mowe.errors import MoWEInputError

SECONDS = [4.0, 0.3, 2.9, 1.1, 0.45, 3.7, 1.0]


def _batch(seconds, seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([round(s * 16000) for s in seconds])
    wav = torch.zeros(len(seconds), int(lens.max()))
    for i, n in enumerate(lens.tolist()):
        wav[i, :n] = torch.randn(n, generator=g) * 0.1
    return wav, lens


def _layer_input_frames(enc, layer):
    seen = []
    layer.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[:2])))
    return seen


@pytest.mark.parametrize("all_layers", [False, True])
def test_whisper_groups_give_the_same_features_as_one_padded_batch(all_layers):
    grouped = WhisperEncoder.from_preset(
        "tiny", pad_to_30s=False, output_all_layers=all_layers, **WHISPER_TINY
    ).eval()
    single = WhisperEncoder.from_preset(
        "tiny", pad_to_30s=False, output_all_layers=all_layers, bucket_padding=None, **WHISPER_TINY
    ).eval()
    single.load_state_dict(grouped.state_dict())
    wav, lens = _batch(SECONDS)
    seen = _layer_input_frames(grouped, grouped.encoder.layers[0])
    with torch.no_grad():
        a, b = grouped(wav, lens), single(wav, lens)
    assert a.lengths.tolist() == b.lengths.tolist()
    assert a.features.shape == b.features.shape
    keep = (torch.arange(a.features.shape[1])[None, :] < a.lengths[:, None])[..., None]
    torch.testing.assert_close(a.features * keep, b.features * keep, atol=1e-5, rtol=1e-5)
    if all_layers:
        torch.testing.assert_close(
            a.hidden_states * keep[:, None], b.hidden_states * keep[:, None], atol=1e-5, rtol=1e-5
        )
    # Cost follows the clips' lengths: the frames the first layer ran on stay within the padding budget.
    assert len(seen) > 1
    assert sum(n * t for n, t in seen) <= 1.25 * int(a.lengths.sum()) + len(seen)
    assert sum(n for n, _ in seen) == len(SECONDS)


def test_whisper_long_clips_are_grouped_per_window():
    enc = WhisperEncoder.from_preset("tiny", pad_to_30s=False, **WHISPER_TINY, max_source_positions=50).eval()
    ref = WhisperEncoder.from_preset(
        "tiny", pad_to_30s=False, bucket_padding=None, **WHISPER_TINY, max_source_positions=50
    ).eval()
    ref.load_state_dict(enc.state_dict())
    wav, lens = _batch([2.5, 0.4, 1.2])  # 1 s windows: 3, 1 and 2 windows
    with torch.no_grad():
        a, b = enc(wav, lens), ref(wav, lens)
    assert a.lengths.tolist() == b.lengths.tolist() == [125, 20, 60]
    torch.testing.assert_close(a.features, b.features, atol=1e-5, rtol=1e-5)


def test_grouping_keeps_gradients():
    enc = WhisperEncoder.from_preset("tiny", pad_to_30s=False, freeze=False, **WHISPER_TINY).eval()
    ref = WhisperEncoder.from_preset(
        "tiny", pad_to_30s=False, freeze=False, bucket_padding=None, **WHISPER_TINY
    ).eval()
    ref.load_state_dict(enc.state_dict())
    wav, lens = _batch(SECONDS, seed=3)
    for m in (enc, ref):
        out = m(wav, lens)
        keep = (torch.arange(out.features.shape[1])[None, :] < out.lengths[:, None])[..., None]
        (out.features * keep).square().sum().backward()
    for (name, p), q in zip(enc.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-4, msg=name)


def test_hubert_groups_give_the_same_features_as_one_padded_batch():
    grouped = HubertEncoder.from_preset("hubert-base", **HUBERT_TINY).eval()
    single = HubertEncoder.from_preset("hubert-base", bucket_padding=None, **HUBERT_TINY).eval()
    single.load_state_dict(grouped.state_dict())
    wav, lens = _batch(SECONDS, seed=2)
    seen = _layer_input_frames(grouped, grouped.model.encoder.layers[0])
    with torch.no_grad():
        a, b = grouped(wav, lens), single(wav, lens)
    assert a.lengths.tolist() == b.lengths.tolist()
    keep = (torch.arange(a.features.shape[1])[None, :] < a.lengths[:, None])[..., None]
    torch.testing.assert_close(a.features * keep, b.features * keep, atol=1e-5, rtol=1e-5)
    assert len(seen) > 1


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "tight", True])
def test_bad_bucket_padding_is_named(bad):
    with pytest.raises(MoWEInputError, match="bucket_padding"):
        WhisperEncoder.from_preset("tiny", bucket_padding=bad, **WHISPER_TINY)
    with pytest.raises(MoWEInputError, match="bucket_padding"):
        HubertEncoder.from_preset("hubert-base", bucket_padding=bad, **HUBERT_TINY)


def test_auto_bucket_padding_is_tight_on_cpu_and_wider_elsewhere():
    from mowe.tensors import AUTO_BUCKET_PADDING, resolve_bucket_padding

    assert resolve_bucket_padding("auto", torch.device("cpu")) == AUTO_BUCKET_PADDING["cpu"] == 0.05
    assert resolve_bucket_padding("auto", torch.device("cuda")) == AUTO_BUCKET_PADDING["other"] == 0.25
    assert resolve_bucket_padding(0.3, torch.device("cuda")) == 0.3
    assert resolve_bucket_padding(None, torch.device("cpu")) is None
    enc = WhisperEncoder.from_preset("tiny", pad_to_30s=False, **WHISPER_TINY).eval()
    assert enc.bucket_padding == "auto"
    # On CPU, clips 5% apart in length share a group; 20% apart they do not.
    seen = _layer_input_frames(enc, enc.encoder.layers[0])
    wav, lens = _batch([2.0, 1.95, 1.6], seed=3)
    with torch.no_grad():
        enc(wav, lens)
    assert sorted(b for b, _ in seen) == [1, 2]


def test_encoder_config_accepts_auto_and_refuses_other_words(tmp_path):
    from mowe.builders import build_encoder
    from mowe.config import EncoderConfig

    assert EncoderConfig().bucket_padding == "auto"
    with pytest.raises(MoWEInputError, match="bucket_padding"):
        build_encoder(
            EncoderConfig("whisper", preset="tiny", overrides=WHISPER_TINY, bucket_padding="tight"),
            name="strong",
        )

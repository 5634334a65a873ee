import pytest
import torch
from conftest import HUBERT_TINY
from transformers import HubertConfig, HubertForCTC

from mowe.encoders import HubertEncoder
from mowe.errors import MoWEInputError


@pytest.mark.parametrize("preset", ["hubert-base", "wav2vec2-base", "wavlm-base"])
def test_matches_transformers_and_is_padding_invariant(preset):
    # bucket_padding=None: one padded batch, so this checks the masked GroupNorm and attention themselves.
    enc = HubertEncoder.from_preset(preset, bucket_padding=None, **HUBERT_TINY).eval()
    g = torch.Generator().manual_seed(0)
    wav = torch.zeros(2, 16000)
    wav[0] = torch.randn(16000, generator=g) * 0.1
    wav[1, :7000] = torch.randn(7000, generator=g) * 0.1
    with torch.no_grad():
        batched = enc(wav, torch.tensor([16000, 7000]))
        alone = enc(wav[1:, :7000])
        ref = enc.model(wav[1:, :7000]).last_hidden_state
    assert batched.lengths.tolist() == [49, 21]
    torch.testing.assert_close(alone.features, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched.features[1, :21], alone.features[0], atol=1e-5, rtol=1e-5)


def test_protocol_attributes():
    enc = HubertEncoder.from_preset("hubert-base", **HUBERT_TINY)
    assert (enc.out_dim, enc.frame_rate, enc.min_samples) == (32, 50.0, 400)
    assert not any(p.requires_grad for p in enc.parameters())


def test_too_short_clip_is_a_clear_error():
    enc = HubertEncoder.from_preset("hubert-base", **HUBERT_TINY)
    with pytest.raises(MoWEInputError, match="clip 0 .*399 samples.*at least 400"):
        enc(torch.zeros(1, 399))


def test_from_pretrained_by_path_loads_base_of_ctc_checkpoint(tmp_path):
    cfg = HubertConfig(**HUBERT_TINY, vocab_size=32)
    ctc = HubertForCTC(cfg).eval()
    ctc.save_pretrained(tmp_path)
    enc = HubertEncoder.from_pretrained(str(tmp_path)).eval()
    assert enc.source == str(tmp_path) and enc.normalize_waveform is False
    wav = torch.randn(1, 8000) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(enc(wav).features, ctc.hubert(wav).last_hidden_state, atol=1e-5, rtol=1e-5)


def test_normalize_flag_read_from_preprocessor_config(tmp_path):
    from transformers import Wav2Vec2FeatureExtractor

    HubertForCTC(HubertConfig(**HUBERT_TINY, vocab_size=32)).save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(tmp_path)
    enc = HubertEncoder.from_pretrained(str(tmp_path))
    assert enc.normalize_waveform
    # Normalisation makes the features invariant to the clip's gain.
    wav = torch.randn(1, 8000) * 0.1
    torch.testing.assert_close(enc(wav).features, enc(wav * 7).features, atol=1e-4, rtol=1e-4)

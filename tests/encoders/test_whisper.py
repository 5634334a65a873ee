import pytest
import torch
from conftest import WHISPER_TINY
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

from mowe.encoders import LogMelFrontend, WhisperEncoder
from mowe.errors import MoWEInputError


def _wave(n, seed=0):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 0.1


@pytest.mark.parametrize("n_mels", [80, 128])
def test_frontend_matches_transformers_feature_extractor(n_mels):
    wav = _wave(16000 * 3 + 77)
    ref = WhisperFeatureExtractor(feature_size=n_mels)(
        wav.numpy(), sampling_rate=16000, return_tensors="pt"
    ).input_features
    mine = LogMelFrontend(n_mels)(
        wav[None], torch.tensor([wav.numel()]), num_frames=3000, pad_with_silence=True
    )
    assert mine.shape == ref.shape
    torch.testing.assert_close(mine, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_are_openai_whispers_to_one_float32_ulp(n_mels):
    """openai-whisper's mel_filters.npz is librosa.filters.mel(sr=16000, n_fft=400, n_mels) (checked bit-equal
    by benchmarks/mel_filters.py --npz); mowe's filters (transformers' slaney filterbank) differ from it by at
       most one
    float32 rounding (118 of 16080 entries for 80 mels), which moves the log-mel by <= 1.2e-7 on speech."""
    import importlib.util
    from pathlib import Path

    import librosa  # the test extra
    import numpy as np

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "mel_filters.py"
    spec = importlib.util.spec_from_file_location("mel_filters_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    librosa_mel = bench.librosa_mel
    ref = librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels)
    assert np.array_equal(librosa_mel(n_mels), ref)  # the benchmark's exact copy of librosa's algorithm
    ours = LogMelFrontend(n_mels).filters.numpy()
    assert np.array_equal(ours == 0, ref == 0)  # the same triangles
    assert np.all(np.abs(ours.astype(np.float64) - ref) <= np.abs(ref) * 2.0**-23)
    assert not np.array_equal(ours, ref)  # not bit-equal: float noise, kept (see README, "mel filters")


def test_faithful_path_equals_transformers_forward():
    enc = WhisperEncoder.from_preset("tiny", **WHISPER_TINY).eval()
    wav = _wave(16000 * 2)
    with torch.no_grad():
        out = enc(wav[None])
        mel = enc.frontend(wav[None], torch.tensor([wav.numel()]), num_frames=3000, pad_with_silence=True)
        ref = enc.encoder(input_features=mel).last_hidden_state
    assert out.lengths.tolist() == [100]
    torch.testing.assert_close(out.features, ref[:, :100])


@pytest.mark.parametrize("pad_to_30s", [True, False])
def test_padding_does_not_change_a_clip(pad_to_30s):
    # bucket_padding=None: both clips in one padded batch, so this checks the attention masking itself.
    enc = WhisperEncoder.from_preset(
        "tiny", pad_to_30s=pad_to_30s, bucket_padding=None, **WHISPER_TINY
    ).eval()
    wav = torch.zeros(2, 40000)
    wav[0] = _wave(40000, 1)
    wav[1, :12345] = _wave(12345, 2)
    with torch.no_grad():
        batched = enc(wav, torch.tensor([40000, 12345]))
        alone = enc(wav[1:, :12345], torch.tensor([12345]))
    n = int(alone.lengths[0])
    assert int(batched.lengths[1]) == n == 39  # ceil(ceil(12345 / 160) / 2)
    torch.testing.assert_close(batched.features[1, :n], alone.features[0], atol=1e-5, rtol=1e-5)


def test_real_length_path_only_runs_the_needed_frames():
    enc = WhisperEncoder.from_preset("tiny", pad_to_30s=False, **WHISPER_TINY).eval()
    seen = []
    enc.encoder.layers[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    enc(_wave(16000 * 5)[None])
    assert seen == [250]


def test_long_clip_is_windowed_and_concatenated():
    enc = WhisperEncoder.from_preset("tiny", output_all_layers=True, **WHISPER_TINY).eval()
    wav = torch.zeros(2, 16000 * 65)
    wav[0] = _wave(16000 * 65)
    wav[1, : 16000 * 31] = _wave(16000 * 31, 3)
    with torch.no_grad():
        out = enc(wav, torch.tensor([16000 * 65, 16000 * 31]))
        first = enc(wav[:1, : 16000 * 30])
    assert out.lengths.tolist() == [3250, 1550]
    assert out.hidden_states.shape == (2, WHISPER_TINY["encoder_layers"] + 1, 3250, 64)
    torch.testing.assert_close(out.features[0, :1500], first.features[0])
    assert out.features[1, 1550:].abs().sum() == 0


def test_all_layers_last_is_output():
    enc = WhisperEncoder.from_preset("tiny", output_all_layers=True, **WHISPER_TINY).eval()
    out = enc(_wave(8000)[None])
    torch.testing.assert_close(out.hidden_states[:, -1], out.features)


def test_from_pretrained_by_path_reads_only_the_encoder(tmp_path):
    cfg = WhisperConfig(
        **WHISPER_TINY,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=64,
        vocab_size=100,
        num_mel_bins=80,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=3,
    )
    full = WhisperForConditionalGeneration(cfg).eval()
    full.save_pretrained(tmp_path)
    enc = WhisperEncoder.from_pretrained(str(tmp_path)).eval()
    assert enc.source == str(tmp_path)
    assert not any(p.requires_grad for p in enc.parameters())
    wav = _wave(16000)
    with torch.no_grad():
        mel = enc.frontend(wav[None], torch.tensor([16000]), num_frames=3000, pad_with_silence=True)
        ref = full.model.encoder(input_features=mel).last_hidden_state[:, :50]
        torch.testing.assert_close(enc(wav[None]).features, ref)


def test_freeze_flag():
    assert all(
        p.requires_grad for p in WhisperEncoder.from_preset("tiny", freeze=False, **WHISPER_TINY).parameters()
    )
    assert not any(p.requires_grad for p in WhisperEncoder.from_preset("tiny", **WHISPER_TINY).parameters())


def test_bad_inputs_name_the_problem():
    enc = WhisperEncoder.from_preset("tiny", **WHISPER_TINY)
    with pytest.raises(MoWEInputError, match="unknown Whisper size"):
        WhisperEncoder.from_preset("huge")
    bad = _wave(1000)[None].clone()
    bad[0, 10] = float("nan")
    with pytest.raises(MoWEInputError, match="clip 0 .*NaN"):
        enc(bad)
    with pytest.raises(MoWEInputError, match="out of range at clip 1"):
        enc(torch.zeros(2, 100), torch.tensor([100, 101]))
    with pytest.raises(MoWEInputError, match="empty batch"):
        enc(torch.zeros(0, 100))

"""ClipSpan (pad short clips with silence, cut long ones), pad_to_grid and Whisper's full_window (issue
15)."""

import pytest
import torch

from mowe.align import pad_to_grid
from mowe.encoders.beats import BEATsEncoder
from mowe.encoders.span import ClipSpan
from mowe.encoders.whisper import WhisperEncoder
from mowe.errors import MoWEInputError

TINY = dict(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64)


def test_short_clips_are_padded_with_silence_and_long_ones_cut():
    beats = BEATsEncoder.from_preset("tiny").eval()
    span = ClipSpan(encoder=beats, min_seconds=1.0, max_seconds=2.0)
    g = torch.Generator().manual_seed(0)
    wav = torch.randn(3, 40000, generator=g)
    lengths = torch.tensor([4000, 20000, 40000])
    with torch.no_grad():
        out = span(wav, lengths)  # garbage past a clip's end must not leak in: it becomes silence
        short = beats(torch.nn.functional.pad(wav[:1, :4000], (0, 12000)), torch.tensor([16000]))
        long = beats(wav[2:, :32000], torch.tensor([32000]))
    assert out.lengths.tolist() == span.out_lengths(lengths).tolist() == [48, 56, 96]
    torch.testing.assert_close(out.features[:1, :48], short.features, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.features[2:], long.features, atol=1e-5, rtol=0)
    assert span.min_samples == 1 and span.out_dim == beats.out_dim and span.frame_rate == beats.frame_rate


def test_span_shorter_than_the_encoder_minimum_is_refused():
    with pytest.raises(MoWEInputError, match="min_samples"):
        ClipSpan(encoder=BEATsEncoder.from_preset("tiny"), min_seconds=0.1)


def test_pad_to_grid_pairs_frames_by_index_and_zero_pads():
    x = torch.arange(1.0, 13.0).reshape(2, 3, 2)
    out = pad_to_grid(x, torch.tensor([3, 1]), dst_len=5)
    assert out.shape == (2, 5, 2)
    assert torch.equal(out[0, :3], x[0]) and not out[0, 3:].any()
    assert torch.equal(out[1, :1], x[1, :1]) and not out[1, 1:].any()
    assert torch.equal(pad_to_grid(x, torch.tensor([3, 3]), dst_len=2), x[:, :2])


def test_whisper_full_window_keeps_all_1500_frames_of_the_padded_window():
    torch.manual_seed(0)
    full = WhisperEncoder.from_preset("tiny", full_window=True, **TINY).eval()
    cut = WhisperEncoder(full.encoder).eval()
    wav = torch.randn(2, 32000) * (torch.arange(32000)[None] < torch.tensor([[32000], [8000]]))
    lengths = torch.tensor([32000, 8000])
    with torch.no_grad():
        a, b = full(wav, lengths), cut(wav, lengths)
    assert a.features.shape == (2, 1500, 32) and a.lengths.tolist() == [1500, 1500]
    assert full.out_lengths(torch.tensor([1, 480000, 480001])).tolist() == [1500, 1500, 3000]
    torch.testing.assert_close(a.features[:, :100], b.features[:, :100])  # the clip's own frames are the same
    with pytest.raises(MoWEInputError, match="pad_to_30s"):
        WhisperEncoder(full.encoder, pad_to_30s=False, full_window=True)

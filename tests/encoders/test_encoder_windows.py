"""Encoders on audio of any length: windows an encoder declares, stitching, and window settings that do not
fit."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import HUBERT_TINY, LLAMA_TINY, WHISPER_TINY, WHISPER_WEAK, tiny_config
from torch import nn

from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig, MoWEConfig
from mowe.encoders import ClipSpan, HubertEncoder, WhisperEncoder
from mowe.encoders.base import EncoderOutput
from mowe.encoders.windows import check_window_seconds, encode_in_windows, encoder_window_seconds
from mowe.errors import ConfigError, MoWEInputError
from mowe.model import MoWEAudioLLM

SR = 16000


def _wav(seconds, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = [int(s * SR) for s in seconds]
    wav = torch.zeros(len(n), max(n))
    for i, k in enumerate(n):
        wav[i, :k] = 0.1 * torch.randn(k, generator=g)
    return wav, torch.tensor(n)


@pytest.mark.parametrize("pad_to_30s", [False, True])
def test_windows_stitched_by_mowe_equal_whispers_own_long_path(pad_to_30s):
    enc = WhisperEncoder.from_preset(
        "tiny", pad_to_30s=pad_to_30s, output_all_layers=True, max_source_positions=200, **WHISPER_WEAK
    ).eval()
    assert enc.max_input_seconds == 4.0 and encoder_window_seconds(enc) == 4.0
    wav, lens = _wav((9.5, 3.0, 4.0))
    with torch.no_grad():
        own = enc(wav, lens)  # Whisper's own 4 s windows
        ours = encode_in_windows(enc, wav, lens, window=4 * SR)
    assert torch.equal(own.lengths, ours.lengths) and own.lengths.tolist() == [475, 150, 200]
    assert torch.equal(own.features, ours.features)
    for i, n in enumerate(
        own.lengths.tolist()
    ):  # hidden states: equal on the clip's frames (ours are 0 past it)
        assert torch.equal(own.hidden_states[i, :, :n], ours.hidden_states[i, :, :n])
        assert not ours.hidden_states[i, :, n:].any()


def test_hubert_windows_long_clips_so_no_call_sees_more_than_its_window():
    enc = HubertEncoder.from_preset("hubert-base", window_seconds=1.0, **HUBERT_TINY).eval()
    widths = []
    encode = enc._encode
    enc._encode = lambda w, n: (widths.append(w.shape[1]), encode(w, n))[1]  # every call into the network
    wav, lens = _wav((2.6, 0.7))
    with torch.no_grad():
        out = enc(wav, lens)
        first = enc(wav[:1, :SR], torch.tensor([SR]))
        alone = enc(wav[1:, : lens[1]], lens[1:])
    assert widths and max(widths) <= SR
    assert out.lengths.tolist() == [49 + 49 + 29, 34]  # frames of each window, summed
    torch.testing.assert_close(out.features[0, :49], first.features[0])
    torch.testing.assert_close(out.features[1, :34], alone.features[0])  # not changed by its batch


def test_hubert_family_window_comes_from_the_config():
    cfg = dataclasses.replace(
        tiny_config(weak=True),
        weak_encoders={
            "h": EncoderConfig("hubert", preset="hubert-base", overrides=HUBERT_TINY, window_seconds=5.0)
        },
    )
    assert MoWEAudioLLM.from_config(cfg).weak_encoders.encoders["h"].window_seconds == 5.0
    assert HubertEncoder.from_preset("hubert-base", **HUBERT_TINY).window_seconds == 30.0


@pytest.mark.parametrize(
    ("seconds", "message"),
    [
        (31.0, r"x=31 does not fit encoder 'w': longer than its maximum input of 30 s; choose at most 30"),
        (
            2.001,
            r"x=2\.001 does not fit encoder 'w': it is not a multiple of its frame hop \(0\.02 s = 1/50 Hz\)",
        ),
    ],
)
def test_a_window_that_does_not_fit_names_the_encoder_and_the_value(seconds, message):
    enc = WhisperEncoder.from_preset("tiny", **WHISPER_WEAK)
    with pytest.raises(MoWEInputError, match=message):
        check_window_seconds(enc, seconds, who="encoder 'w'", what="x")
    check_window_seconds(enc, 30.0, who="encoder 'w'")  # fits


def test_a_config_window_for_a_whisper_entry_is_checked_and_named():
    cfg = tiny_config(weak=True)
    weak = {
        **cfg.weak_encoders,
        "whisper_a": dataclasses.replace(cfg.weak_encoders["whisper_a"], window_seconds=40.0),
    }
    with pytest.raises(
        ConfigError,
        match=r"^model\.weak_encoders\.whisper_a\.window_seconds=40 does not fit encoder "
        r"'whisper_a': longer than its maximum input of 30 s",
    ):
        MoWEAudioLLM.from_config(dataclasses.replace(cfg, weak_encoders=weak))


def test_clip_span_passes_the_window_on_unless_it_cuts():
    whisper = WhisperEncoder.from_preset("tiny", **WHISPER_WEAK)
    assert ClipSpan(encoder=whisper, min_seconds=1.0).max_input_seconds == 30.0
    assert ClipSpan(encoder=whisper, min_seconds=1.0, max_seconds=30.0).max_input_seconds is None


class ShortOnly(nn.Module):
    """An encoder that refuses inputs over 2 s (it declares max_input_seconds): mean energy per 20 ms
    frame."""

    out_dim, frame_rate, min_samples, max_input_seconds = 4, 50.0, 320, 2.0

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(1, 4)
        self.calls = []

    def forward(self, waveforms, lengths):
        if waveforms.shape[1] > 2 * SR:
            raise AssertionError(f"given {waveforms.shape[1]} samples, more than its 2 s")
        self.calls.append(waveforms.shape[1])
        t = waveforms.shape[1] // 320
        e = waveforms[:, : t * 320].reshape(waveforms.shape[0], t, 320).pow(2).mean(-1, keepdim=True)
        return EncoderOutput(self.proj(e), torch.div(lengths, 320, rounding_mode="floor"))


def test_any_encoder_that_declares_a_maximum_is_run_in_windows_as_strong_and_as_weak():
    strong, weak = ShortOnly(), ShortOnly()
    cfg = MoWEConfig(
        strong=EncoderConfig("custom"),
        weak_encoders={
            "short": EncoderConfig("custom"),
            "w": EncoderConfig("whisper", preset="tiny", overrides=WHISPER_TINY, pad_to_30s=False),
        },
        connector=ConnectorConfig("stack", {"stack": 4}),
        llm=LLMConfig(config=LLAMA_TINY),
        audio_token_id=5,
    )
    torch.manual_seed(0)
    model = MoWEAudioLLM.from_config(cfg, encoders={"strong": strong, "short": weak}).eval()
    with torch.no_grad():
        model.router.routers[0].logits.copy_(torch.tensor([5.0, -5.0]))  # every clip to 'short'
    wav, lens = _wav((5.3, 1.0))
    with torch.no_grad():
        audio = model.encode_audio(wav, lens)
    assert audio.lengths.tolist() == [-(-265 // 4), -(-50 // 4)]
    assert strong.calls and weak.calls and max(strong.calls + weak.calls) <= 2 * SR


def test_windows_encoded_a_few_per_call_give_the_same_frames():
    enc = HubertEncoder.from_preset("hubert-base", window_seconds=None, **HUBERT_TINY).eval()
    sizes = []
    wav, lens = _wav((3.5, 1.2))
    with torch.no_grad():
        at_once = encode_in_windows(enc, wav, lens, window=SR, per_call=None)
        chunked = encode_in_windows(
            lambda w, n: (sizes.append(w.shape[0]), enc(w, n))[1], wav, lens, window=SR, per_call=2
        )
    assert sizes == [2, 2, 2]  # 4 + 2 windows, two per call
    assert torch.equal(at_once.lengths, chunked.lengths)
    torch.testing.assert_close(at_once.features, chunked.features)

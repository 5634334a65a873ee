"""Long audio (issue 26): routing per window, windowed encoders and the token budget, through the whole model.

Must-show 1: a 4-minute recording whose pitch changes at 2:00, a router whose choice is a fixed function of
the pooled strong features (a user component, my_parts.PitchRouter over my_parts.ZeroCrossings): routed per
window (30 s or 60 s) the two halves choose different weak encoders, and the weak features of each half come
only from its choice; routed per clip there is one decision for the whole recording.
Must-show 2: a clip's audio tokens and routing are the same alone or in a padded batch, with routing per
window.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from _component_helpers import PACKAGE, write_package
from conftest import AUDIO_ID, LLAMA_TINY, tiny_config

from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig, MoWEConfig, RouterConfig
from mowe.errors import ConfigError
from mowe.evaluation.plots import plot_router_windows, window_usage
from mowe.model import MoWEAudioLLM, WindowSettingError

SR = 16000


@pytest.fixture
def my_parts(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(write_package(tmp_path / "pkgs"))
    yield PACKAGE


def four_minutes(change_at: float = 120.0, seconds: float = 240.0) -> torch.Tensor:
    """A tone at 200 Hz that jumps to 500 Hz at ``change_at`` seconds (phase-continuous), amplitude 0.3."""
    t = np.arange(int(seconds * SR)) / SR
    freq = np.where(t < change_at, 200.0, 500.0)
    phase = 2 * np.pi * np.cumsum(freq) / SR
    return torch.from_numpy(0.3 * np.sin(phase)).float()


def pitch_model(parts: str, window_seconds: float | None) -> MoWEAudioLLM:
    conv = f"{parts}.Conv"
    cfg = MoWEConfig(
        strong=EncoderConfig(component=f"{parts}.ZeroCrossings", kwargs={"out_dim": 4}),
        weak_encoders={
            "low": EncoderConfig(component=conv, kwargs={"out_dim": 3}),
            "high": EncoderConfig(component=conv, kwargs={"out_dim": 5}),
        },
        router=RouterConfig(component=f"{parts}.PitchRouter", top_k=1, window_seconds=window_seconds),
        connector=ConnectorConfig("stack", {"stack": 4}),
        llm=LLMConfig(config=LLAMA_TINY),
        audio_token_id=AUDIO_ID,
    )
    torch.manual_seed(0)
    return MoWEAudioLLM.from_config(cfg).eval()


def weak_slots(model: MoWEAudioLLM, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pool's output for one clip: which frames carry features of 'low' (columns 0-2) and of 'high'
    (3-7)."""
    lengths = torch.tensor([wav.shape[0]])
    with torch.no_grad():
        strong = model.encode_strong(wav[None], lengths)
        route = model.encode_audio(wav[None], lengths).router
        weak = model.weak_encoders(
            wav[None],
            lengths,
            route,
            frame_rate=50.0,
            frame_lengths=strong.lengths,
            num_frames=strong.features.shape[1],
        )[0]
    return weak[:, :3].abs().sum(-1) > 0, weak[:, 3:].abs().sum(-1) > 0


@pytest.mark.parametrize("window", [30.0, 60.0])
def test_windows_of_a_long_recording_route_on_their_own(my_parts, window):
    wav = four_minutes()
    model = pitch_model(my_parts, window)
    with torch.no_grad():
        audio = model.encode_audio(wav[None], torch.tensor([wav.shape[0]]))
    win = audio.router.per_window()
    n = round(240 / window)
    assert win.indices.shape == (1, n, 1) and bool(win.mask.all()) and win.frames == round(window * 50)
    choice = win.indices[0, :, 0].tolist()
    half = n // 2
    assert choice == [0] * half + [1] * half  # 'low' before 2:00, 'high' after
    low, high = weak_slots(model, wav)
    cut = 120 * 50
    assert bool(low[:cut].all()) and not bool(high[:cut].any())
    assert bool(high[cut:].all()) and not bool(low[cut:].any())
    assert window_usage(audio.router).shape == (n, 2)

    clip = pitch_model(my_parts, None)  # one decision for the whole recording: it cannot follow the change
    with torch.no_grad():
        one = clip.encode_audio(wav[None], torch.tensor([wav.shape[0]]))
    assert one.router.window_indices is None and one.router.per_window().indices.shape == (1, 1, 1)
    low, high = weak_slots(clip, wav)
    assert bool(low.all()) != bool(high.all()) and not (bool(low.any()) and bool(high.any()))


def test_the_router_heatmap_shows_windows(my_parts, tmp_path):
    wav = four_minutes()
    model = pitch_model(my_parts, 30.0)
    with torch.no_grad():
        route = model.encode_audio(wav[None], torch.tensor([wav.shape[0]])).router
    m = plot_router_windows(route, model.weak_encoders.names, tmp_path / "windows.png", window_seconds=30)
    assert (tmp_path / "windows.png").stat().st_size > 1000
    assert m.shape == (8, 2) and (m[:4, 0] > 0.99).all() and (m[4:, 1] > 0.99).all()


def long_model(window: float | None = 30.0, **connector) -> MoWEAudioLLM:
    cfg = tiny_config(weak=True)
    cfg = dataclasses.replace(
        cfg,
        router=dataclasses.replace(cfg.router, window_seconds=window),
        connector=dataclasses.replace(cfg.connector, **connector),
    )
    torch.manual_seed(0)
    return MoWEAudioLLM.from_config(cfg).eval()


def clips(seconds=(70.0, 25.0, 41.5), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = [int(s * SR) for s in seconds]
    wav = torch.zeros(len(n), max(n))
    for i, k in enumerate(n):
        t = torch.arange(k) / SR
        wav[i, :k] = 0.2 * torch.sin(2 * math.pi * (150 + 120 * i) * t * (1 + t / 60)) + 0.05 * torch.randn(
            k, generator=g
        )
    return wav, torch.tensor(n)


def test_a_clip_is_encoded_and_routed_the_same_alone_or_in_a_padded_batch():
    model = long_model(30.0)
    wav, lens = clips()
    with torch.no_grad():
        batch = model.encode_audio(wav, lens)
        for i in range(len(lens)):
            alone = model.encode_audio(wav[i : i + 1, : lens[i]], lens[i : i + 1])
            n = int(alone.lengths[0])
            assert int(batch.lengths[i]) == n
            torch.testing.assert_close(batch.embeds[i, :n], alone.embeds[0], rtol=1e-5, atol=1e-5)
            w = alone.router.window_indices.shape[1]
            assert torch.equal(batch.router.window_indices[i, :w], alone.router.window_indices[0])
            assert not bool(batch.router.window_mask[i, w:].any())
            torch.testing.assert_close(batch.router.window_gates[i, :w], alone.router.window_gates[0])


def test_a_clip_within_one_window_is_routed_as_per_clip():
    per_window, per_clip = long_model(30.0), long_model(None)
    wav, lens = clips((12.0, 7.0))
    with torch.no_grad():
        a, b = per_window.encode_audio(wav, lens), per_clip.encode_audio(wav, lens)
    assert a.router.window_indices.shape[1] == 1 and b.router.window_indices is None
    assert torch.equal(a.router.indices, b.router.indices)
    torch.testing.assert_close(a.router.gates, b.router.gates)
    torch.testing.assert_close(a.embeds, b.embeds)


def test_a_weak_encoder_runs_only_on_the_windows_that_chose_it():
    model = long_model(10.0)
    seen: dict[str, list[int]] = {}
    for name, enc in model.weak_encoders.encoders.items():
        enc.register_forward_pre_hook(
            lambda m, args, name=name: seen.setdefault(name, []).extend(args[1].tolist())
        )
    wav, lens = clips((35.0,))
    with torch.no_grad():
        route = model.encode_audio(wav, lens).router
    picks = route.window_indices[0, :, 0].tolist()
    assert len(picks) == 4
    for e, name in enumerate(model.weak_encoders.names):
        want = sorted(min(10 * SR, int(lens[0]) - 10 * SR * j) for j, p in enumerate(picks) if p == e)
        assert sorted(seen.get(name, [])) == want, name  # one call, its windows only, each at most 10 s


def test_the_aux_loss_balances_windows_and_gradients_reach_the_router():
    model = long_model(10.0).train()
    wav, lens = clips((35.0, 12.0))
    audio = model.encode_audio(wav, lens)
    assert audio.router.window_mask.sum() == 4 + 2 and torch.isfinite(audio.router.aux_loss)
    (audio.embeds.sum() + audio.router.aux_loss).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.router.parameters())


def test_prompt_aware_routing_per_window():
    cfg = tiny_config(weak=True)
    cfg = dataclasses.replace(cfg, router=RouterConfig(prompt_aware=True, hidden_dim=16, window_seconds=10.0))
    torch.manual_seed(0)
    model = MoWEAudioLLM.from_config(cfg).eval()
    wav, lens = clips((25.0, 8.0))
    prompt = torch.randn(2, 64)
    with torch.no_grad():
        a = model.encode_audio(wav, lens, prompt)
        b = model.encode_audio(wav[1:, : lens[1]], lens[1:], prompt[1:])
    assert a.router.window_indices.shape == (2, 3, 1)
    assert torch.equal(a.router.window_indices[1, :1], b.router.window_indices[0])


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (45.0, r"window_seconds=45 does not fit the strong encoder: longer than its maximum input of 30 s"),
        (
            10.01,
            r"window_seconds=10\.01 does not fit the strong encoder: it is not a multiple of its frame hop "
            r"\(0\.02 s",
        ),
    ],
)
def test_a_window_that_does_not_fit_an_encoder_is_a_named_error(setting, message):
    with pytest.raises(ConfigError, match=r"^model\.router\.window_seconds: " + message):
        long_model(setting)
    model = long_model(None)
    with pytest.raises(WindowSettingError, match=message):
        model.window_seconds = setting
    assert model.window_seconds is None  # unchanged by the refused setting


def test_a_weak_encoder_with_a_smaller_maximum_is_named():
    cfg = tiny_config(weak=True)
    weak = dict(cfg.weak_encoders)
    weak["whisper_b"] = dataclasses.replace(
        weak["whisper_b"], overrides={**weak["whisper_b"].overrides, "max_source_positions": 500}
    )
    cfg = dataclasses.replace(
        cfg, weak_encoders=weak, router=dataclasses.replace(cfg.router, window_seconds=20.0)
    )
    with pytest.raises(
        ConfigError,
        match=r"window_seconds=20 does not fit weak encoder 'whisper_b': longer than "
        r"its maximum input of 10 s",
    ):
        MoWEAudioLLM.from_config(cfg)


def test_strong_whisper_windows_match_the_routing_windows():
    model = long_model(10.0)
    wav, lens = clips((25.0,))
    with torch.no_grad():
        got = model.encode_strong(wav, lens)
        parts = [
            model.strong_encoder(
                wav[:, i * 10 * SR : min((i + 1) * 10 * SR, int(lens[0]))],
                torch.tensor([min(10 * SR, int(lens[0]) - i * 10 * SR)]),
            )
            for i in range(3)
        ]
    want = torch.cat([p.features[0, : int(p.lengths[0])] for p in parts])
    assert int(got.lengths[0]) == want.shape[0] == 1250
    torch.testing.assert_close(got.features[0], want)


def test_routing_per_window_off_keeps_long_clips_as_before():
    """Without routing windows the strong Whisper still takes a long clip as its own 30 s windows: the model's
    windowing gives exactly what the encoder alone gives."""
    model = long_model(None)
    wav, lens = clips((70.0, 25.0))
    with torch.no_grad():
        got = model.encode_strong(wav, lens)
        want = model.strong_encoder(wav, lens)
    assert torch.equal(got.lengths, want.lengths) and torch.equal(got.features, want.features)


def test_the_token_budget_caps_tokens_per_clip_and_per_window():
    wav, lens = clips((70.0, 25.0, 41.5))
    free = long_model(30.0)
    with torch.no_grad():
        base = free.encode_audio(wav, lens).lengths.tolist()
    assert base == [875, 313, 519]  # stack 4 at 50 Hz: 750 per minute
    clip_cap = long_model(30.0, max_tokens=300)
    window_cap = long_model(30.0, max_tokens_per_window=100)
    with torch.no_grad():
        capped = clip_cap.encode_audio(wav, lens)
        per_win = window_cap.encode_audio(wav, lens)
        alone = clip_cap.encode_audio(wav[:1], lens[:1])
    assert all(n <= 300 for n in capped.lengths.tolist()) and capped.lengths.tolist()[0] > 250
    # A full window of 1500 frames needs pooling by 4 (375 frames -> 94 tokens); windows are pooled on their
    # own.
    assert per_win.lengths.tolist() == [
        math.ceil((375 + 375 + 125) / 4),
        math.ceil(313 / 4),
        math.ceil((375 + 144) / 4),
    ]
    assert all(n <= 100 * w for n, w in zip(per_win.lengths.tolist(), (3, 1, 2)))
    torch.testing.assert_close(alone.embeds[0], capped.embeds[0, : int(alone.lengths[0])])
    with pytest.raises(
        ConfigError,
        match=r"^model\.connector: max_tokens=2 cannot be met: the connector "
        r"\(StatsPoolConnector\) gives 4 tokens",
    ):
        MoWEAudioLLM.from_config(
            dataclasses.replace(
                tiny_config(weak=False), connector=ConnectorConfig("stats", {"tokens": 4}, max_tokens=2)
            )
        )


def test_window_and_budget_settings_survive_save_and_load_and_the_forward_trains(tmp_path):
    model = long_model(10.0, max_tokens_per_window=40)
    wav, lens = clips((25.0, 8.0))
    ids = torch.tensor([[1, AUDIO_ID, 7, 8], [1, AUDIO_ID, 9, 0]])
    labels = torch.tensor([[-100, -100, 7, 8], [-100, -100, 9, -100]])
    out = model.train()(
        input_ids=ids, waveforms=wav, wave_lengths=lens, attention_mask=(ids != 0).long(), labels=labels
    )
    assert torch.isfinite(out.loss) and out.router.window_indices.shape == (2, 3, 1)
    out.loss.backward()
    model.eval().save_pretrained(tmp_path / "m")
    loaded = MoWEAudioLLM.from_pretrained(tmp_path / "m").eval()
    assert loaded.window_seconds == 10.0 and loaded.token_budget.max_tokens_per_window == 40
    with torch.no_grad():
        a, b = model.encode_audio(wav, lens), loaded.encode_audio(wav, lens)
    assert torch.equal(a.embeds, b.embeds) and torch.equal(a.router.window_indices, b.router.window_indices)


def test_a_hubert_strong_encoder_is_stitched_on_its_nominal_grid():
    """HuBERT gives 1499 frames per 30 s; run in 10 s windows as the strong encoder, each full window is put
    on exactly 500 frames, so the routing windows and the encoder's windows coincide (no drift)."""
    from conftest import HUBERT_TINY

    cfg = tiny_config(weak=True)
    cfg = dataclasses.replace(
        cfg,
        strong=EncoderConfig("hubert", preset="hubert-base", overrides=HUBERT_TINY),
        router=dataclasses.replace(cfg.router, window_seconds=10.0),
    )
    torch.manual_seed(0)
    model = MoWEAudioLLM.from_config(cfg).eval()
    wav, lens = clips((25.0,))
    with torch.no_grad():
        got = model.encode_strong(wav, lens)
        first = model.strong_encoder(wav[:, : 10 * SR], torch.tensor([10 * SR]))
        audio = model.encode_audio(wav, lens)
    assert int(first.lengths[0]) == 499 and int(got.lengths[0]) == 500 + 500 + 250
    torch.testing.assert_close(got.features[0, :499], first.features[0])  # resampled by time: same frames
    assert audio.router.window_mask.tolist() == [[True, True, True]]


def test_the_feature_cache_keeps_windows(tmp_path):
    """Windows go through the feature cache one by one: a second pass over the same long clip reads every
    window of the strong and the chosen weak encoders from it, and gives the same tokens."""
    model = long_model(10.0)
    cache = model.use_feature_cache(tmp_path / "cache")
    wav, lens = clips((35.0,))
    with torch.no_grad():
        first = model.encode_audio(wav, lens)
        assert cache.stats.misses["strong"] == 4 and not cache.stats.hits.get("strong")
        again = model.encode_audio(wav, lens)
    assert cache.stats.hits["strong"] == 4
    assert sum(cache.stats.hits.get(n, 0) for n in model.weak_encoders.names) == 4  # one per window
    assert torch.equal(first.embeds, again.embeds)

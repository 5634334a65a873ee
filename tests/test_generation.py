"""Greedy generation with a length-grouped prefill: the same tokens as transformers' generate, a prefill that
runs each prompt at (about) its own length."""

from unittest import mock

import pytest
import torch
from conftest import AUDIO_ID, LLAMA_TINY, LLM_FAMILIES, WHISPER_TINY, make_batch
from transformers import AutoConfig, AutoModelForCausalLM

from mowe import MoWEAudioLLM
from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig, MoWEConfig
from mowe.errors import MoWEInputError
from mowe.generation import GreedySettings, greedy_settings, grouped_greedy_generate

LENGTHS = (16000, 3000, 9000)  # very different prompt lengths: most of a padded prefill would be padding


def _model(llm: dict) -> MoWEAudioLLM:
    cfg = MoWEConfig(
        strong=EncoderConfig("whisper", preset="tiny", overrides=WHISPER_TINY, pad_to_30s=False),
        connector=ConnectorConfig("stack", {"stack": 1}),
        llm=LLMConfig(config=llm),
        audio_token_id=AUDIO_ID,
    )
    return MoWEAudioLLM.from_config(cfg).eval()


def _left(ids, am):
    """The same prompts padded on the left."""
    shift = [int((a == 0).sum()) for a in am]
    return (
        torch.stack([r.roll(k) for r, k in zip(ids, shift)]),
        torch.stack([a.roll(k) for a, k in zip(am, shift)]),
    )


@pytest.mark.parametrize("family", sorted(LLM_FAMILIES))
@pytest.mark.parametrize("prompt_side", ["right", "left"])
@pytest.mark.parametrize("budget", [0.0, 0.3, float("inf")])
def test_grouped_prefill_generates_what_transformers_generate_does(family, prompt_side, budget):
    m = _model(LLM_FAMILIES[family])
    wav, wl, ids, am, _ = make_batch(LENGTHS)
    if prompt_side == "left":  # generate re-pads after the merge either way
        ids, am = _left(ids, am)
    ref = m.generate(ids, wav, wl, attention_mask=am, max_new_tokens=10, prefill_padding=None)
    out = m.generate(ids, wav, wl, attention_mask=am, max_new_tokens=10, prefill_padding=budget)
    assert out.shape == ref.shape == (3, 10)
    assert torch.equal(out, ref)


def test_eos_stops_rows_pads_them_and_ends_early_like_generate():
    m = _model(LLAMA_TINY)
    wav, wl, ids, am, _ = make_batch(LENGTHS)
    free = m.generate(
        ids, wav, wl, attention_mask=am, max_new_tokens=12, prefill_padding=None, eos_token_id=None
    )
    # An eos that one row emits early and the others later or never: rows must stop and fill with pad.
    eos = int(free[1, 2])
    for kw in ({}, {"min_new_tokens": 5}):
        ref = m.generate(
            ids, wav, wl, attention_mask=am, max_new_tokens=12, prefill_padding=None, eos_token_id=eos, **kw
        )
        out = m.generate(
            ids, wav, wl, attention_mask=am, max_new_tokens=12, prefill_padding=0.0, eos_token_id=eos, **kw
        )
        assert torch.equal(out, ref), kw
    stopped = m.generate(
        ids, wav, wl, attention_mask=am, max_new_tokens=12, prefill_padding=0.0, eos_token_id=eos
    )
    row = stopped[1].tolist()
    cfg = m.llm.generation_config  # MoWEAudioLLM.generate pads with the pad id, else the config's eos id
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else cfg.eos_token_id
    assert row[2] == eos and row[3:] == [pad] * 9
    # Every row emitting eos ends generation before max_new_tokens.
    early = m.generate(
        ids,
        wav,
        wl,
        attention_mask=am,
        max_new_tokens=12,
        prefill_padding=0.0,
        eos_token_id=free[:, 0].tolist(),
    )
    assert early.shape == (3, 1)


def test_prefill_runs_each_group_at_its_own_length():
    m = _model(LLAMA_TINY)
    wav, wl, ids, am, _ = make_batch(LENGTHS)
    seen = []
    layer = next(mod for name, mod in m.llm.named_modules() if name.endswith("layers.0"))
    h = layer.register_forward_pre_hook(
        lambda mod, args, kw: seen.append(tuple((args or (kw["hidden_states"],))[0].shape[:2])),
        with_kwargs=True,
    )
    m.generate(ids, wav, wl, attention_mask=am, max_new_tokens=4, prefill_padding=0.0)
    h.remove()
    audio = m.encode_audio(wav, wl)
    real = (am.sum(1) - 1 + audio.lengths).tolist()  # prompt tokens, the placeholder replaced by the audio
    assert sorted(seen[:3]) == sorted((1, n) for n in real)  # three prompts, three lengths, no padding
    assert seen[3:] == [(3, 1)] * 3  # then one decoding step per new token for the whole batch


def test_auto_groups_greedy_calls_and_leaves_the_rest_to_transformers():
    m = _model(LLAMA_TINY)
    wav, wl, ids, am, _ = make_batch(LENGTHS)
    with mock.patch("mowe.model.grouped_greedy_generate", wraps=grouped_greedy_generate) as spy:
        m.generate(ids, wav, wl, attention_mask=am, max_new_tokens=3)
        assert spy.call_count == 1
        assert spy.call_args.kwargs["max_padding"] == 0.05  # "auto" on CPU
        m.generate(ids, wav, wl, attention_mask=am, max_new_tokens=3, num_beams=2)  # beams: transformers
        m.generate(ids, wav, wl, attention_mask=am, max_new_tokens=3, repetition_penalty=1.3)
        m.generate(ids, wav, wl, attention_mask=am, max_new_tokens=3, prefill_padding=None)
        assert spy.call_count == 1


@pytest.mark.parametrize(
    "kwargs, why",
    [
        ({"num_beams": 2}, "beam"),
        ({"do_sample": True}, "sampling"),
        ({"repetition_penalty": 1.3}, "repetition_penalty"),
        ({"use_cache": False}, "use_cache"),
        ({"streamer": object()}, "streamer"),
    ],
)
def test_an_explicit_budget_refuses_what_is_not_plain_greedy(kwargs, why):
    m = _model(LLAMA_TINY)
    wav, wl, ids, am, _ = make_batch(LENGTHS)
    with pytest.raises(MoWEInputError, match=why):
        m.generate(ids, wav, wl, attention_mask=am, max_new_tokens=3, prefill_padding=0.1, **kwargs)


@pytest.mark.parametrize("bad", [-1.0, "yes", True])
def test_bad_prefill_padding_is_named(bad):
    m = _model(LLAMA_TINY)
    wav, wl, ids, am, _ = make_batch(LENGTHS)
    with pytest.raises(MoWEInputError, match="prefill_padding"):
        m.generate(ids, wav, wl, attention_mask=am, prefill_padding=bad)


def test_greedy_settings_reads_the_generation_config():
    m = _model(LLAMA_TINY)
    s = greedy_settings(m.llm, max_new_tokens=5, min_new_tokens=2, eos_token_id=[3, 4], pad_token_id=0)
    assert s == GreedySettings(max_new_tokens=5, min_new_tokens=2, eos_token_ids=(3, 4), pad_token_id=0)
    # No pad id: rows that finished are filled with the first eos id, as generate does.
    s = greedy_settings(m.llm, max_new_tokens=5, eos_token_id=7, pad_token_id=None)
    assert s.pad_token_id == 7 and s.eos_token_ids == (7,)
    assert "max_new_tokens" in greedy_settings(m.llm, max_new_tokens=None)


def test_sliding_window_llms_are_left_to_transformers():
    cfg = AutoConfig.for_model(
        "mistral",
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        sliding_window=8,
    )
    assert "sliding" in greedy_settings(AutoModelForCausalLM.from_config(cfg), max_new_tokens=3)


def test_right_padded_merge_is_refused():
    m = _model(LLAMA_TINY)
    wav, wl, ids, am, _ = make_batch(LENGTHS)
    merged = m._merge(ids, am, m.encode_audio(wav, wl), None, "right")
    with pytest.raises(ValueError, match="left-padded"):
        grouped_greedy_generate(m.llm, merged, greedy_settings(m.llm, max_new_tokens=2), max_padding=0.0)


@pytest.mark.parametrize("budget", ["auto", None])
def test_text_only_prompts_generate_what_the_llm_alone_does(budget):
    """No waveforms and no placeholder: the LLM answers the text (padded prompts of different lengths)."""
    m = _model(LLAMA_TINY)
    ids = torch.tensor([[1, 7, 8, 9, 10, 11], [1, 12, 13, 0, 0, 0]])
    am = (ids != 0).long()
    out = m.generate(ids, attention_mask=am, max_new_tokens=6, prefill_padding=budget)
    for row, n in zip(range(2), am.sum(1).tolist()):  # one prompt at a time, unpadded, by transformers itself
        alone = m.llm.generate(
            ids[row : row + 1, :n], generation_config=m.generation_config, max_new_tokens=6
        )
        new = alone[0, n:].tolist()
        assert len(new) >= 1 and out[row, : len(new)].tolist() == new
    with pytest.raises(MoWEInputError, match="audio placeholders but no waveforms"):
        m.generate(torch.tensor([[1, AUDIO_ID, 7]]), max_new_tokens=2)

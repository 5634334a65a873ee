"""Padding-free greedy generation: the same tokens as transformers' generate, a prefill over real tokens only."""

from unittest import mock

import pytest
import torch
from conftest import AUDIO_ID, LLAMA_TINY, LLM_FAMILIES, WHISPER_TINY, make_batch
from transformers import AutoConfig

from mowe import MoWEAudioLLM
from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig, MoWEConfig
from mowe.errors import MoWEInputError
from mowe.generation import GreedySettings, greedy_settings, packed_greedy_generate

LLMS = LLM_FAMILIES
LENGTHS = (16000, 3000, 9000)  # very different prompt lengths: most of a padded prefill would be padding


def _model(llm: dict) -> MoWEAudioLLM:
    cfg = MoWEConfig(strong=EncoderConfig("whisper", preset="tiny", overrides=WHISPER_TINY, pad_to_30s=False),
                     connector=ConnectorConfig("stack", {"stack": 1}), llm=LLMConfig(config=llm),
                     audio_token_id=AUDIO_ID)
    return MoWEAudioLLM.from_config(cfg).eval()


@pytest.mark.parametrize("family", sorted(LLMS))
@pytest.mark.parametrize("prompt_side", ["right", "left"])
def test_packed_generate_equals_transformers_generate(family, prompt_side):
    m = _model(LLMS[family])
    wav, wl, ids, am, _ = make_batch(LENGTHS)
    if prompt_side == "left":  # re-pad the prompts on the left: generate re-pads after the merge either way
        ids, am = torch.stack([r.roll(int((a == 0).sum())) for r, a in zip(ids, am)]), \
            torch.stack([a.roll(int((a == 0).sum())) for a in am])
    ref = m.generate(ids, wav, wl, attention_mask=am, max_new_tokens=10, pack=False)
    out = m.generate(ids, wav, wl, attention_mask=am, max_new_tokens=10, pack=True)
    assert out.shape == ref.shape == (3, 10)
    assert torch.equal(out, ref)


def test_eos_stops_rows_pads_them_and_ends_early_like_generate():
    m = _model(LLAMA_TINY)
    wav, wl, ids, am, _ = make_batch(LENGTHS)
    free = m.generate(ids, wav, wl, attention_mask=am, max_new_tokens=12, pack=False, eos_token_id=None)
    # An eos that one row emits early and the others later or never: rows must stop and fill with pad.
    eos = int(free[1, 2])
    for kw in ({}, {"min_new_tokens": 5}):
        ref = m.generate(ids, wav, wl, attention_mask=am, max_new_tokens=12, pack=False, eos_token_id=eos, **kw)
        out = m.generate(ids, wav, wl, attention_mask=am, max_new_tokens=12, pack=True, eos_token_id=eos, **kw)
        assert torch.equal(out, ref), kw
    stopped = m.generate(ids, wav, wl, attention_mask=am, max_new_tokens=12, pack=True, eos_token_id=eos)
    row = stopped[1].tolist()
    cfg = m.llm.generation_config  # MoWEAudioLLM.generate pads with the pad id, else the config's eos id
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else cfg.eos_token_id
    assert row[2] == eos and row[3:] == [pad] * 9
    # Every row emitting eos ends generation before max_new_tokens.
    first = int(free[0, 0])
    early = m.generate(ids, wav, wl, attention_mask=am, max_new_tokens=12, pack=True,
                       eos_token_id=[first, *free[1:, 0].tolist()])
    assert early.shape == (3, 1)


def test_prefill_runs_real_tokens_only_and_once():
    m = _model(LLAMA_TINY)
    wav, wl, ids, am, _ = make_batch(LENGTHS)
    seen = []
    layer = next(mod for name, mod in m.llm.named_modules() if name.endswith("layers.0"))
    h = layer.register_forward_pre_hook(
        lambda mod, args, kw: seen.append(tuple((args or (kw["hidden_states"],))[0].shape[:2])), with_kwargs=True)
    m.generate(ids, wav, wl, attention_mask=am, max_new_tokens=4, pack=True)
    h.remove()
    audio = m.encode_audio(wav, wl)
    real = int(am.sum()) - 3 + int(audio.lengths.sum())  # prompt tokens, placeholders replaced by audio tokens
    assert seen == [(1, real)] + [(3, 1)] * 3


def test_auto_packs_when_it_pays_and_falls_back_otherwise():
    m = _model(LLAMA_TINY)
    wav, wl, ids, am, _ = make_batch(LENGTHS)
    with mock.patch("mowe.model.packed_greedy_generate", wraps=packed_greedy_generate) as spy:
        m.generate(ids, wav, wl, attention_mask=am, max_new_tokens=3)
        assert spy.call_count == 1
        m.generate(ids[:1], wav[:1], wl[:1], max_new_tokens=3)  # one prompt: nothing to pack
        m.generate(ids, wav, wl, attention_mask=am, max_new_tokens=3, num_beams=2)  # beams: transformers
        m.generate(ids, wav, wl, attention_mask=am, max_new_tokens=3, repetition_penalty=1.3)
        assert spy.call_count == 1


@pytest.mark.parametrize("kwargs, why", [({"num_beams": 2}, "beam"), ({"do_sample": True}, "sampling"),
                                         ({"repetition_penalty": 1.3}, "repetition_penalty"),
                                         ({"use_cache": False}, "use_cache"),
                                         ({"streamer": object()}, "streamer")])
def test_pack_true_refuses_what_is_not_plain_greedy(kwargs, why):
    m = _model(LLAMA_TINY)
    wav, wl, ids, am, _ = make_batch(LENGTHS)
    with pytest.raises(MoWEInputError, match=why):
        m.generate(ids, wav, wl, attention_mask=am, max_new_tokens=3, pack=True, **kwargs)


def test_bad_pack_value_is_refused():
    m = _model(LLAMA_TINY)
    wav, wl, ids, am, _ = make_batch(LENGTHS)
    with pytest.raises(MoWEInputError, match="pack"):
        m.generate(ids, wav, wl, attention_mask=am, pack="yes")


def test_greedy_settings_reads_the_generation_config():
    m = _model(LLAMA_TINY)
    s = greedy_settings(m.llm, max_new_tokens=5, min_new_tokens=2, eos_token_id=[3, 4], pad_token_id=0)
    assert s == GreedySettings(max_new_tokens=5, min_new_tokens=2, eos_token_ids=(3, 4), pad_token_id=0)
    # No pad id: rows that finished are filled with the first eos id, as generate does.
    s = greedy_settings(m.llm, max_new_tokens=5, eos_token_id=7, pad_token_id=None)
    assert s.pad_token_id == 7 and s.eos_token_ids == (7,)
    assert "max_new_tokens" in greedy_settings(m.llm, max_new_tokens=None)


def test_sliding_window_llms_are_left_to_transformers():
    from transformers import AutoModelForCausalLM

    cfg = AutoConfig.for_model("mistral", vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                               num_attention_heads=2, num_key_value_heads=1, sliding_window=8)
    assert "sliding" in greedy_settings(AutoModelForCausalLM.from_config(cfg), max_new_tokens=3)


def test_right_padded_merge_is_refused():
    m = _model(LLAMA_TINY)
    wav, wl, ids, am, _ = make_batch(LENGTHS)
    merged = m._merge(ids, am, m.encode_audio(wav, wl), None, "right")
    with pytest.raises(ValueError, match="left-padded"):
        packed_greedy_generate(m.llm, merged, greedy_settings(m.llm, max_new_tokens=2))

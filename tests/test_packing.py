"""Padding-free (packed) LLM pass: the same loss, logits and gradients as the padded batch, fewer tokens run."""

import pytest
import torch
from conftest import AUDIO_ID, LLAMA_TINY, LLM_FAMILIES, WHISPER_TINY, make_batch

from mowe import MoWEAudioLLM
from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig, MoWEConfig
from mowe.merge import MergedInputs, pack_merged, packing_pays

LLMS = LLM_FAMILIES


def _model(llm: dict) -> MoWEAudioLLM:
    cfg = MoWEConfig(strong=EncoderConfig("whisper", preset="tiny", overrides=WHISPER_TINY, pad_to_30s=False),
                     connector=ConnectorConfig("stack", {"stack": 2}), llm=LLMConfig(config=llm),
                     audio_token_id=AUDIO_ID)
    return MoWEAudioLLM.from_config(cfg)


def test_pack_merged_drops_padding_and_shifts_labels_within_samples():
    emb = torch.arange(2 * 4 * 1, dtype=torch.float).reshape(2, 4, 1)
    am = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])  # right- and left-padded rows
    pos = torch.tensor([[0, 1, 2, 0], [0, 0, 1, 2]])
    labels = torch.tensor([[-100, 5, 6, -100], [-100, -100, 7, 8]])
    p = pack_merged(MergedInputs(emb, am, pos, labels, torch.zeros_like(am, dtype=torch.bool)))
    assert p.inputs_embeds[0, :, 0].tolist() == [0, 1, 2, 5, 6, 7]
    assert p.position_ids.tolist() == [[0, 1, 2, 0, 1, 2]]
    # Each token's label is its own sample's next token; a sample's last token predicts nothing.
    assert p.shift_labels.tolist() == [[5, 6, -100, 7, 8, -100]]


@pytest.mark.parametrize("family", sorted(LLMS))
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_packed_forward_equals_padded(family, padding_side):
    torch.manual_seed(0)
    m = _model(LLMS[family])
    m.train()
    for mod in m.llm.modules():  # dropout off: compare the arithmetic, not random masks
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    wav, wl, ids, am, labels = make_batch()
    params = [p for p in m.parameters() if p.requires_grad]

    def run(pack):
        out = m(ids, wav, wl, attention_mask=am, labels=labels, padding_side=padding_side, pack=pack)
        grads = torch.autograd.grad(out.loss, params)
        return out, grads

    a, ga = run(False)
    b, gb = run(True)
    torch.testing.assert_close(b.loss, a.loss, atol=1e-5, rtol=1e-5)
    keep = a.attention_mask.bool()
    torch.testing.assert_close(b.logits[keep], a.logits[keep], atol=1e-4, rtol=1e-4)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(y, x, atol=1e-5, rtol=1e-4)


def test_packed_pass_runs_only_real_tokens():
    m = _model(LLAMA_TINY)
    wav, wl, ids, am, labels = make_batch()
    seen = []
    m.llm.get_input_embeddings()  # the decoder layers see the merged sequence
    layer = next(mod for name, mod in m.llm.named_modules() if name.endswith("layers.0"))
    h = layer.register_forward_pre_hook(lambda mod, args, kw: seen.append(tuple((args or (kw["hidden_states"],))[0]
                                                                                .shape[:2])), with_kwargs=True)
    out = m(ids, wav, wl, attention_mask=am, labels=labels, pack=True)
    h.remove()
    assert seen == [(1, int(out.attention_mask.sum()))]
    assert int(out.attention_mask.sum()) < out.attention_mask.numel()  # the batch did have padding


def _mask(lengths):
    t = max(lengths)
    return (torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]).long()


def test_packing_pays_follows_the_flop_balance():
    mixed = _mask([800, 100, 120, 90, 60, 300, 200, 150])
    # A 7B-wide LLM: the projections dominate, and half the padded tokens are padding.
    assert packing_pays(mixed, hidden_size=4096, intermediate_size=11008)
    # A toy LLM on 16 samples of similar length: attention over the long packed row costs more than the
    # little padding saves (the demo's case).
    similar = _mask([100, 80, 90, 70, 60, 100, 95, 85] * 2)
    assert not packing_pays(similar, hidden_size=64, intermediate_size=128)
    assert packing_pays(similar, hidden_size=4096, intermediate_size=11008)
    # Variable-length attention kernels make packing pay whenever there is padding.
    assert packing_pays(mixed, hidden_size=64, intermediate_size=128, varlen_attention=True)
    # No padding: nothing to gain.
    assert not packing_pays(_mask([100, 100, 100]), hidden_size=4096, intermediate_size=11008)


def test_auto_packing_decides_per_batch_and_bad_values_are_named():
    m = _model(LLAMA_TINY)
    wav, wl, ids, am, labels = make_batch()
    rows = []
    layer = next(mod for name, mod in m.llm.named_modules() if name.endswith("layers.0"))
    layer.register_forward_pre_hook(lambda mod, args, kw: rows.append((args or (kw["hidden_states"],))[0].shape[0]),
                                    with_kwargs=True)
    out = m(ids, wav, wl, attention_mask=am, labels=labels, pack="auto")
    expected = 1 if m._packing_pays(out.attention_mask) else ids.shape[0]
    assert rows == [expected]
    with pytest.raises(ValueError, match="pack"):
        m(ids, wav, wl, attention_mask=am, labels=labels, pack="yes")

"""Padding-free (packed) and length-grouped LLM passes: the same loss, logits and gradients as the padded
batch, fewer tokens run."""

from unittest import mock

import pytest
import torch
from conftest import AUDIO_ID, LLAMA_TINY, LLM_FAMILIES, WHISPER_TINY, make_batch

from mowe import MoWEAudioLLM
from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig, MoWEConfig
from mowe.merge import MergedInputs, cheapest_llm_layout, llm_pass_flops, pack_merged

LLMS = LLM_FAMILIES


def _model(llm: dict) -> MoWEAudioLLM:
    cfg = MoWEConfig(
        strong=EncoderConfig("whisper", preset="tiny", overrides=WHISPER_TINY, pad_to_30s=False),
        connector=ConnectorConfig("stack", {"stack": 2}),
        llm=LLMConfig(config=llm),
        audio_token_id=AUDIO_ID,
    )
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
@pytest.mark.parametrize("layout", [True, "groups"])
def test_packed_and_grouped_forward_equal_padded(family, padding_side, layout):
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
    b, gb = run(layout)
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
    h = layer.register_forward_pre_hook(
        lambda mod, args, kw: seen.append(tuple((args or (kw["hidden_states"],))[0].shape[:2])),
        with_kwargs=True,
    )
    out = m(ids, wav, wl, attention_mask=am, labels=labels, pack=True)
    h.remove()
    assert seen == [(1, int(out.attention_mask.sum()))]
    assert int(out.attention_mask.sum()) < out.attention_mask.numel()  # the batch did have padding


def _mask(lengths):
    t = max(lengths)
    return (torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]).long()


def packing_pays(mask, **kw) -> bool:
    return llm_pass_flops(mask, layout="packed", **kw) < llm_pass_flops(mask, layout="padded", **kw)


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


def test_grouped_pass_runs_each_row_at_its_own_length():
    m = _model(LLAMA_TINY)
    wav, wl, ids, am, labels = make_batch((16000, 3000, 9000))
    seen = []
    layer = next(mod for name, mod in m.llm.named_modules() if name.endswith("layers.0"))
    h = layer.register_forward_pre_hook(
        lambda mod, args, kw: seen.append(tuple((args or (kw["hidden_states"],))[0].shape[:2])),
        with_kwargs=True,
    )
    out = m(ids, wav, wl, attention_mask=am, labels=labels, pack="groups")
    h.remove()
    lens = out.attention_mask.sum(1).tolist()
    assert len(set(lens)) == 3 and sorted(seen) == sorted((1, n) for n in lens)
    # Logits on padding are zeros; the loss is the whole batch's mean, not a mean of group means.
    assert out.logits[~out.attention_mask.bool()].abs().sum() == 0


def test_grouped_loss_weights_groups_by_their_label_tokens():
    m = _model(LLAMA_TINY)
    m.eval()
    wav, wl, ids, am, labels = make_batch((16000, 3000, 9000))
    labels[0, 2:] = -100  # rows with very different label counts: a mean of group means would differ
    labels[0, 2] = ids[0, 2]
    a = m(ids, wav, wl, attention_mask=am, labels=labels, pack=False).loss
    b = m(ids, wav, wl, attention_mask=am, labels=labels, pack="groups").loss
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_llm_pass_flops_of_each_layout():
    mask = _mask([4, 2, 1])
    kw = {"hidden_size": 8, "intermediate_size": 16, "call_overhead": 0.0}
    per_token, per_pair = 2.0 * (4 * 64 + 3 * 8 * 16), 32.0
    assert llm_pass_flops(mask, layout="padded", **kw) == 3 * 4 * (per_token + 4 * per_pair)
    assert llm_pass_flops(mask, layout="packed", **kw) == 7 * per_token + 49 * per_pair
    assert llm_pass_flops(mask, layout="packed", varlen_attention=True, **kw) == 7 * per_token + 21 * per_pair
    # Budget 0: every length its own group, so groups cost exactly the real rows.
    assert llm_pass_flops(mask, layout="groups", group_padding=0.0, **kw) == 7 * per_token + 21 * per_pair
    # Each call costs its overhead: three groups, three overheads; one padded batch, one.
    extra = {**kw, "call_overhead": 1000.0}
    assert (
        llm_pass_flops(mask, layout="groups", group_padding=0.0, **extra)
        == 7 * per_token + 21 * per_pair + 3000
    )
    assert (
        llm_pass_flops(mask, layout="padded", **extra) == llm_pass_flops(mask, layout="padded", **kw) + 1000
    )
    with pytest.raises(ValueError, match="layout"):
        llm_pass_flops(mask, layout="ragged", **kw)


def test_the_cheapest_layout_follows_sizes_lengths_and_kernels():
    mixed = _mask([800, 100, 120, 90, 60, 300, 200, 150])
    similar = _mask([100, 80, 90, 70, 60, 100, 95, 85] * 2)
    bench = {"hidden_size": 512, "intermediate_size": 1408}  # bench_e2e's LLM
    toy = {"hidden_size": 96, "intermediate_size": 192}  # the demo's LLM
    # Mixed lengths: groups skip the padding and the dense attention of one long packed row.
    assert cheapest_llm_layout(mixed, **bench) == "groups"
    # Variable-length attention kernels: one packed row is never worse.
    assert cheapest_llm_layout(mixed, varlen_attention=True, **bench) is True
    # A toy LLM on similar lengths: the calls of many groups cost more than the little padding.
    assert cheapest_llm_layout(similar, **toy) is False
    # No padding at all: one padded batch.
    assert cheapest_llm_layout(_mask([300] * 4), **bench) is False


def test_auto_runs_the_layout_it_picks_and_bad_values_are_named():
    m = _model(LLAMA_TINY)
    wav, wl, ids, am, labels = make_batch((16000, 3000, 9000))
    rows = []
    layer = next(mod for name, mod in m.llm.named_modules() if name.endswith("layers.0"))
    layer.register_forward_pre_hook(
        lambda mod, args, kw: rows.append((args or (kw["hidden_states"],))[0].shape[0]), with_kwargs=True
    )
    with mock.patch.object(m, "_llm_layout", return_value="groups"):
        m(ids, wav, wl, attention_mask=am, labels=labels, pack="auto")
    assert rows == [1, 1, 1]
    rows.clear()
    out = m(ids, wav, wl, attention_mask=am, labels=labels, pack="auto")
    assert rows == {False: [3], True: [1], "groups": [1, 1, 1]}[m._llm_layout(out.attention_mask)]
    with pytest.raises(ValueError, match="pack"):
        m(ids, wav, wl, attention_mask=am, labels=labels, pack="yes")

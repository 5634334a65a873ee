"""Prompt-aware routing (issue 14): the instruction can change the route, the audio-only routers stay blind to
it."""

import json

import numpy as np
import pytest
import torch
from conftest import HUBERT_TINY, LLAMA_TINY, WHISPER_TINY, WHISPER_WEAK

from mowe import MoWEAudioLLM, MoWEConfig
from mowe.builders import build_router
from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig, RouterConfig
from mowe.data.collator import MoWECollator
from mowe.data.processor import MoWEProcessor
from mowe.data.tokenizer import train_bpe_tokenizer
from mowe.errors import ConfigError, MoWEInputError
from mowe.routers import (
    DataDependentRouter,
    DataIndependentRouter,
    MixtureRouter,
    PromptAwareRouter,
    RouterOutput,
    pool_prompt_embeddings,
    prompt_token_mask,
)

WHO = "Who is speaking, a man or a woman?"
WHAT = "Transcribe the speech."
AUDIO = 7


@pytest.fixture(scope="module")
def processor():
    texts = [WHO + " male female", WHAT + " one two three", "What sound is this? tone"] * 5
    return MoWEProcessor(train_bpe_tokenizer(texts, vocab_size=300))


def _config(processor, *, prompt_aware: bool, train: str = "lora") -> MoWEConfig:
    pool = {
        "whisper_a": EncoderConfig("whisper", preset="tiny", overrides=WHISPER_WEAK, pad_to_30s=False),
        "whisper_b": EncoderConfig("whisper", preset="tiny", overrides=WHISPER_WEAK, pad_to_30s=False),
        "hubert_a": EncoderConfig("hubert", preset="hubert-base", overrides=HUBERT_TINY),
    }
    return MoWEConfig(
        strong=EncoderConfig("whisper", preset="tiny", overrides=WHISPER_TINY, pad_to_30s=False),
        weak_encoders=pool,
        router=RouterConfig(prompt_aware=prompt_aware, hidden_dim=32),
        connector=ConnectorConfig("stack", {"stack": 4}),
        llm=LLMConfig(config={**LLAMA_TINY, "vocab_size": len(processor.tokenizer)}, train=train),
        audio_token_id=processor.audio_token_id,
    )


@pytest.fixture(scope="module")
def model(processor):
    torch.manual_seed(0)
    return MoWEAudioLLM.from_config(_config(processor, prompt_aware=True)).eval()


def _examples(instructions, n_clips=2):
    t = np.arange(12000) / 16000
    out = []
    for i in range(n_clips):
        wave = (0.3 * np.sin(2 * np.pi * (220 + 170 * i) * t[: 9000 + 1500 * i])).astype(np.float32)
        for j, ins in enumerate(instructions):
            out.append(
                {"id": f"c{i}q{j}", "audio": wave, "instruction": ins, "answer": "male one two", "task": ins}
            )
    return out


def _inputs(batch):
    return {k: batch[k] for k in ("input_ids", "attention_mask", "waveforms", "wave_lengths")}


def _construct(
    mix: MixtureRouter, p1: torch.Tensor, p2: torch.Tensor, *, first: int = 0, second: int = 1
) -> None:
    """Weights under which prompt ``p1`` (d,) routes every clip to ``first`` and ``p2`` to ``second``.

    The audio path is zeroed so the hidden state ``g(p)`` depends on the prompt alone; with ``D = g1 - g2``
    the logits are ``+-D . g(p) -+ D . (g1 + g2) / 2``, i.e. ``+-|D|^2 / 2`` of opposite signs for the two
    prompts.
    """
    prompt_router = next(r for r in mix.routers if isinstance(r, PromptAwareRouter))
    with torch.no_grad():
        for r in mix.routers:
            if isinstance(r, DataIndependentRouter):
                r.logits.zero_()
        pr = prompt_router
        pr.audio_proj.weight.zero_()
        pr.audio_proj.bias.zero_()
        g1, g2 = (pr.act(pr.prompt_proj(pr.prompt_norm(p[None].float())))[0] for p in (p1, p2))
        d = g1 - g2
        scale = 10.0 / float(d @ d)
        pr.out.weight.zero_()
        pr.out.bias.zero_()
        pr.out.weight[first], pr.out.weight[second] = scale * d, -scale * d
        mid = float(d @ (g1 + g2)) / 2
        pr.out.bias[first], pr.out.bias[second] = -scale * mid, scale * mid


# ------------------------------------------------------------------------------------------- the module alone
def test_router_output_has_the_same_type_and_shapes_as_audio_only_routing():
    torch.manual_seed(0)
    feats, lens, prompt = torch.randn(5, 9, 16), torch.tensor([9, 4, 7, 1, 9]), torch.randn(5, 24)
    pa = MixtureRouter(
        routers=[
            DataIndependentRouter(num_encoders=4),
            PromptAwareRouter(in_dim=16, prompt_dim=24, num_encoders=4, hidden_dim=8),
        ],
        num_encoders=4,
        top_k=2,
    )
    ao = MixtureRouter(
        routers=[DataIndependentRouter(num_encoders=4), DataDependentRouter(in_dim=16, num_encoders=4)],
        num_encoders=4,
        top_k=2,
    )
    a, b = pa(feats, lens, prompt), ao(feats, lens)
    assert type(a) is RouterOutput is type(b)
    for field in ("logits", "probs", "gates", "indices"):
        assert getattr(a, field).shape == getattr(b, field).shape, field
    assert ((a.gates > 0).sum(-1) == 2).all() and a.aux_loss.dim() == 0
    assert pa.needs_prompt and not ao.needs_prompt
    with pytest.raises(MoWEInputError, match="prompt-aware"):
        pa(feats, lens)
    with pytest.raises(MoWEInputError, match="prompt_dim=24"):
        pa(feats, lens, torch.randn(5, 23))


def test_constructed_weights_change_top1_when_only_the_instruction_changes():
    torch.manual_seed(1)
    feats, lens = torch.randn(6, 9, 16), torch.full((6,), 9)
    p1, p2 = torch.randn(24), torch.randn(24)
    mix = MixtureRouter(
        routers=[
            DataIndependentRouter(num_encoders=3),
            PromptAwareRouter(in_dim=16, prompt_dim=24, num_encoders=3),
        ],
        num_encoders=3,
    )
    _construct(mix, p1, p2, first=2, second=0)
    assert mix(feats, lens, p1.expand(6, -1)).indices[:, 0].tolist() == [2] * 6
    assert mix(feats, lens, p2.expand(6, -1)).indices[:, 0].tolist() == [0] * 6
    # An audio-only router given the same inputs ignores the prompt entirely.
    ao = MixtureRouter(
        routers=[DataIndependentRouter(num_encoders=3), DataDependentRouter(in_dim=16, num_encoders=3)],
        num_encoders=3,
    )
    torch.testing.assert_close(
        ao(feats, lens, p1.expand(6, -1)).logits, ao(feats, lens, p2.expand(6, -1)).logits, rtol=0, atol=0
    )


def test_trained_router_learns_an_instruction_dependent_route_audio_only_cannot():
    """Target: encoder 0 for instruction A, 1 for B, on the same clips. Only the prompt separates the
    targets."""
    torch.manual_seed(0)
    n, d, dp = 12, 16, 24
    feats = torch.randn(n, 5, d).repeat(2, 1, 1)
    lens = torch.full((2 * n,), 5)
    prompts = torch.cat([torch.randn(dp).expand(n, -1), torch.randn(dp).expand(n, -1)]) + 0.01 * torch.randn(
        2 * n, dp
    )
    target = torch.cat([torch.zeros(n), torch.ones(n)]).long()

    def fit(mix):
        opt = torch.optim.Adam(mix.parameters(), lr=1e-2)
        for _ in range(150):
            out = mix(feats, lens, prompts)
            loss = torch.nn.functional.cross_entropy(out.logits, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return mix(feats, lens, prompts).indices[:, 0]

    pa = fit(
        MixtureRouter(
            routers=[
                DataIndependentRouter(num_encoders=3),
                PromptAwareRouter(in_dim=d, prompt_dim=dp, num_encoders=3, hidden_dim=32),
            ],
            num_encoders=3,
        )
    )
    ao = fit(
        MixtureRouter(
            routers=[
                DataIndependentRouter(num_encoders=3),
                DataDependentRouter(in_dim=d, num_encoders=3, hidden_dim=32),
            ],
            num_encoders=3,
        )
    )
    assert torch.equal(pa, target)  # the same clip goes to 0 under A and to 1 under B
    assert torch.equal(ao[:n], ao[n:])  # the same clip goes to one place whatever is asked
    assert (ao == target).float().mean() <= 0.5


# ------------------------------------------------------------------------------------------- the prompt
# vector
def test_prompt_mask_excludes_padding_placeholders_and_answers_and_pools_per_clip():
    ids = torch.tensor([[0, 0, 1, AUDIO, 3, 4, 9, 9], [1, AUDIO, 5, AUDIO, 6, 9, 0, 0]])
    am = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0, 0]])
    labels = torch.tensor([[-100] * 6 + [9, 9], [-100] * 5 + [9, -100, -100]])
    mask = prompt_token_mask(ids, audio_token_id=AUDIO, attention_mask=am, labels=labels)
    assert mask.tolist() == [[0, 0, 1, 0, 1, 1, 0, 0], [1, 0, 1, 0, 1, 0, 0, 0]]
    emb = torch.randn(2, 8, 4)
    pooled = pool_prompt_embeddings(emb, ids, mask, audio_token_id=AUDIO)
    assert pooled.shape == (3, 4)  # one row per placeholder, the second sample's two clips share its vector
    torch.testing.assert_close(pooled[0], emb[0, [2, 4, 5]].mean(0))
    torch.testing.assert_close(pooled[1], emb[1, [0, 2, 4]].mean(0))
    torch.testing.assert_close(pooled[2], pooled[1], rtol=0, atol=0)


def test_training_and_generation_batches_give_the_same_prompt_vector_and_route(model, processor):
    exs = _examples([WHO, WHAT])
    train = MoWECollator(processor, train=True)(exs)  # prompt + answer, right-padded, labels
    gen = MoWECollator(processor, train=False)(exs)  # prompt only, left-padded
    assert train["input_ids"].shape[1] > gen["input_ids"].shape[1]
    p_train = model.prompt_embeddings(train["input_ids"], train["attention_mask"], train["labels"])
    p_gen = model.prompt_embeddings(gen["input_ids"], gen["attention_mask"])
    torch.testing.assert_close(p_train, p_gen, rtol=0, atol=1e-6)
    # Without labels the answer would leak into the vector: the mask is what keeps them equal.
    assert not torch.allclose(model.prompt_embeddings(train["input_ids"], train["attention_mask"]), p_gen)
    with torch.no_grad():
        fwd = model(**_inputs(train), labels=train["labels"]).router
        enc = model.encode_audio(gen["waveforms"], gen["wave_lengths"], p_gen).router
    torch.testing.assert_close(fwd.probs, enc.probs, rtol=0, atol=1e-6)
    assert torch.equal(fwd.indices, enc.indices)


# ------------------------------------------------------------------------------------------- in the model
def test_model_routes_by_instruction_through_generate_and_evaluate(processor):
    """Same clips asked two questions: constructed weights send WHO to encoder 2 and WHAT to encoder 0,
    through forward, the evaluation harness and a save/load round trip; an audio-only MoWE keeps one route per
       clip."""
    from mowe.evaluation.evaluate import evaluate_model

    torch.manual_seed(0)
    model = MoWEAudioLLM.from_config(_config(processor, prompt_aware=True)).eval()
    exs = _examples([WHO, WHAT], n_clips=3)
    gen = MoWECollator(processor, train=False)(exs)
    pooled = model.prompt_embeddings(gen["input_ids"], gen["attention_mask"])
    _construct(model.router, pooled[0], pooled[1], first=2, second=0)
    with torch.no_grad():
        route = model(**_inputs(gen)).router
    assert route.indices[:, 0].tolist() == [2, 0] * 3
    res = evaluate_model(model, processor, exs, batch_size=4, max_new_tokens=2, progress=False)
    assert res.router_counts == {WHO: [0, 0, 3], WHAT: [3, 0, 0]}

    torch.manual_seed(0)
    audio_only = MoWEAudioLLM.from_config(_config(processor, prompt_aware=False)).eval()
    assert not audio_only.needs_prompt
    with torch.no_grad():
        ao = audio_only(**_inputs(gen)).router
    torch.testing.assert_close(ao.probs[0::2], ao.probs[1::2], rtol=0, atol=0)


def test_gradient_reaches_the_prompt_router_but_not_the_embedding_table(processor):
    torch.manual_seed(0)
    model = MoWEAudioLLM.from_config(_config(processor, prompt_aware=True, train="full")).train()
    batch = MoWECollator(processor, train=True)(_examples([WHO, WHAT]))
    out = model(**_inputs(batch), labels=batch["labels"])
    pr = model.router.routers[1]
    grads = torch.autograd.grad(
        out.loss, [pr.out.weight, pr.prompt_proj.weight, pr.audio_proj.weight], retain_graph=True
    )
    assert all(g.abs().sum() > 0 for g in grads)
    # The prompt is pooled detached: routing never trains word embeddings, even with a trainable table.
    table = model.llm.get_input_embeddings().weight
    assert table.requires_grad
    (g_table,) = torch.autograd.grad(out.router.logits.sum(), [table], allow_unused=True)
    assert g_table is None


def test_prompt_aware_model_needs_the_prompt_and_builder_needs_its_width(model):
    wav = torch.randn(2, 8000)
    with pytest.raises(MoWEInputError, match="prompt-aware"):
        model.encode_audio(wav, torch.tensor([8000, 6000]))
    with pytest.raises(ConfigError, match="prompt_dim"):
        build_router(RouterConfig(prompt_aware=True), strong_dim=16, num_encoders=3)
    mix = build_router(
        RouterConfig(prompt_aware=True, data_independent=False), strong_dim=16, num_encoders=3, prompt_dim=24
    )
    assert [type(r) for r in mix.routers] == [PromptAwareRouter]  # it takes the data-dependent router's slot


# ------------------------------------------------------------------------------------------- config and
# checkpoints
def test_config_round_trips_through_json_and_old_configs_stay_audio_only(processor, tmp_path):
    cfg = _config(processor, prompt_aware=True)
    again = MoWEConfig.from_json(cfg.to_json())
    # (Whole-config equality would trip on tuples inside encoder overrides, which JSON turns into lists.)
    assert again.router == cfg.router and again.router.prompt_aware and again.to_json() == cfg.to_json()
    data = json.loads(cfg.to_json())
    del data["router"]["prompt_aware"]
    assert MoWEConfig.from_json(json.dumps(data)).router.prompt_aware is False
    from mowe.presets import mowe_paper

    assert mowe_paper(tiny=True, prompt_aware=True).config.router.prompt_aware
    assert not mowe_paper(tiny=True).config.router.prompt_aware


def test_save_and_from_pretrained_keep_the_prompt_router_and_its_choices(processor, tmp_path):
    torch.manual_seed(0)
    model = MoWEAudioLLM.from_config(_config(processor, prompt_aware=True)).eval()
    gen = MoWECollator(processor, train=False)(_examples([WHO, WHAT]))
    pooled = model.prompt_embeddings(gen["input_ids"], gen["attention_mask"])
    _construct(model.router, pooled[0], pooled[1], first=1, second=2)
    model.save_pretrained(tmp_path / "ckpt")
    again = MoWEAudioLLM.from_pretrained(tmp_path / "ckpt").eval()
    assert again.config.router.prompt_aware and isinstance(again.router.routers[1], PromptAwareRouter)
    with torch.no_grad():
        a, b = model(**_inputs(gen)), again(**_inputs(gen))
    torch.testing.assert_close(a.router.logits, b.router.logits, rtol=0, atol=0)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)
    assert b.router.indices[:, 0].tolist() == [1, 2, 1, 2]

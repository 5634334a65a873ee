"""MoWEAudioLLM end to end on tiny random parts (issue 2's must-shows 3-7)."""

import pytest
import torch
from conftest import AUDIO_ID, LLAMA_TINY, WHISPER_TINY, make_batch, tiny_config
from torch import nn

from mowe import MoWEAudioLLM, MoWEConfig
from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig
from mowe.encoders import EncoderOutput
from mowe.errors import CheckpointError, MoWEInputError


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MoWEAudioLLM.from_config(tiny_config(top_k=2))


def test_forward_shapes_and_router_output(model):
    wav, wl, ids, am, labels = make_batch()
    out = model(ids, wav, wl, attention_mask=am, labels=labels)
    assert out.router.gates.shape == (3, 4) and out.router.indices.shape == (3, 2)
    assert torch.isfinite(out.loss) and out.aux_loss is not None
    torch.testing.assert_close(out.loss, out.lm_loss + 0.1 * out.aux_loss)
    # 16000 samples -> 50 frames -> 13 tokens (stack 4); prompt of 5 with one placeholder -> 4 + 13.
    assert out.logits.shape == (3, 17, 128)


def test_gradients_reach_routers_and_connector_not_frozen_towers(model):
    model.zero_grad(set_to_none=True)
    wav, wl, ids, am, labels = make_batch()
    model(ids, wav, wl, attention_mask=am, labels=labels).loss.backward()
    named = dict(model.named_parameters())
    for part in ("router.routers.0.logits", "router.routers.1.net.1.weight", "connector.net.0.weight"):
        assert named[part].grad is not None and named[part].grad.abs().sum() > 0, part
    lora = [p for n, p in named.items() if "lora_B" in n]
    assert lora and all(p.grad is not None for p in lora)
    frozen = [p for n, p in named.items() if n.startswith(("strong_encoder.", "weak_encoders.encoders."))]
    assert frozen and all(p.grad is None and not p.requires_grad for p in frozen)
    base = [p for n, p in named.items() if n.startswith("llm.") and "lora_" not in n]
    assert all(p.grad is None for p in base)


def test_save_then_load_gives_identical_logits(model, tmp_path):
    with torch.no_grad():
        for p in model.connector.parameters():  # move away from init so a failed load would show
            p.add_(0.01)
    model.eval()
    model.save_pretrained(tmp_path / "ckpt")
    again = MoWEAudioLLM.from_pretrained(tmp_path / "ckpt").eval()
    wav, wl, ids, am, _ = make_batch()
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids, wav, wl, attention_mask=am).logits,
            again(ids, wav, wl, attention_mask=am).logits,
            atol=0,
            rtol=0,
        )
    model.train()


def test_frozen_pretrained_towers_are_referenced_not_copied(tmp_path):
    from conftest import HUBERT_TINY
    from safetensors import safe_open
    from transformers import (
        AutoModelForCausalLM,
        HubertConfig,
        HubertModel,
        LlamaConfig,
        WhisperConfig,
        WhisperModel,
    )

    wcfg = WhisperConfig(
        **WHISPER_TINY,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=32,
        vocab_size=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=3,
    )
    WhisperModel(wcfg).save_pretrained(tmp_path / "whisper")
    HubertModel(HubertConfig(**HUBERT_TINY)).save_pretrained(tmp_path / "hubert")
    llama = {k: v for k, v in LLAMA_TINY.items() if k != "model_type"}
    AutoModelForCausalLM.from_config(LlamaConfig(**llama)).save_pretrained(tmp_path / "llama")
    cfg = MoWEConfig(
        strong=EncoderConfig("whisper", name_or_path=str(tmp_path / "whisper"), pad_to_30s=False),
        weak_encoders={"hub": EncoderConfig("hubert", name_or_path=str(tmp_path / "hubert"))},
        connector=ConnectorConfig("linear"),
        llm=LLMConfig(name_or_path=str(tmp_path / "llama")),
        audio_token_id=AUDIO_ID,
    )
    m = MoWEAudioLLM.from_config(cfg).eval()
    m.save_pretrained(tmp_path / "small")
    with safe_open(str(tmp_path / "small" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith(("connector.", "router.")) or "lora_" in k for k in keys)
    m.save_pretrained(tmp_path / "full", save_frozen=True)
    size = lambda d: (tmp_path / d / "model.safetensors").stat().st_size
    assert size("full") > 10 * size("small")
    again = MoWEAudioLLM.from_pretrained(tmp_path / "small").eval()
    wav, wl, ids, am, _ = make_batch()
    with torch.no_grad():
        torch.testing.assert_close(
            m(ids, wav, wl, attention_mask=am).logits,
            again(ids, wav, wl, attention_mask=am).logits,
            atol=0,
            rtol=0,
        )


def test_damaged_checkpoints_are_refused(model, tmp_path):
    model.save_pretrained(tmp_path / "c")
    w = tmp_path / "c" / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        MoWEAudioLLM.from_pretrained(tmp_path / "c")
    with pytest.raises(CheckpointError, match="missing"):
        MoWEAudioLLM.from_pretrained(tmp_path / "nowhere")


def test_kv_cache_generation_equals_no_cache_and_beams_run(model):
    model.eval()
    wav, wl, ids, am, _ = make_batch()
    cached = model.generate(ids, wav, wl, attention_mask=am, max_new_tokens=6)
    plain = model.generate(ids, wav, wl, attention_mask=am, max_new_tokens=6, use_cache=False)
    assert cached.shape == (3, 6) and torch.equal(cached, plain)
    beams = model.generate(ids, wav, wl, attention_mask=am, max_new_tokens=6, num_beams=3)
    assert beams.shape[0] == 3
    model.train()


def test_padding_a_batch_changes_no_clip(model):
    model.eval()
    wav, wl, ids, am, _ = make_batch()
    together = model.generate(ids, wav, wl, attention_mask=am, max_new_tokens=6)
    with torch.no_grad():
        full = model(ids, wav, wl, attention_mask=am)
    for i in range(3):
        n = int(am[i].sum())
        alone = model.generate(ids[i : i + 1, :n], wav[i : i + 1, : wl[i]], wl[i : i + 1], max_new_tokens=6)
        assert torch.equal(alone[0], together[i]), i
        with torch.no_grad():
            one = model(ids[i : i + 1, :n], wav[i : i + 1, : wl[i]], wl[i : i + 1])
        t = one.logits.shape[1]
        torch.testing.assert_close(full.logits[i, :t], one.logits[0], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(full.router.gates[i], one.router.gates[0], atol=1e-6, rtol=1e-5)
    model.train()


class EnergyEncoder(nn.Module):
    """A user-defined encoder: frame energies through a small MLP at 100 Hz."""

    out_dim, frame_rate, min_samples = 8, 100.0, 160

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 8), nn.Tanh())

    def forward(self, wav, lengths):
        frames = wav[:, : wav.shape[1] // 160 * 160].unflatten(1, (-1, 160))
        feats = torch.stack([frames.pow(2).mean(-1), frames.abs().amax(-1)], -1)
        return EncoderOutput(self.net(feats), torch.div(lengths, 160, rounding_mode="floor"))


def test_user_encoder_joins_pool_trains_saves_and_reloads(tmp_path):
    cfg = tiny_config()
    cfg = cfg.replace(weak_encoders={**cfg.weak_encoders, "energy": EncoderConfig("custom", freeze=False)})
    mine = EnergyEncoder()
    m = MoWEAudioLLM.from_config(cfg, encoders={"energy": mine})
    with torch.no_grad():  # route everything to the user's encoder so it must train
        m.router.routers[0].logits.copy_(torch.tensor([0, 0, 0, 0, 10.0]))
    before = mine.net[0].weight.clone()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    wav, wl, ids, am, labels = make_batch()
    for _ in range(2):
        out = m(ids, wav, wl, attention_mask=am, labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    assert (out.router.indices == 4).all()
    assert not torch.equal(before, mine.net[0].weight)
    m.eval().save_pretrained(tmp_path / "c")
    with pytest.raises(Exception, match="family 'custom'"):
        MoWEAudioLLM.from_pretrained(tmp_path / "c")
    again = MoWEAudioLLM.from_pretrained(tmp_path / "c", encoders={"energy": EnergyEncoder()}).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            m(ids, wav, wl, attention_mask=am).logits,
            again(ids, wav, wl, attention_mask=am).logits,
            atol=0,
            rtol=0,
        )


@pytest.mark.parametrize(
    "llm",
    [
        dict(model_type="gpt2", vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=512),
        dict(
            model_type="qwen2",
            vocab_size=128,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
        ),
    ],
)
def test_other_llm_families_train_and_generate(llm):
    cfg = MoWEConfig(
        strong=EncoderConfig("whisper", preset="tiny", overrides=WHISPER_TINY, pad_to_30s=False),
        connector=ConnectorConfig("conv", {"stride": 2}),
        llm=LLMConfig(config=llm),
        audio_token_id=AUDIO_ID,
    )
    m = MoWEAudioLLM.from_config(cfg)
    wav, wl, ids, am, labels = make_batch()
    out = m(ids, wav, wl, attention_mask=am, labels=labels)
    out.loss.backward()
    assert out.router is None and out.aux_loss is None
    assert any(p.grad is not None for n, p in m.named_parameters() if "lora_" in n)
    m.eval()
    assert torch.equal(
        m.generate(ids, wav, wl, attention_mask=am, max_new_tokens=4),
        m.generate(ids, wav, wl, attention_mask=am, max_new_tokens=4, use_cache=False),
    )


def test_full_and_frozen_llm_modes():
    full = MoWEAudioLLM.from_config(
        tiny_config(weak=False).replace(llm=LLMConfig(config=LLAMA_TINY, train="full"))
    )
    assert all(p.requires_grad for p in full.llm.parameters())
    frozen = MoWEAudioLLM.from_config(
        tiny_config(weak=False).replace(llm=LLMConfig(config=LLAMA_TINY, train="frozen"))
    )
    assert not any(p.requires_grad for p in frozen.llm.parameters())


class WrongWidth(EnergyEncoder):
    def forward(self, wav, lengths):
        out = super().forward(wav, lengths)
        return EncoderOutput(out.features[..., :3], out.lengths)


def test_bad_inputs_get_clear_errors(model):
    wav, wl, ids, am, labels = make_batch()
    nan = wav.clone()
    nan[1, 5] = float("inf")
    with pytest.raises(MoWEInputError, match="clip 1 of waveforms contains NaN or Inf"):
        model(ids, nan, wl, attention_mask=am)
    with pytest.raises(MoWEInputError, match="out of range at clip 0"):
        model(ids, wav, wl + 1, attention_mask=am)
    with pytest.raises(MoWEInputError, match="empty batch"):
        model(ids, wav[:0], wl[:0], attention_mask=am)
    short = wl.clone()
    short[2] = 399
    with pytest.raises(
        MoWEInputError, match="clip 2 of waveforms has 399 samples; this encoder needs at least 400"
    ):
        model(ids, wav, short, attention_mask=am)
    with pytest.raises(MoWEInputError, match=r"sample 0: 1, sample 1: 1\) but 3 audio clip"):
        model(ids[:2], wav, wl, attention_mask=am[:2])
    cfg = tiny_config()
    cfg = cfg.replace(weak_encoders={"bad": EncoderConfig("custom")})
    m = MoWEAudioLLM.from_config(cfg, encoders={"bad": WrongWidth()})
    with pytest.raises(MoWEInputError, match=r"encoder 'bad' returned features of shape \(3, 100, 3\)"):
        m(ids, wav, wl, attention_mask=am)
    with pytest.raises(MoWEInputError, match="lacks the attribute 'in_dim'"):
        MoWEAudioLLM(
            strong_encoder=model.strong_encoder,
            connector=nn.Linear(3, 3),
            llm=model.llm,
            audio_token_id=AUDIO_ID,
        )
    from mowe.connectors import LinearConnector

    with pytest.raises(MoWEInputError, match="connector.in_dim is 3 but the encoders give 64"):
        MoWEAudioLLM(
            strong_encoder=model.strong_encoder,
            connector=LinearConnector(in_dim=3, out_dim=64),
            llm=model.llm,
            audio_token_id=AUDIO_ID,
        )


def test_frozen_encoders_stay_in_eval_mode_when_training():
    m = MoWEAudioLLM.from_config(tiny_config())
    m.train()
    assert m.training and m.connector.training and m.llm.training
    assert not m.strong_encoder.training and not any(e.training for e in m.weak_encoders.encoders.values())
    # Frozen features are deterministic in training: HuBERT's dropout / layer drop are off.
    wav, wl, *_ = make_batch()
    enc = m.weak_encoders.encoders["hubert_a"]
    torch.testing.assert_close(enc(wav, wl).features, enc(wav, wl).features)
    # An encoder that trains follows the model's mode.
    for p in m.strong_encoder.parameters():
        p.requires_grad_(True)
    m.train()
    assert m.strong_encoder.training

"""LTU-AS for real (issue 15): the released checkpoint format, the official Whisper features and prompt order.

Everything is built at tiny sizes with random weights. The official LTU-AS keys and openai-whisper keys are
written here from their documented names, not produced by mowe's own mapping.
"""

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFWhisperEncoder

from mowe.cli import main as mowe_main
from mowe.encoders.whisper_formats import load_openai_whisper
from mowe.encoders.whisper_window import WindowedWhisperEncoder
from mowe.errors import CheckpointError
from mowe.ltu_as.checkpoint import from_ltu_as, to_ltu_as
from mowe.ltu_as.prompt import ltu_as_input_ids, ltu_as_prompt
from mowe.model import MoWEAudioLLM

D, LAYERS, HEADS, D_LLM, LLM_LAYERS, VOCAB, R = 64, 2, 2, 96, 2, 128, 8
P = "base_model.model.model."


def sinusoids(length, channels):
    inc = math.log(10000) / (channels // 2 - 1)
    t = torch.arange(length)[:, None] * torch.exp(-inc * torch.arange(channels // 2))[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


def openai_whisper_checkpoint(g):
    """An openai-whisper .pt dict (fp16, as released) at a tiny size, keys as openai names them."""
    dims = dict(
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=D,
        n_audio_head=HEADS,
        n_audio_layer=LAYERS,
        n_vocab=51864,
        n_text_ctx=8,
        n_text_state=D,
        n_text_head=HEADS,
        n_text_layer=1,
    )
    sd = {
        "encoder.conv1.weight": (D, 80, 3),
        "encoder.conv1.bias": (D,),
        "encoder.conv2.weight": (D, D, 3),
        "encoder.conv2.bias": (D,),
        "encoder.ln_post.weight": (D,),
        "encoder.ln_post.bias": (D,),
        "decoder.token_embedding.weight": (51864, D),
        "decoder.positional_embedding": (8, D),
        "decoder.ln.weight": (D,),
        "decoder.ln.bias": (D,),
    }
    attn = {
        "query.weight": (D, D),
        "query.bias": (D,),
        "key.weight": (D, D),
        "value.weight": (D, D),
        "value.bias": (D,),
        "out.weight": (D, D),
        "out.bias": (D,),
    }
    block = {
        "attn_ln.weight": (D,),
        "attn_ln.bias": (D,),
        "mlp.0.weight": (4 * D, D),
        "mlp.0.bias": (4 * D,),
        "mlp.2.weight": (D, 4 * D),
        "mlp.2.bias": (D,),
        "mlp_ln.weight": (D,),
        "mlp_ln.bias": (D,),
        **{f"attn.{k}": s for k, s in attn.items()},
    }
    for i in range(LAYERS):
        sd.update({f"encoder.blocks.{i}.{k}": s for k, s in block.items()})
    sd.update({f"decoder.blocks.0.{k}": s for k, s in block.items()})
    sd.update({f"decoder.blocks.0.cross_attn.{k}": s for k, s in attn.items()})
    sd.update({"decoder.blocks.0.cross_attn_ln.weight": (D,), "decoder.blocks.0.cross_attn_ln.bias": (D,)})
    out = {k: (torch.randn(s, generator=g) * (0.3 if len(s) > 1 else 0.1)).half() for k, s in sd.items()}
    out["encoder.positional_embedding"] = sinusoids(1500, D).half()
    return {"dims": dims, "model_state_dict": out}


def official_ltu_as_state(g):
    """The released LTU-AS layout: TLTR blocks, audio_proj.1, LoRA with PEFT's 'default' adapter, kept
    buffers."""
    sd = {}
    for blk in ("time_tr", "layer_tr"):
        shapes = {
            "attn.query.weight": (D, D),
            "attn.query.bias": (D,),
            "attn.key.weight": (D, D),
            "attn.value.weight": (D, D),
            "attn.value.bias": (D,),
            "attn.out.weight": (D, D),
            "attn.out.bias": (D,),
            "attn_ln.weight": (D,),
            "attn_ln.bias": (D,),
            "mlp.0.weight": (4 * D, D),
            "mlp.0.bias": (4 * D,),
            "mlp.2.weight": (D, 4 * D),
            "mlp.2.bias": (D,),
            "mlp_ln.weight": (D,),
            "mlp_ln.bias": (D,),
        }
        sd.update(
            {f"{P}audio_encoder.{blk}.{k}": torch.randn(s, generator=g) * 0.2 for k, s in shapes.items()}
        )
    sd[f"{P}audio_proj.1.weight"] = torch.randn(D_LLM, D, generator=g) * 0.1
    sd[f"{P}audio_proj.1.bias"] = torch.randn(D_LLM, generator=g) * 0.1
    kv = D_LLM // 2  # 2 key/value heads of 4
    for i in range(LLM_LAYERS):
        for proj, out_dim in (("q_proj", D_LLM), ("v_proj", kv)):
            sd[f"{P}layers.{i}.self_attn.{proj}.lora_A.default.weight"] = (
                torch.randn(R, D_LLM, generator=g) * 0.1
            )
            sd[f"{P}layers.{i}.self_attn.{proj}.lora_B.default.weight"] = (
                torch.randn(out_dim, R, generator=g) * 0.1
            )
        sd[f"{P}layers.{i}.self_attn.rotary_emb.inv_freq"] = torch.rand(12, generator=g)
    return sd


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ltu")
    g = torch.Generator().manual_seed(0)
    torch.save(openai_whisper_checkpoint(g), d / "large-v1.pt")
    llm_cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=D_LLM,
        intermediate_size=192,
        num_hidden_layers=LLM_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(llm_cfg).save_pretrained(d / "vicuna")
    state = official_ltu_as_state(g)
    torch.save(state, d / "ltuas.bin")
    return {
        "dir": d,
        "whisper": str(d / "large-v1.pt"),
        "llm": str(d / "vicuna"),
        "ckpt": str(d / "ltuas.bin"),
        "state": state,
    }


@pytest.fixture(scope="module")
def model(files):
    return from_ltu_as(files["ckpt"], whisper=files["whisper"], llm=files["llm"])


def clips(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    wav = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        t = torch.arange(n) / 16000
        wav[i, :n] = 0.3 * torch.sin(2 * torch.pi * (220 + 90 * i) * t) + 0.05 * torch.randn(n, generator=g)
    return wav, torch.tensor(lengths)


def test_official_layout_loads_strictly_and_round_trips_bit_exactly(files, model, tmp_path):
    assert (
        model.connector.proj.weight.dtype == torch.float32 and model.audio_token_id == VOCAB
    )  # past the vocabulary: this LLM folder has no tokenizer
    to_ltu_as(model, tmp_path / "back.bin")
    back = torch.load(tmp_path / "back.bin", weights_only=True)
    kept = {k: v for k, v in files["state"].items() if not k.endswith("rotary_emb.inv_freq")}
    assert sorted(back) == sorted(kept)
    for k, v in kept.items():
        assert torch.equal(back[k], v), k
    again = from_ltu_as(tmp_path / "back.bin", whisper=files["whisper"], llm=files["llm"])
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k


@pytest.mark.parametrize("change", ["unknown", "missing_lora", "missing_proj", "missing_key"])
def test_unknown_or_missing_keys_are_named(files, tmp_path, change):
    state = dict(files["state"])
    name = {
        "unknown": f"{P}audio_encoder.extra.weight",
        "missing_lora": f"{P}layers.1.self_attn.v_proj.lora_B.default.weight",
        "missing_proj": f"{P}audio_proj.1.bias",
        "missing_key": f"{P}audio_encoder.layer_tr.attn.key.weight",
    }[change]
    if change == "unknown":
        state[name] = torch.zeros(3)
    else:
        del state[name]
    torch.save(state, tmp_path / "bad.bin")
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        from_ltu_as(tmp_path / "bad.bin", whisper=files["whisper"], llm=files["llm"])


def test_25_audio_tokens_for_any_clip_and_batched_equals_alone(model):
    lengths = [201, 16000 * 3 + 77, 16000 * 10, 16000 * 14 + 5]
    wav, wl = clips(lengths)
    with torch.no_grad():
        enc = model.encode_audio(wav, wl)
        assert enc.embeds.shape == (4, 25, D_LLM) and enc.lengths.tolist() == [25] * 4
        for i, n in enumerate(lengths):
            alone = model.encode_audio(wav[i : i + 1, :n], wl[i : i + 1]).embeds[0]
            torch.testing.assert_close(enc.embeds[i], alone, atol=1e-6, rtol=1e-6)


def test_features_are_the_raw_block_outputs(files):
    enc = WindowedWhisperEncoder.from_pretrained(files["whisper"])
    stored = torch.load(files["whisper"], weights_only=True)["model_state_dict"][
        "encoder.positional_embedding"
    ]
    # The positional table is the file's fp16 one, not a recomputed fp32 sinusoid.
    assert torch.equal(enc.encoder.embed_positions.weight, stored.float())
    assert not torch.equal(enc.encoder.embed_positions.weight, sinusoids(1500, D))
    wav, wl = clips([16000 * 4])
    out = enc(wav, wl)
    assert out.hidden_states.shape == (1, LAYERS, 500, D)
    # transformers' encoder on the same 1000-frame log-mel (a 500-position copy, since it insists on its full
    # window)
    hf = HFWhisperEncoder(WhisperConfig(**{**enc.config.to_dict(), "max_source_positions": 500})).eval()
    state = {k: v for k, v in enc.encoder.state_dict().items()}
    state["embed_positions.weight"] = state["embed_positions.weight"][:500]
    hf.load_state_dict(state)
    ref = hf(
        enc.log_mel(wav, wl), output_hidden_states=True
    ).hidden_states  # embedding, blocks ..., last normed
    assert len(ref) == LAYERS + 1
    for i in range(LAYERS - 1):
        torch.testing.assert_close(out.hidden_states[0, i], ref[i + 1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hf.layer_norm(out.hidden_states[0, -1]), ref[-1][0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out.hidden_states[0, -1], ref[-1][0], atol=1e-3)  # no final LayerNorm


def openai_log_mel(clip, filters):
    """openai-whisper's log_mel_spectrogram of one clip, by hand."""
    spec = torch.stft(clip, 400, 160, window=torch.hann_window(400), return_complex=True)[..., :-1]
    log_spec = torch.clamp(filters @ spec.abs() ** 2, min=1e-10).log10()
    return (torch.maximum(log_spec, log_spec.max() - 8.0) + 4.0) / 4.0


def test_log_mel_is_zero_padded_and_floored_over_the_whole_clip(files):
    enc = WindowedWhisperEncoder.from_pretrained(files["whisper"])
    wav, wl = clips([16000 * 3 + 50, 16000 * 13])
    wav[1, 16000 * 11 : 16000 * 13] *= 30  # the loudest part lies beyond 10 s: it still sets the floor
    mel = enc.log_mel(wav, wl)
    short = openai_log_mel(wav[0, : wl[0]], enc.frontend.filters)
    assert short.shape[1] == 300
    torch.testing.assert_close(mel[0, :, :300], short, atol=0, rtol=0)
    assert (mel[0, :, 300:] == 0).all()  # zeros in the normalised log-mel, not the log-mel of silence
    long = openai_log_mel(wav[1], enc.frontend.filters)
    torch.testing.assert_close(mel[1], long[:, :1000], atol=0, rtol=0)
    alone = openai_log_mel(wav[1, : 16000 * 10], enc.frontend.filters)
    assert not torch.allclose(mel[1], alone[:, :1000])  # a floor over the first 10 s only would differ


def test_audio_tokens_go_before_the_whole_prompt(model):
    class Tok:  # a stand-in tokenizer: BOS then one id per character
        def __call__(self, text):
            return type("T", (), {"input_ids": [1] + [2 + ord(c) % 100 for c in text]})()

    ids = ltu_as_input_ids(Tok(), "What is said?", "hello", audio_token_id=model.audio_token_id)
    assert (
        ids[:2] == [model.audio_token_id, 1]
        and ltu_as_prompt("x", "") == "### Instruction:\nx\n\n### Response:\n"
    )
    wav, wl = clips([16000 * 2])
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        logits = model(
            input_ids=input_ids, waveforms=wav, wave_lengths=wl, attention_mask=torch.ones_like(input_ids)
        ).logits
        audio = model.encode_audio(wav, wl).embeds
        text = model.llm.get_input_embeddings()(input_ids[:, 1:])
        ref = model.llm(inputs_embeds=torch.cat([audio, text], dim=1)).logits
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)


def test_tltr_key_bias_stays_zero_in_training(model):
    block = model.connector.time_block.attn
    loss = model.connector(torch.randn(1, LAYERS, 500, D), torch.tensor([500])).embeds.square().sum()
    loss.backward()
    assert (block.in_proj_bias.grad[D : 2 * D] == 0).all() and block.in_proj_bias.grad[:D].abs().sum() > 0
    model.zero_grad()


def test_convert_cli_writes_a_folder_from_pretrained_loads(files, model, tmp_path):
    assert (
        mowe_main(
            [
                "convert",
                "ltu-as",
                files["ckpt"],
                "--whisper",
                files["whisper"],
                "--llm",
                files["llm"],
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    loaded = MoWEAudioLLM.from_pretrained(tmp_path / "out").eval()
    wav, wl = clips([16000, 24000])
    ids = torch.tensor([[model.audio_token_id, 1, 5, 6], [model.audio_token_id, 1, 7, 8]])
    with torch.no_grad():
        a = model(input_ids=ids, waveforms=wav, wave_lengths=wl, attention_mask=torch.ones_like(ids)).logits
        b = loaded(input_ids=ids, waveforms=wav, wave_lengths=wl, attention_mask=torch.ones_like(ids)).logits
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_openai_whisper_file_gives_the_checkpoint_decoder(files):
    hf = load_openai_whisper(files["whisper"], model=True)
    stored = torch.load(files["whisper"], weights_only=True)["model_state_dict"]
    assert torch.equal(hf.model.decoder.embed_tokens.weight, stored["decoder.token_embedding.weight"].float())
    assert torch.equal(
        hf.proj_out.weight, hf.model.decoder.embed_tokens.weight
    )  # tied, as openai's decoder reads it
    key = stored["encoder.blocks.1.attn.key.weight"].float()
    assert torch.equal(hf.model.encoder.layers[1].self_attn.k_proj.weight, key)


def whisper_style_block(x, w, prefix, heads):
    """A pre-norm residual block as Whisper writes it (separate q/k/v, no key bias, q and k each scaled)."""
    ln = lambda t, n: torch.nn.functional.layer_norm(
        t, (D,), w[f"{prefix}{n}.weight"], w[f"{prefix}{n}.bias"]
    )
    lin = lambda t, n, bias=True: torch.nn.functional.linear(
        t, w[f"{prefix}{n}.weight"], w[f"{prefix}{n}.bias"] if bias else None
    )
    y = ln(x, "attn_ln")
    q, k, v = lin(y, "attn.query"), lin(y, "attn.key", bias=False), lin(y, "attn.value")
    split = lambda t: t.view(*t.shape[:2], heads, -1).transpose(1, 2)
    scale = (D // heads) ** -0.25
    att = torch.softmax((split(q) * scale) @ (split(k) * scale).transpose(-1, -2), dim=-1) @ split(v)
    x = x + lin(att.transpose(1, 2).flatten(2), "attn.out")
    h = ln(x, "mlp_ln")
    return x + lin(torch.nn.functional.gelu(lin(h, "mlp.0")), "mlp.2")


def test_tltr_equals_the_official_math_on_the_official_weights(files, model):
    w = files["state"]
    feats = torch.randn(2, LAYERS, 500, D)
    pooled = feats.view(2, LAYERS, 25, 20, D).mean(3)  # x20 mean pooling over time
    x = whisper_style_block(pooled.reshape(2 * LAYERS, 25, D), w, f"{P}audio_encoder.time_tr.", 1)
    x = x.view(2, LAYERS, 25, D).transpose(1, 2).reshape(2 * 25, LAYERS, D)
    x = whisper_style_block(x, w, f"{P}audio_encoder.layer_tr.", 8).mean(1).view(2, 25, D)
    ref = torch.nn.functional.linear(
        torch.nn.functional.layer_norm(x, (D,)), w[f"{P}audio_proj.1.weight"], w[f"{P}audio_proj.1.bias"]
    )
    with torch.no_grad():
        got = model.connector(feats, torch.tensor([500, 500])).embeds
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_llm_weights_in_the_file_load_and_tied_copies_must_agree(files, tmp_path):
    """A full save (HF Trainer's pytorch_model.bin) also holds the LLM's weights; a tied LLM's embedding
    appears under both names, which must agree since they load into one tensor."""
    llm_cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=D_LLM,
        intermediate_size=192,
        num_hidden_layers=LLM_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    torch.manual_seed(1)
    LlamaForCausalLM(llm_cfg).save_pretrained(tmp_path / "tied")
    g = torch.Generator().manual_seed(5)
    emb = torch.randn(VOCAB, D_LLM, generator=g)
    state = {**files["state"], f"{P}embed_tokens.weight": emb, "base_model.model.lm_head.weight": emb.clone()}
    torch.save(state, tmp_path / "full.bin")
    model = from_ltu_as(tmp_path / "full.bin", whisper=files["whisper"], llm=str(tmp_path / "tied"))
    assert torch.equal(model.llm.get_input_embeddings().weight, emb)
    assert model.llm.get_output_embeddings().weight is model.llm.get_input_embeddings().weight
    state["base_model.model.lm_head.weight"] = emb + 1e-3
    torch.save(state, tmp_path / "bad.bin")
    with pytest.raises(
        CheckpointError,
        match=r"bad\.bin: llm\.base_model\.model\.lm_head\.weight differs from "
        r"llm\.base_model\.model\.model\.embed_tokens\.weight",
    ):
        from_ltu_as(tmp_path / "bad.bin", whisper=files["whisper"], llm=str(tmp_path / "tied"))

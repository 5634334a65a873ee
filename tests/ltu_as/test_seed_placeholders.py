"""The audio placeholder is a token no text produces, for every preset and for `mowe convert` (issue 28).

A LLaMA-style tokenizer whose last id is the ordinary piece "▁bro" (the word "brown" produces it): the old
default (the LLM's last vocabulary id) gave a prompt holding "brown" two placeholders. The processor now
refuses such an id, and the LTU-AS preset, `mowe convert ltu-as` and `mowe convert salmonn` add <|audio|> as a
special token instead.
"""

from __future__ import annotations

import pytest
import torch
from _tokenizer_helpers import LAST_PIECE, llama_style_tokenizer
from test_ltu_as_checkpoint import D_LLM, LLM_LAYERS, clips, files  # noqa: F401  (the LTU-AS fixture files)
from transformers import LlamaConfig, LlamaForCausalLM

from mowe.cli import main
from mowe.data.processor import MoWEProcessor
from mowe.errors import AudioPlaceholderError
from mowe.ltu_as.prompt import ltu_as_batch
from mowe.model import MoWEAudioLLM
from mowe.presets import PRESETS, ltu_as

TEXT = "what is said by the brown fox"


@pytest.fixture(scope="module")
def tok():
    return llama_style_tokenizer()


def test_the_last_id_is_an_ordinary_piece_and_the_processor_refuses_it(tok):
    last = len(tok) - 1
    assert tok.convert_ids_to_tokens(last) == LAST_PIECE and last in tok(TEXT).input_ids
    with pytest.raises(AudioPlaceholderError, match=f"id {last}.*ordinary vocabulary piece '{LAST_PIECE}'"):
        MoWEProcessor(tok, audio_token="bro")  # one token, but "brown" produces it too
    with pytest.raises(AudioPlaceholderError, match="unk token '<unk>'"):
        MoWEProcessor(tok, audio_token="<unk>")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_takes_a_placeholder_no_text_produces(name, tok):
    t = llama_style_tokenizer()
    preset = PRESETS[name](tiny=True).for_tokenizer(t)
    assert preset.config.audio_token_id == len(tok)  # <|audio|> past the vocabulary, not the last piece
    assert t.convert_ids_to_tokens(preset.config.audio_token_id) == "<|audio|>"


def _one_slot_forward(model, batch):
    ids = batch["input_ids"]
    assert ids.eq(model.audio_token_id).sum(1).tolist() == [1] * ids.shape[0]
    with torch.no_grad():
        return model(
            input_ids=ids,
            attention_mask=batch["attention_mask"],
            waveforms=batch["waveforms"],
            wave_lengths=batch["wave_lengths"],
        ).logits


def test_ltu_as_preset_prompt_with_the_piece_has_one_audio_slot(tok):
    t = llama_style_tokenizer()
    wav, wl = clips([16000])
    own = ltu_as(tiny=True, faithful=False, vocab_size=len(tok)).for_tokenizer(t)  # processor prompts
    batch = own.processor(t)(text=[TEXT], audio=[wav[0]], sampling_rate=16000)
    assert _one_slot_forward(own.build().eval(), batch).shape[-1] == len(tok)  # the LLM got no row for it
    faithful = ltu_as(tiny=True, vocab_size=len(tok)).for_tokenizer(t)  # the released prompt, built apart
    batch = ltu_as_batch(
        t, [TEXT], audio_token_id=faithful.config.audio_token_id, transcripts=["the brown fox"]
    )
    _one_slot_forward(faithful.build().eval(), {**batch, "waveforms": wav, "wave_lengths": wl})


@pytest.fixture(scope="module")
def vicuna_with_tokenizer(files, tmp_path_factory):  # noqa: F811
    """An LLM folder holding the LLaMA-style tokenizer, as a real Vicuna folder does."""
    d = tmp_path_factory.mktemp("vicuna_tok")
    t = llama_style_tokenizer(d)
    torch.manual_seed(0)
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(t),
            hidden_size=D_LLM,
            intermediate_size=192,
            num_hidden_layers=LLM_LAYERS,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
        )
    ).save_pretrained(d)
    return str(d)


def test_mowe_convert_ltu_as_picks_a_placeholder_no_text_produces(
    files,  # noqa: F811  (the fixture imported above)
    vicuna_with_tokenizer,
    tok,
    tmp_path,
    capsys,
):
    out = tmp_path / "ltu"
    assert (
        main(
            [
                "convert",
                "ltu-as",
                files["ckpt"],
                "--whisper",
                files["whisper"],
                "--llm",
                vicuna_with_tokenizer,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "processor saved: audio placeholder '<|audio|>'" in capsys.readouterr().out
    model = MoWEAudioLLM.from_pretrained(out).eval()
    proc = MoWEProcessor.from_pretrained(out)
    assert model.audio_token_id == proc.audio_token_id == len(tok) != tok.convert_tokens_to_ids(LAST_PIECE)
    wav, wl = clips([16000, 24000])
    batch = proc(text=[TEXT, "is it brown"], audio=[wav[0], wav[1, :24000]], sampling_rate=16000)
    assert _one_slot_forward(model, batch).shape[-1] == len(tok)  # LTU-AS's vocabulary: no row for <|audio|>
    faithful = ltu_as_batch(
        proc.tokenizer, [TEXT], audio_token_id=model.audio_token_id, transcripts=["brown"]
    )
    _one_slot_forward(model, {**faithful, "waveforms": wav[:1], "wave_lengths": wl[:1]})

    # The old default, given explicitly, is refused with the piece named (exit code 2, no traceback).
    assert (
        main(
            [
                "convert",
                "ltu-as",
                files["ckpt"],
                "--whisper",
                files["whisper"],
                "--llm",
                vicuna_with_tokenizer,
                "--out",
                str(tmp_path / "bad"),
                "--audio-token-id",
                str(len(tok) - 1),
            ]
        )
        == 2
    )
    assert f"ordinary vocabulary piece '{LAST_PIECE}'" in capsys.readouterr().err

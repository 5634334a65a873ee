"""The BPE tokenizer, MoWEProcessor and MoWECollator: prompts, placeholders, labels, padding, paraphrases,
save/load, and a collated batch through a tiny MoWEAudioLLM."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mowe.constants import IGNORE_INDEX, MODEL_INPUT_KEYS
from mowe.data.audio import AudioTruncatedWarning
from mowe.data.collator import MoWECollator
from mowe.data.processor import MoWEProcessor
from mowe.data.tokenizer import AUDIO_TOKEN, CHAT_TEMPLATE, train_bpe_tokenizer
from mowe.errors import AudioLoadError, ConfigError, MoWEInputError
from mowe.salmonn import PROMPT_TEMPLATE as SALMONN_PROMPT_TEMPLATE

SR = 16_000
TEXTS = [
    "transcribe the speech",
    "three one four one five nine two six",
    "what is the gender of the speaker",
    "male female",
    "you are a helpful assistant that listens to audio",
    "describe the sound event",
] * 5
ASR_PARAPHRASES = [f"Please write down what is said, version {i}." for i in range(15)]


# ----------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(TEXTS, vocab_size=360)


@pytest.fixture(scope="module")
def proc(tok):
    return MoWEProcessor(tok)


def wave(seconds: float, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(
        np.random.default_rng(seed).uniform(-0.3, 0.3, int(seconds * SR)).astype(np.float32)
    )


def example(i: int, *, task: str = "asr", answer: str = "three one four", seconds: float = 0.3) -> dict:
    return {
        "id": f"ex{i}",
        "audio": wave(seconds, i),
        "instruction": "Transcribe the speech.",
        "answer": answer,
        "task": task,
        "duration": seconds,
    }


def tiny_model(tok, proc):
    from mowe import MoWEAudioLLM, MoWEConfig
    from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig

    W = {"d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 128}
    llm = {
        "model_type": "llama",
        "vocab_size": len(tok),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
    }
    cfg = MoWEConfig(
        strong=EncoderConfig("whisper", preset="tiny", overrides=W, pad_to_30s=False),
        weak_encoders={
            "w": EncoderConfig("whisper", preset="tiny", overrides={**W, "d_model": 32}, pad_to_30s=False)
        },
        connector=ConnectorConfig("stack", {"stack": 4}),
        llm=LLMConfig(config=llm),
        audio_token_id=proc.audio_token_id,
    )
    torch.manual_seed(0)
    return MoWEAudioLLM.from_config(cfg)


def unpadded(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    return [row[m.bool()].tolist() for row, m in zip(ids, mask)]


# ----------------------------------------------------------------------------------------------- tokenizer
def test_bpe_tokenizer_trains_and_reloads(tmp_path: Path):
    from transformers import AutoTokenizer

    tok = train_bpe_tokenizer(TEXTS, vocab_size=330, special_tokens=["<|extra|>"], save_dir=tmp_path / "tok")
    assert [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id] == [0, 1, 2]
    assert tok.convert_tokens_to_ids(AUDIO_TOKEN) == 3 and tok.convert_tokens_to_ids("<|extra|>") == 4
    assert len(tok) <= 330 and tok.chat_template == CHAT_TEMPLATE
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": f"{AUDIO_TOKEN} hi"}]
    prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert prompt == f"<|bos|>system: S\nuser: {AUDIO_TOKEN} hi\nassistant:"
    full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": "ok"}], tokenize=False)
    assert full.endswith("assistant: ok<|eos|>\n")

    again = AutoTokenizer.from_pretrained(tmp_path / "tok")
    text = "three one four? ünïcödé 🎵 " + AUDIO_TOKEN
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.decode(tok(text)["input_ids"], skip_special_tokens=True) == "three one four? ünïcödé 🎵 "
    assert again.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == prompt
    assert (again.pad_token, again.eos_token) == ("<|pad|>", "<|eos|>")
    with pytest.raises(MoWEInputError, match="vocab_size"):
        train_bpe_tokenizer(TEXTS, vocab_size=100)


# ----------------------------------------------------------------------------------------------- prompts
def test_one_audio_token_per_clip_implicit_and_explicit(proc, tok):
    texts = ["Transcribe the speech.", f"Listen {AUDIO_TOKEN} and say the gender.", "What sound is it?"]
    out = proc(
        text=texts, audio=[wave(0.2), wave(0.5, 1), wave(0.3, 2).numpy().astype(np.float64)], sampling_rate=SR
    )
    assert set(out) == {"input_ids", "attention_mask", "waveforms", "wave_lengths"}
    assert ((out["input_ids"] == proc.audio_token_id).sum(1) == 1).all()
    assert out["waveforms"].shape == (3, 8000) and out["wave_lengths"].tolist() == [3200, 8000, 4800]
    assert out["waveforms"].dtype == torch.float32 and (out["waveforms"][0, 3200:] == 0).all()
    rows = [tok.decode(r) for r in unpadded(out["input_ids"], out["attention_mask"])]
    assert rows[0].endswith(f"user: {AUDIO_TOKEN} Transcribe the speech.\nassistant:")
    assert f"user: Listen {AUDIO_TOKEN} and say the gender.\n" in rows[1]  # placed where the text put it
    assert rows[0].startswith("<|bos|>system: You are a helpful assistant")


def test_prompt_template_overrides_chat_template(tok):
    p = MoWEProcessor(tok, prompt_template=SALMONN_PROMPT_TEMPLATE)
    assert (
        p.build_prompt("What is said?")
        == f"<|bos|>USER: <Speech>{AUDIO_TOKEN}</Speech> What is said?\nASSISTANT:"
    )
    for bad, match in [
        ("{instruction}", r"\{audio\}"),
        ("{audio}{instr}", r"\{instr\}"),
        ("{audio", "format"),
    ]:
        with pytest.raises(ConfigError, match=match):
            MoWEProcessor(tok, prompt_template=bad)


def test_placeholder_errors(proc, tok):
    with pytest.raises(MoWEInputError, match="2 audio placeholders"):
        proc(text=f"{AUDIO_TOKEN} and {AUDIO_TOKEN}", audio=wave(0.2), sampling_rate=SR)
    with pytest.raises(MoWEInputError, match="one clip per text"):
        proc(text=["a", "b"], audio=[wave(0.2)], sampling_rate=SR)
    with pytest.raises(MoWEInputError, match="answer contains the audio placeholder"):
        proc(text="a", audio=wave(0.2), answer=f"x {AUDIO_TOKEN}", sampling_rate=SR)
    with pytest.raises(ConfigError, match="not one"):
        MoWEProcessor(tok, audio_token="<NotAToken>")


def test_audio_paths_and_length_policies(tok, tmp_path: Path):
    sf.write(str(tmp_path / "a.wav"), wave(2.5).numpy(), 8000)  # 2.5 s worth of samples at 8 kHz = 5 s
    chunk = MoWEProcessor(tok, max_audio_seconds=2.0, length_policy="chunk")
    out = chunk(text="Transcribe.", audio=tmp_path / "a.wav")
    assert out["wave_lengths"].tolist() == [2 * SR, 2 * SR, SR]  # 5 s -> three windows...
    assert out["input_ids"].eq(chunk.audio_token_id).sum() == 3  # ...each with its own placeholder
    with pytest.warns(AudioTruncatedWarning):
        out = MoWEProcessor(tok, max_audio_seconds=2.0)(text="T.", audio=wave(3.0), sampling_rate=SR)
    assert out["wave_lengths"].tolist() == [2 * SR]
    with pytest.raises(MoWEInputError, match="max_audio_seconds"):
        MoWEProcessor(tok, max_audio_seconds=2.0, length_policy="error")(
            text="T.", audio=wave(3.0), sampling_rate=SR
        )
    with pytest.raises(AudioLoadError, match="missing.wav"):
        chunk(text="T.", audio=str(tmp_path / "missing.wav"))
    # A training collator never chunks: one clip, one answer.
    with pytest.warns(UserWarning, match="inference|truncated") as rec:
        b = MoWECollator(chunk)([{**example(0), "audio": wave(5.0)}])
    assert any("inference" in str(w.message) for w in rec) and any(
        w.category is AudioTruncatedWarning for w in rec
    )
    assert b["wave_lengths"].tolist() == [2 * SR] and b["input_ids"].eq(chunk.audio_token_id).sum() == 1


# ----------------------------------------------------------------------------------------------- labels /
# padding
def test_labels_cover_exactly_the_answer_and_eos(proc, tok):
    exs = [
        example(0, answer="three one four"),
        example(1, answer="male", task="gender"),
        example(2, answer="the speaker is female"),
    ]
    b = MoWECollator(proc)(exs)
    assert b["labels"].shape == b["input_ids"].shape and b["labels"].dtype == torch.long
    for i, ex in enumerate(exs):
        lab = b["labels"][i]
        keep = lab != IGNORE_INDEX
        assert (lab[keep] == b["input_ids"][i][keep]).all()
        assert tok.decode(lab[keep].tolist(), skip_special_tokens=True).strip() == ex["answer"]
        assert int(lab[keep][-1]) == tok.eos_token_id
        # Labelled positions are one contiguous run at the end of the real tokens (right padding).
        pos = keep.nonzero().flatten()
        assert pos.tolist() == list(range(int(pos[0]), int(b["attention_mask"][i].sum())))
    assert (b["labels"][b["attention_mask"] == 0] == IGNORE_INDEX).all()
    assert proc.decode(b["input_ids"][:1])[0].endswith("three one four")
    assert b["task"] == ["asr", "gender", "asr"] and b["id"] == ["ex0", "ex1", "ex2"]


def test_left_and_right_padding(proc):
    exs = [example(0, answer="a"), example(1, answer="a much longer answer with many words in it")]
    right = MoWECollator(proc)(exs)
    left = MoWECollator(proc, padding_side="left")(exs)
    assert right["attention_mask"][0, -1] == 0 and left["attention_mask"][0, 0] == 0
    assert right["attention_mask"][1].all() and left["attention_mask"][1].all()
    assert unpadded(right["input_ids"], right["attention_mask"]) == unpadded(
        left["input_ids"], left["attention_mask"]
    )
    assert unpadded(right["labels"], right["attention_mask"]) == unpadded(
        left["labels"], left["attention_mask"]
    )
    assert (right["input_ids"][right["attention_mask"] == 0] == proc.pad_token_id).all()

    gen = MoWECollator(proc, train=False)(exs)  # prompts only, left-padded, answers kept aside
    assert "labels" not in gen and gen["answer"] == [e["answer"] for e in exs]
    assert gen["attention_mask"][:, -1].all()
    lab0 = right["labels"][0]
    prompt_len = int((lab0 == IGNORE_INDEX)[right["attention_mask"][0].bool()].sum())
    assert unpadded(gen["input_ids"], gen["attention_mask"])[0] == right["input_ids"][0, :prompt_len].tolist()


def test_max_length_cuts_answers_not_prompts(proc):
    full = MoWECollator(proc)([example(0, answer="three one four one five nine")])
    n = int(full["attention_mask"].sum())
    cut = MoWECollator(proc, max_length=n - 2)([example(0, answer="three one four one five nine")])
    assert cut["input_ids"].shape[1] == n - 2 and (cut["labels"] != IGNORE_INDEX).any()
    with pytest.raises(MoWEInputError, match="prompt alone"):
        MoWECollator(proc, max_length=5)([example(0)])


# ----------------------------------------------------------------------------------------------- paraphrases
def test_paraphrases_are_deterministic_and_train_only(tok):
    p = MoWEProcessor(tok, paraphrases={"asr": ASR_PARAPHRASES}, seed=7)
    exs = [example(i) for i in range(20)] + [example(99, task="gender")]
    train = MoWECollator(p)
    a, b = train(exs), train(exs)
    assert a["instruction"] == b["instruction"] and torch.equal(a["input_ids"], b["input_ids"])
    assert all(ins in ASR_PARAPHRASES for ins in a["instruction"][:20])
    assert len(set(a["instruction"][:20])) > 5  # spread over the phrasings
    assert a["instruction"][20] == "Transcribe the speech."  # the gender task has no paraphrases
    # Per example, not per position: the same example gets the same phrasing in another batch.
    assert train(exs[3:4])["instruction"] == a["instruction"][3:4]
    assert p.decode(a["input_ids"][:1])[0].count(a["instruction"][0]) == 1
    # Another epoch re-draws, another seed too; evaluation and augment=False never paraphrase.
    train.set_epoch(1)
    assert train(exs)["instruction"] != a["instruction"]
    other_seed = MoWECollator(MoWEProcessor(tok, paraphrases={"asr": ASR_PARAPHRASES}, seed=8))(exs)
    assert other_seed["instruction"] != a["instruction"]
    assert set(MoWECollator(p, train=False)(exs)["instruction"]) == {"Transcribe the speech."}
    assert set(MoWECollator(p, augment=False)(exs)["instruction"]) == {"Transcribe the speech."}


# ----------------------------------------------------------------------------------------------- save / load
def test_processor_save_load_round_trip(tok, tmp_path: Path):
    p = MoWEProcessor(
        tok,
        prompt_template=SALMONN_PROMPT_TEMPLATE,
        paraphrases={"asr": ASR_PARAPHRASES},
        max_audio_seconds=12.5,
        length_policy="chunk",
        seed=3,
        system_prompt=None,
    )
    p.save_pretrained(tmp_path / "proc")
    q = MoWEProcessor.from_pretrained(tmp_path / "proc")
    assert q.to_dict() == p.to_dict() and q.audio_token_id == p.audio_token_id
    a = p(text="Transcribe.", audio=wave(0.2), answer="one two", sampling_rate=SR)
    b = q(text="Transcribe.", audio=wave(0.2), answer="one two", sampling_rate=SR)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_processor_config_is_strict(proc, tmp_path: Path):
    proc.save_pretrained(tmp_path)
    cfg_path = tmp_path / "processor_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "sampling_rate": 16000}))
    with pytest.raises(ConfigError, match="'sampling_rate'"):
        MoWEProcessor.from_pretrained(tmp_path)
    cfg_path.write_text(json.dumps({**cfg, "length_policy": "stretch"}))
    with pytest.raises(ConfigError, match="length_policy"):
        MoWEProcessor.from_pretrained(tmp_path)
    cfg_path.unlink()
    with pytest.raises(ConfigError, match="processor_config.json"):
        MoWEProcessor.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------------------------- model
def test_collated_batch_runs_through_a_tiny_model(tok, proc):
    model = tiny_model(tok, proc)
    exs = [example(0, seconds=0.5), example(1, answer="male", task="gender", seconds=0.25), None]
    batch = MoWECollator(proc)(exs)
    assert batch["num_dropped"] == 1
    out = model(**{k: batch[k] for k in MODEL_INPUT_KEYS})
    assert out.loss is not None and math.isfinite(out.loss.item())
    out.loss.backward()
    # Supervised positions survive the merge: the merged labels hold exactly the answer tokens + eos.
    assert int((out.labels != IGNORE_INDEX).sum()) == int((batch["labels"] != IGNORE_INDEX).sum())

    gen = MoWECollator(proc, train=False)(exs)
    ids = model.generate(**{k: gen[k] for k in MODEL_INPUT_KEYS if k in gen}, max_new_tokens=3)
    assert ids.shape[0] == 2 and len(proc.decode(ids)) == 2

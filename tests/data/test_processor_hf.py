"""MoWEProcessor the transformers way: BatchFeature keyed by the model's forward arguments (with .to()),
sampling_rate= (resampling; an error without it for raw arrays), chat messages with audio parts (several clips
   per
turn, several turns) through apply_chat_template then processor(text=..., audio=...), and AutoProcessor."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import mowe  # noqa: F401  (registers "mowe" with the Auto classes)
from mowe.data.processor import MoWEProcessor
from mowe.data.tokenizer import AUDIO_TOKEN, train_bpe_tokenizer
from mowe.errors import MoWEInputError

TEXTS = [
    "transcribe the speech",
    "which clip is louder",
    "the second one",
    "and this one",
    "describe the sound",
    "you are a helpful assistant that listens to audio",
] * 5


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(TEXTS, vocab_size=360)


@pytest.fixture(scope="module")
def proc(tok):
    return MoWEProcessor(tok)


def signal(sr: int, seconds: float = 0.6) -> np.ndarray:
    """Two tones and a chirp, rendered at ``sr``: the same sound at any rate."""
    t = np.arange(round(seconds * sr)) / sr
    return (
        0.3 * np.sin(2 * np.pi * 440 * t)
        + 0.2 * np.sin(2 * np.pi * 1900 * t + 0.3)
        + 0.1 * np.sin(2 * np.pi * (300 + 2000 * t) * t)
    ).astype(np.float32)


def test_batch_feature_keys_are_forward_arguments_and_to_moves_them(proc, tmp_path: Path):
    from transformers import BatchFeature

    from mowe.model import MoWEAudioLLM

    sf.write(str(tmp_path / "a.wav"), signal(16000), 16000, subtype="FLOAT")
    batch = proc(
        text=["Transcribe the speech.", "Describe the sound."],
        audio=[str(tmp_path / "a.wav")] * 2,
        answer=["one", "two"],
    )
    assert isinstance(batch, BatchFeature)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "waveforms", "wave_lengths"}
    assert set(batch) <= set(inspect.signature(MoWEAudioLLM.forward).parameters)
    ids = batch["input_ids"].clone()
    assert batch.to(torch.float16) is batch  # in place, as transformers' BatchFeature.to
    assert (
        batch["waveforms"].dtype == torch.float16 and batch["input_ids"].dtype == torch.long
    )  # ids stay ints
    assert torch.equal(batch["input_ids"], ids)
    batch.to("meta")
    assert all(v.device.type == "meta" for v in batch.values())


def test_an_array_at_44k_with_its_sampling_rate_equals_the_files(proc, tmp_path: Path):
    sf.write(str(tmp_path / "a44.wav"), signal(44100), 44100, subtype="FLOAT")
    sf.write(str(tmp_path / "a16.wav"), signal(16000), 16000, subtype="FLOAT")
    text = "Describe the sound."
    from_array = proc(text=text, audio=signal(44100), sampling_rate=44100)
    from_44k_file = proc(text=text, audio=str(tmp_path / "a44.wav"))
    from_16k_file = proc(text=text, audio=str(tmp_path / "a16.wav"))
    assert from_array["wave_lengths"].tolist() == from_16k_file["wave_lengths"].tolist() == [9600]
    torch.testing.assert_close(from_array["waveforms"], from_44k_file["waveforms"], atol=0, rtol=0)
    # The same sound rendered at 16 kHz: equal away from the resampler's edge transients.
    torch.testing.assert_close(
        from_array["waveforms"][:, 200:-200], from_16k_file["waveforms"][:, 200:-200], atol=1e-5, rtol=0
    )
    assert (from_array["waveforms"] - from_16k_file["waveforms"]).abs().max() < 0.02
    same = proc(text=text, audio=torch.from_numpy(signal(16000)), sampling_rate=16000)
    torch.testing.assert_close(same["waveforms"], from_16k_file["waveforms"], atol=0, rtol=0)
    with pytest.raises(MoWEInputError, match="sampling_rate"):
        proc(text=text, audio=signal(16000))
    with pytest.raises(MoWEInputError, match="sampling_rate"):
        proc(text=text, audio=signal(16000), sampling_rate=0)


def test_multi_turn_two_clip_chat_puts_placeholders_where_the_audio_parts_were(proc, tok, tmp_path: Path):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(str(a), signal(16000, 0.5), 16000, subtype="FLOAT")
    sf.write(str(b), signal(16000, 0.8), 16000, subtype="FLOAT")
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "audio", "path": str(a)},
                {"type": "text", "text": "or"},
                {"type": "audio", "path": str(b)},
                {"type": "text", "text": "which clip is louder?"},
            ],
        },
        {"role": "assistant", "content": "the second one"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "and this one?"},
                {"type": "audio", "array": signal(44100, 0.3), "sampling_rate": 44100},
            ],
        },
    ]
    prompt = proc.apply_chat_template(messages)
    expected = tok.apply_chat_template(
        [
            {"role": "system", "content": proc.system_prompt},
            {"role": "user", "content": f"{AUDIO_TOKEN} or {AUDIO_TOKEN} which clip is louder?"},
            {"role": "assistant", "content": "the second one"},
            {"role": "user", "content": f"and this one? {AUDIO_TOKEN}"},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert prompt == expected
    clips = proc.audio_from_messages(messages)
    batch = proc(text=prompt, audio=clips, sampling_rate=16000)
    ids = batch["input_ids"][0]
    assert ids.tolist() == tok(expected, add_special_tokens=False)["input_ids"]
    assert int((ids == proc.audio_token_id).sum()) == 3
    # Clips in placeholder order: 0.5 s, 0.8 s, then the 44.1 kHz array resampled (0.3 s).
    assert batch["wave_lengths"].tolist() == [8000, 12800, 4800]
    # Two such chats in one batch, clips given as one flat list (Qwen2-Audio style) or per prompt.
    flat = proc(text=[prompt, prompt], audio=clips + clips, sampling_rate=16000)
    nested = proc(text=[prompt, prompt], audio=[clips, clips], sampling_rate=16000)
    assert flat["waveforms"].shape[0] == 6 and all(torch.equal(flat[k], nested[k]) for k in flat)
    with pytest.raises(MoWEInputError, match="3 audio placeholders"):
        proc(text=prompt, audio=clips[:2], sampling_rate=16000)


def test_several_clips_for_one_instruction_and_chunked_windows(tok):
    long = MoWEProcessor(tok, max_audio_seconds=0.5, length_policy="chunk")
    clips = [signal(16000, 0.4), signal(16000, 1.2)]
    out = long(text=f"compare {AUDIO_TOKEN} with {AUDIO_TOKEN}", audio=clips, sampling_rate=16000)
    assert out["wave_lengths"].tolist() == [6400, 8000, 8000, 3200]  # the second clip: three windows
    ids = out["input_ids"][0].tolist()
    at = [i for i, t in enumerate(ids) if t == long.audio_token_id]
    assert len(at) == 4 and at[1:] == [at[1], at[1] + 1, at[1] + 2] and at[1] > at[0] + 1


def test_auto_processor_and_the_model_folder(tok, tmp_path: Path):
    from conftest import tiny_config
    from transformers import AutoProcessor

    from mowe.model import MoWEAudioLLM

    proc = MoWEProcessor(tok, prompt_template="{audio} {instruction}\n")
    model = MoWEAudioLLM.from_config(
        tiny_config(weak=False, vocab_size=len(tok)).replace(audio_token_id=proc.audio_token_id)
    )
    model.save_pretrained(tmp_path / "m", processor=proc)
    for loaded in (
        AutoProcessor.from_pretrained(tmp_path / "m"),
        MoWEProcessor.from_pretrained(tmp_path / "m"),
    ):
        assert isinstance(loaded, MoWEProcessor) and loaded.to_dict() == proc.to_dict()
    again = MoWEAudioLLM.from_pretrained(tmp_path / "m")
    assert again.audio_token_id == proc.audio_token_id


def test_answers_need_plain_instructions(proc):
    prompt = proc.apply_chat_template([{"role": "user", "content": [{"type": "audio", "path": "x.wav"}]}])
    with pytest.raises(MoWEInputError, match="assistant turn"):
        proc(text=prompt, audio=signal(16000), sampling_rate=16000, answer="a tone")
    with pytest.raises(MoWEInputError, match="assistant turn"):
        proc(
            text=f"{AUDIO_TOKEN} {AUDIO_TOKEN} compare",
            audio=[signal(16000)] * 2,
            sampling_rate=16000,
            answer="x",
        )


def test_processor_push_to_hub_uploads_its_folder(proc, tmp_path: Path, monkeypatch):
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, **kw: calls.append(kw["repo_id"]))
    monkeypatch.setattr(
        HfApi,
        "upload_folder",
        lambda self, **kw: calls.append(
            (kw["repo_id"], sorted(p.name for p in Path(kw["folder_path"]).iterdir()))
        ),
    )
    proc.save_pretrained(tmp_path / "p", push_to_hub=True, repo_id="me/proc")
    assert calls[0] == "me/proc" and calls[1][0] == "me/proc"
    assert {"processor_config.json", "tokenizer.json"} <= set(calls[1][1])

"""`mowe serve` as a real subprocess on 127.0.0.1, spoken to with the real openai client: plain and streamed
answers equal model.generate on the processor's chat-template prompt; concurrent requests batch."""

from __future__ import annotations

import concurrent.futures as cf

import pytest
import torch

pytest.register_assert_rewrite("_serve_helpers")  # it is also a plugin (below): rewrite it once
from _serve_helpers import INSTRUCTION, audio_messages, get_json

# The `servers` and `clips` fixtures: one registration, so one pair of servers for all serve tests.
pytest_plugins = ["_serve_helpers"]

openai = pytest.importorskip("openai", reason="the openai client is part of the test extra")


def _client(server):
    return openai.OpenAI(base_url=server.api, api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def reference(servers):
    """The served model and processor, loaded in this process as a user would."""
    from mowe.data.processor import MoWEProcessor
    from mowe.model import MoWEAudioLLM

    d = servers["main"].model_dir
    return MoWEAudioLLM.from_pretrained(d).eval(), MoWEProcessor.from_pretrained(d)


def _generate(reference, messages, wav, max_new_tokens):
    model, proc = reference
    prompt = proc.apply_chat_template(messages)
    batch = proc(text=INSTRUCTION, audio=str(wav))
    ids = proc.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert torch.equal(ids, batch["input_ids"])  # [audio, text] is the plain processor call's prompt
    with torch.no_grad():
        out = model.generate(
            batch["input_ids"],
            batch["waveforms"],
            batch["wave_lengths"],
            attention_mask=batch["attention_mask"],
            max_new_tokens=max_new_tokens,
        )
    row = out[0].tolist()
    eos = proc.tokenizer.eos_token_id
    row = row[: row.index(eos)] if eos in row else row
    return proc.decode([row])[0], len(row)


def test_plain_and_streamed_answers_equal_model_generate(servers, clips, reference):
    server, wav = servers["main"], clips[600]
    messages = audio_messages(wav)
    text, n_tokens = _generate(reference, messages, wav, max_new_tokens=12)
    client = _client(server)

    res = client.chat.completions.create(model=server.name, messages=messages, max_tokens=12)
    assert res.choices[0].message.content == text
    assert res.usage.completion_tokens == n_tokens
    assert res.choices[0].finish_reason == ("length" if n_tokens == 12 else "stop")
    route = res.model_extra["mowe"]["router"]
    assert len(route) == 1 and len(route[0]["selected"]) == 1  # top-1 of the 4 weak encoders
    chosen = route[0]["selected"][0]
    assert (
        chosen["encoder"] in route[0]["gates"] and chosen["gate"] == route[0]["gates"][chosen["encoder"]] > 0
    )

    chunks = list(
        client.chat.completions.create(
            model=server.name,
            messages=messages,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].model_extra["mowe"]["router"] == route
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        res.choices[0].finish_reason
    ]
    assert chunks[-1].usage.completion_tokens == n_tokens


def test_concurrent_requests_share_one_generate_and_keep_their_answers(servers, clips):
    server, client = servers["main"], _client(servers["main"])
    wavs = list(clips.values())

    def ask(wav):
        return (
            client.chat.completions.create(model=server.name, messages=audio_messages(wav), max_tokens=6)
            .choices[0]
            .message.content
        )

    alone = [ask(w) for w in wavs]  # one at a time: each is its own batch (after the 300 ms wait)
    before = get_json(server.url + "/health")[1]
    with cf.ThreadPoolExecutor(len(wavs)) as pool:
        together = list(pool.map(ask, wavs))
    after = get_json(server.url + "/health")[1]
    assert together == alone
    assert after["requests"] - before["requests"] == len(wavs)
    assert after["batches"] - before["batches"] < len(wavs) and after["largest_batch"] >= 2


def test_sampling_gives_n_choices_and_models_and_health_answer(servers, clips):
    server, client = servers["main"], _client(servers["main"])
    res = client.chat.completions.create(
        model=server.name, messages=audio_messages(clips[300]), max_tokens=5, n=3, temperature=1.0
    )
    assert sorted(c.index for c in res.choices) == [0, 1, 2]
    assert all(c.finish_reason in ("stop", "length") for c in res.choices)
    assert [m.id for m in client.models.list().data] == [server.name]
    status, health = get_json(server.url + "/health")
    assert status == 200 and health["status"] == "ok" and health["model"] == server.name

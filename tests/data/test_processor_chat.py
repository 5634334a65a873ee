"""MoWEProcessor.apply_chat_template: OpenAI-style messages -> the prompt the model sees."""

from __future__ import annotations

import pytest

from mowe.data.processor import MoWEProcessor
from mowe.data.tokenizer import AUDIO_TOKEN, train_bpe_tokenizer
from mowe.errors import MoWEInputError
from mowe.salmonn import PROMPT_TEMPLATE as SALMONN_PROMPT_TEMPLATE

AUDIO = {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(
        ["transcribe the speech", "what is said", "describe the sound"] * 5, vocab_size=300
    )


def _user(*parts):
    return [
        {
            "role": "user",
            "content": [p if isinstance(p, dict) else {"type": "text", "text": p} for p in parts],
        }
    ]


@pytest.mark.parametrize("template", [None, SALMONN_PROMPT_TEMPLATE])
def test_audio_then_text_is_the_prompt_of_the_plain_processor_call(tok, template):
    proc = MoWEProcessor(tok, prompt_template=template)
    assert proc.apply_chat_template(_user(AUDIO, "transcribe the speech")) == proc.build_prompt(
        "transcribe the speech"
    )
    # The plain-string content and a system message that equals the default give the same prompt.
    msgs = [{"role": "system", "content": proc.system_prompt}] + _user(AUDIO, "what is said")
    assert proc.apply_chat_template(msgs) == proc.build_prompt("what is said")


def test_placeholders_sit_where_the_audio_parts_are(tok):
    proc = MoWEProcessor(tok, system_prompt=None)
    prompt = proc.apply_chat_template(_user("compare", AUDIO, "with", AUDIO))
    assert prompt == tok.apply_chat_template(
        [{"role": "user", "content": f"compare {AUDIO_TOKEN} with {AUDIO_TOKEN}"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert ids.count(proc.audio_token_id) == 2
    # Several turns keep their order, and a given system message replaces the processor's.
    turns = [
        {"role": "system", "content": "be brief"},
        *_user(AUDIO, "what is said"),
        {"role": "assistant", "content": "nothing"},
        *_user("and now?"),
    ]
    prompt = proc.apply_chat_template(turns)
    assert (
        prompt.index("be brief")
        < prompt.index(AUDIO_TOKEN)
        < prompt.index("nothing")
        < prompt.index("and now?")
    )
    assert prompt.endswith("assistant:")


def test_prompt_template_with_a_system_message_and_inline_audio(tok):
    proc = MoWEProcessor(tok, prompt_template="{system}|{audio}|{instruction}")
    assert proc.apply_chat_template([{"role": "system", "content": "S"}, *_user(AUDIO, "x")]).endswith(
        "S|" + AUDIO_TOKEN + "|x"
    )
    assert proc.apply_chat_template(_user("x", AUDIO)).endswith(f"||x {AUDIO_TOKEN}")
    with pytest.raises(MoWEInputError, match="one user turn"):
        proc.apply_chat_template(_user("a") + [{"role": "assistant", "content": "b"}] + _user(AUDIO, "c"))


@pytest.mark.parametrize(
    "messages, match",
    [
        ([], "non-empty list"),
        ("hello", "non-empty list"),
        ([{"role": "tool", "content": "x"}], r"messages\[0\]"),
        ([{"role": "user", "content": 3}], r"messages\[0\]\.content must be"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], r"messages\[0\]\.content\[0\]"),
        ([{"role": "assistant", "content": [AUDIO]}], r"content\[0\]"),
        ([{"role": "user", "content": f"sneaky {AUDIO_TOKEN}"}], r"content\[0\]"),
    ],
)
def test_malformed_messages_name_the_bad_part(tok, messages, match):
    with pytest.raises(MoWEInputError, match=match):
        MoWEProcessor(tok).apply_chat_template(messages)

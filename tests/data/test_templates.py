"""mowe.data.templates: every template the table (and the preset registry) holds is one the processor accepts,
and the default one is what a tokenizer without a chat template gets."""

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mowe.data.processor import MoWEProcessor
from mowe.data.processor_options import ProcessorOptions
from mowe.data.templates import DEFAULT_PROMPT_TEMPLATE, PROMPT_TEMPLATES, TEMPLATE_FIELDS
from mowe.errors import ConfigError
from mowe.presets import PROMPT_TEMPLATES as ALL_TEMPLATES


def test_every_template_passes_the_processors_check():
    assert set(PROMPT_TEMPLATES) <= set(ALL_TEMPLATES)
    assert TEMPLATE_FIELDS == {"audio", "instruction", "system"}
    # LTU-AS as released puts Whisper's transcript in the prompt: ltu_as_input_ids builds that one, not the
    # processor.
    not_for_the_processor = {"ltu_as_faithful"}
    for name, template in ALL_TEMPLATES.items():
        if name in not_for_the_processor:
            with pytest.raises(ConfigError, match=r"unknown field \{transcript\}"):
                ProcessorOptions(prompt_template=template)
        else:
            assert ProcessorOptions(prompt_template=template).prompt_template == template, name
    with pytest.raises(ConfigError, match=r"processor\.prompt_template: unknown field \{speech\}"):
        ProcessorOptions(prompt_template="{speech} {instruction} {audio}")


def test_a_tokenizer_without_chat_template_gets_the_default_template():
    vocab = {w: i for i, w in enumerate(["<unk>", "<|bos|>", "<|eos|>", "<|audio|>", "hi"])}
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        unk_token="<unk>",
        additional_special_tokens=["<|audio|>"],
    )
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    assert not tok.chat_template
    proc = MoWEProcessor(tok, system_prompt="S")
    expected = DEFAULT_PROMPT_TEMPLATE.format(system="S", audio="<|audio|>", instruction="hi")
    assert proc.build_prompt("hi") == "<|bos|>" + expected

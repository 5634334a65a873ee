"""mowe the transformers way: hub ids from a local Hugging Face cache (offline), the Auto classes after
``import mowe``, the LoRA as a PEFT adapter folder, LoRA merge and LLM export, GenerationConfig, push_to_hub,
the inference settings saved in the config, and LLMConfig's from_pretrained keywords."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import AUDIO_ID, LLAMA_TINY, WHISPER_TINY, make_batch

import mowe  # noqa: F401  (registers "mowe" with the Auto classes)
from mowe.config import ConnectorConfig, EncoderConfig, InferenceConfig, LLMConfig, MoWEConfig
from mowe.errors import CheckpointError
from mowe.model import MoWEAudioLLM

COMMIT = "1" * 40


def put_in_hub_cache(
    cache: Path, repo_id: str, folder: Path, *, refs=("main",), commit: str = COMMIT
) -> None:
    """Lay ``folder`` out as huggingface_hub caches a download: blobs by sha256, a snapshot of symlinks,
    refs."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        dst = repo / "snapshots" / commit / f.relative_to(folder)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(os.path.relpath(blob, dst.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 and HF_HUB_CACHE=<tmp>/hub, for the environment and the already imported constants."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def _randomize_lora(model):
    """LoRA B starts at zero; give it values so that the adapter changes the logits."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return model


def _tiny_whisper(path: Path) -> None:
    from transformers import WhisperConfig, WhisperModel

    cfg = WhisperConfig(
        **WHISPER_TINY,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=32,
        vocab_size=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=3,
    )
    WhisperModel(cfg).save_pretrained(path)


def _logits(model, batch):
    wav, wl, ids, am, _ = batch
    with torch.no_grad():
        return model(ids, wav, wl, attention_mask=am).logits


def test_hub_id_auto_classes_and_path_give_identical_logits(tmp_path, offline_cache):
    from transformers import AutoConfig, AutoModel

    from mowe.hf import MoWEPretrainedConfig

    # A frozen strong encoder referenced by hub id (not copied into the saved folder) must resolve too.
    _tiny_whisper(tmp_path / "whisper")
    put_in_hub_cache(offline_cache, "tiny-org/whisper", tmp_path / "whisper")
    cfg = MoWEConfig(
        strong=EncoderConfig("whisper", name_or_path="tiny-org/whisper", pad_to_30s=False),
        connector=ConnectorConfig("stack", {"stack": 4}),
        llm=LLMConfig(config=LLAMA_TINY),
        audio_token_id=AUDIO_ID,
    )
    model = _randomize_lora(MoWEAudioLLM.from_config(cfg)).eval()
    model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["model_type"] == "mowe" and saved["architectures"] == ["MoWEAudioLLM"]
    put_in_hub_cache(offline_cache, "org/mowe-tiny", tmp_path / "saved", refs=("main", "v1"))
    batch = make_batch()
    want = _logits(model, batch)

    by_id = MoWEAudioLLM.from_pretrained("org/mowe-tiny").eval()
    by_rev = MoWEAudioLLM.from_pretrained("org/mowe-tiny", revision="v1", local_files_only=True).eval()
    by_dir = MoWEAudioLLM.from_pretrained(
        "org/mowe-tiny", cache_dir=str(offline_cache), revision=COMMIT
    ).eval()
    hf_cfg = AutoConfig.from_pretrained("org/mowe-tiny")
    assert isinstance(hf_cfg, MoWEPretrainedConfig) and hf_cfg.to_mowe_config() == cfg
    auto = AutoModel.from_pretrained("org/mowe-tiny").eval()
    by_path = MoWEAudioLLM.from_pretrained(tmp_path / "saved").eval()
    assert isinstance(auto, MoWEAudioLLM)
    for other in (by_id, by_rev, by_dir, auto, by_path):
        torch.testing.assert_close(_logits(other, batch), want, atol=0, rtol=0)
    with pytest.raises(CheckpointError, match="org/mowe-tiny"):
        MoWEAudioLLM.from_pretrained("org/mowe-tiny", revision="no-such-branch")
    with pytest.raises(CheckpointError, match="org/absent"):
        MoWEAudioLLM.from_pretrained("org/absent")


def test_peft_adapter_folder_merge_and_plain_transformers_export(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = MoWEConfig(
        strong=EncoderConfig("whisper", preset="tiny", overrides=WHISPER_TINY, pad_to_30s=False),
        connector=ConnectorConfig("stack", {"stack": 4}),
        llm=LLMConfig(config=LLAMA_TINY),
        audio_token_id=AUDIO_ID,
    )
    model = _randomize_lora(MoWEAudioLLM.from_config(cfg)).eval()
    model.save_pretrained(tmp_path / "saved")
    adapter = tmp_path / "saved" / "llm_adapter"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(os.listdir(adapter))
    ids = torch.tensor([[1, 9, 4, 7, 3, 2], [1, 8, 8, 2, 6, 5]])
    with torch.no_grad():
        want = model.llm(input_ids=ids).logits

    # peft alone puts the saved adapter on the base LLM (exported without the LoRA).
    model.export_llm(tmp_path / "base", merged=False)
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=ids).logits, want, atol=1e-3)  # the adapter matters
        by_peft = PeftModel.from_pretrained(base, str(adapter)).eval()(input_ids=ids).logits
    torch.testing.assert_close(by_peft, want, atol=0, rtol=0)

    # The merged export loads in a Python without mowe and gives the unmerged logits.
    model.export_llm(tmp_path / "merged")
    torch.save(ids, tmp_path / "ids.pt")
    code = (
        "import sys, torch; from transformers import AutoModelForCausalLM; "
        f"m = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'merged')!r}).eval(); "
        f"ids = torch.load({str(tmp_path / 'ids.pt')!r}); "
        "assert not any(k.split('.')[0] == 'mowe' for k in sys.modules); "
        f"torch.save(m(input_ids=ids).logits.detach(), {str(tmp_path / 'out.pt')!r})"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=tmp_path, env={**env, "OMP_NUM_THREADS": "1"}
    )
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), want, atol=1e-5, rtol=1e-5)

    # merge_lora merges in place and returns the model; the merged model saves and reloads exactly.
    batch = make_batch()
    before = _logits(model, batch)
    assert model.merge_lora() is model and not hasattr(model.llm, "peft_config")
    merged = _logits(model, batch)
    torch.testing.assert_close(merged, before, atol=1e-5, rtol=1e-5)
    model.save_pretrained(tmp_path / "merged_mowe")
    assert not (tmp_path / "merged_mowe" / "llm_adapter").exists()
    again = MoWEAudioLLM.from_pretrained(tmp_path / "merged_mowe").eval()
    torch.testing.assert_close(_logits(again, batch), merged, atol=0, rtol=0)


def test_folders_with_lora_in_model_safetensors_still_load(tmp_path, model):
    """The format before llm_adapter/: LoRA weights as llm. keys in model.safetensors, config.json without
    model_type."""
    import shutil

    from safetensors.torch import save_file

    _randomize_lora(model).eval()
    model.save_pretrained(tmp_path / "new")
    old = tmp_path / "old"
    old.mkdir()
    keys = model._keys_to_save(False)
    assert any(".lora_" in k for k in keys)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items() if k in keys},
        str(old / "model.safetensors"),
    )
    model.config.to_json(old / "config.json")
    again = MoWEAudioLLM.from_pretrained(old).eval()
    batch = make_batch()
    torch.testing.assert_close(_logits(again, batch), _logits(model, batch), atol=0, rtol=0)
    shutil.rmtree(tmp_path / "new" / "llm_adapter")  # the new format without its adapter is incomplete
    with pytest.raises(CheckpointError, match="missing weights"):
        MoWEAudioLLM.from_pretrained(tmp_path / "new")


@pytest.fixture
def model():
    from conftest import tiny_config

    return MoWEAudioLLM.from_config(tiny_config(weak=False))


def test_generation_config_is_saved_and_drives_generate(tmp_path, model):
    model.eval()
    wav, wl, ids, am, _ = make_batch()
    model.generation_config.max_new_tokens = 5
    model.generation_config.eos_token_id = None
    assert model.generate(ids, wav, wl, attention_mask=am).shape == (3, 5)
    assert model.generate(ids, wav, wl, attention_mask=am, max_new_tokens=2).shape == (3, 2)
    model.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "generation_config.json").read_text())
    assert saved["max_new_tokens"] == 5
    again = MoWEAudioLLM.from_pretrained(tmp_path / "m").eval()
    assert again.generation_config.max_new_tokens == 5
    torch.testing.assert_close(
        again.generate(ids, wav, wl, attention_mask=am),
        model.generate(ids, wav, wl, attention_mask=am),
        atol=0,
        rtol=0,
    )


def test_inference_settings_are_saved_and_applied_on_load(tmp_path):
    from conftest import tiny_config
    from transformers import PreTrainedTokenizerFast  # noqa: F401

    from mowe.data.tokenizer import train_bpe_tokenizer
    from mowe.presets import PROMPT_TEMPLATES, salmonn

    preset = salmonn(tiny=True, faithful=False)
    assert preset.config.inference == InferenceConfig(PROMPT_TEMPLATES["salmonn"], 1.0)
    tok = train_bpe_tokenizer(["what is the sound", "three one four"], vocab_size=300)
    cfg = tiny_config(weak=False).replace(
        inference=InferenceConfig(PROMPT_TEMPLATES["salmonn"], 0.5),
        audio_token_id=tok.convert_tokens_to_ids("<|audio|>"),
    )
    model = MoWEAudioLLM.from_config(cfg)
    model.save_pretrained(tmp_path / "m")
    again = MoWEAudioLLM.from_pretrained(tmp_path / "m")
    scales = {
        m.scaling["default"] for m in again.llm.modules() if isinstance(getattr(m, "scaling", None), dict)
    }
    alpha_over_r = cfg.lora.alpha / cfg.lora.r
    assert scales == {0.5 * alpha_over_r}
    proc = again.processor_for(tok)
    assert proc.prompt_template == PROMPT_TEMPLATES["salmonn"]
    assert proc.build_prompt("What is it?").endswith("</Speech> What is it?\nASSISTANT:")


def test_push_to_hub_creates_the_repo_and_uploads_the_whole_folder(tmp_path, model, monkeypatch):
    from huggingface_hub import HfApi

    from mowe.data.processor import MoWEProcessor
    from mowe.data.tokenizer import train_bpe_tokenizer

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, **kw: calls.append(("create", kw)))

    def upload(self, **kw):
        folder = Path(kw["folder_path"])
        calls.append(
            ("upload", kw, sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()))
        )
        return "commit-info"

    monkeypatch.setattr(HfApi, "upload_folder", upload)
    proc = MoWEProcessor(train_bpe_tokenizer(["what is the sound", "three one four"], vocab_size=300))
    assert model.push_to_hub("me/tiny-mowe", processor=proc, private=True) == "commit-info"
    model.save_pretrained(tmp_path / "tiny-mowe", push_to_hub=True)
    (_, kw1), (_, up1, files1), (_, kw2), (_, up2, files2) = calls
    assert kw1["repo_id"] == "me/tiny-mowe" and kw1["private"] is True and kw1["exist_ok"] is True
    assert up1["repo_id"] == "me/tiny-mowe" and kw2["repo_id"] == up2["repo_id"] == "tiny-mowe"
    for need in (
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "llm_adapter/adapter_config.json",
        "llm_adapter/adapter_model.safetensors",
    ):
        assert need in files1 and need in files2
    assert "processor_config.json" in files1 and "processor_config.json" not in files2
    assert up2["folder_path"] == str(tmp_path / "tiny-mowe")


def test_llm_config_forwards_from_pretrained_keywords(tmp_path):
    from transformers import AutoModelForCausalLM, LlamaConfig

    from mowe.builders import build_llm, llm_load_kwargs
    from mowe.config import LoRAConfig
    from mowe.errors import ConfigError

    llama = {k: v for k, v in LLAMA_TINY.items() if k != "model_type"}
    AutoModelForCausalLM.from_config(LlamaConfig(**llama)).save_pretrained(tmp_path / "llama")
    cfg = LLMConfig(
        name_or_path=str(tmp_path / "llama"),
        dtype="bfloat16",
        attn_implementation="eager",
        device_map="cpu",
        from_pretrained_kwargs={"low_cpu_mem_usage": True},
        train="frozen",
    )
    assert llm_load_kwargs(cfg) == {
        "dtype": torch.bfloat16,
        "attn_implementation": "eager",
        "device_map": "cpu",
        "low_cpu_mem_usage": True,
    }
    llm = build_llm(cfg, LoRAConfig())
    assert llm.config._attn_implementation == "eager" and llm.dtype == torch.bfloat16
    random = build_llm(LLMConfig(config=LLAMA_TINY, attn_implementation="eager"), LoRAConfig())
    assert random.base_model.model.config._attn_implementation == "eager"
    with pytest.raises(ConfigError, match="llm.from_pretrained_kwargs.revision"):
        llm_load_kwargs(LLMConfig(name_or_path="x", from_pretrained_kwargs={"revision": "main"}))


def test_infer_and_eval_take_device_and_dtype(model):
    from mowe.cli import build_parser
    from mowe.inference import place_model

    for cmd in (["infer", "--audio", "a.wav", "--prompt", "p"], ["eval", "--manifest", "m.jsonl"]):
        args = build_parser().parse_args([*cmd, "--model", "m", "--device", "cpu", "--dtype", "bfloat16"])
        assert (args.device, args.dtype) == ("cpu", "bfloat16")
    assert (
        build_parser().parse_args(["infer", "--audio", "a", "--prompt", "p", "--model", "m"]).max_new_tokens
        is None
    )
    wav, wl, ids, am, _ = make_batch()
    placed = place_model(model.eval(), device="cpu", dtype="bfloat16")
    assert placed is model and model.llm.dtype == torch.bfloat16
    assert next(model.connector.parameters()).dtype == torch.bfloat16
    assert next(model.strong_encoder.parameters()).dtype == torch.float32  # encoders: EncoderConfig.dtype
    assert model.generate(ids, wav, wl, attention_mask=am, max_new_tokens=2).shape == (3, 2)


def test_encoder_config_dtype_casts_the_weights_and_it_still_encodes():
    from mowe.builders import build_encoder

    cfg = EncoderConfig("whisper", preset="tiny", overrides=WHISPER_TINY, pad_to_30s=False)
    wav = 0.1 * torch.randn(2, 8000)
    lengths = torch.tensor([8000, 5000])
    ref = build_encoder(cfg, name="strong")
    half = build_encoder(dataclasses.replace(cfg, dtype="bfloat16"), name="strong")
    half.load_state_dict(ref.state_dict())
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        a, b = ref(wav, lengths), half(wav, lengths)
    assert torch.equal(a.lengths, b.lengths)
    torch.testing.assert_close(b.features.float(), a.features, atol=0.1, rtol=0.05)


def test_default_generation_config_is_the_llms_made_greedy(tmp_path):
    from types import SimpleNamespace

    from transformers import GenerationConfig

    from mowe.generation import DEFAULT_MAX_NEW_TOKENS, default_generation_config

    own = GenerationConfig(
        do_sample=True,
        temperature=0.7,
        top_p=0.8,
        top_k=20,
        repetition_penalty=1.05,
        eos_token_id=[3, 4],
        bos_token_id=1,
    )
    cfg = default_generation_config(SimpleNamespace(generation_config=own))
    assert (cfg.do_sample, cfg.num_beams, cfg.temperature, cfg.top_p, cfg.top_k) == (
        False,
        1,
        None,
        None,
        None,
    )
    assert (cfg.repetition_penalty, cfg.pad_token_id, cfg.max_new_tokens) == (1.05, 3, DEFAULT_MAX_NEW_TOKENS)
    assert own.do_sample is True  # the LLM's own is not changed
    cfg.save_pretrained(tmp_path)  # valid: transformers refuses to save an inconsistent config
    assert GenerationConfig.from_pretrained(tmp_path).to_diff_dict() == cfg.to_diff_dict()

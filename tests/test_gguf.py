"""LLMs read from GGUF files (``LLMConfig.gguf_file``), on a tiny random Llama written with the ``gguf``
package's own writer (tests/_gguf_helpers.py): the same logits as transformers and as the weights the file was
   written from, an
exact save / reload that references the file instead of copying it, ``export_llm`` to a plain transformers
folder, a vocabulary grown for ``<|audio|>``, and a named ``CheckpointError`` for every broken file.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys

import pytest
import torch
from _audio_helpers import write_tone_wav
from _gguf_helpers import GGUF_NAME, write_tiny_gguf
from conftest import tiny_config
from safetensors import safe_open

from mowe import MoWEAudioLLM
from mowe.builders import build_llm, llm_tokenizer, llm_vocab_size
from mowe.config import LLMConfig, LoRAConfig
from mowe.data.processor import MoWEProcessor
from mowe.errors import CheckpointError

UNTIED, TIED = "untied.gguf", "tied.gguf"
PROMPT = torch.tensor([[1, 40, 70, 100, 200, 260, 3, 274]])


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory):
    """A folder holding two tiny GGUF Llamas (with and without an output layer of their own) and the
    transformers models they were written from."""
    folder = tmp_path_factory.mktemp("gguf")
    return folder, {name: write_tiny_gguf(folder, tied=name == TIED, name=name)[1] for name in (UNTIED, TIED)}


@pytest.mark.parametrize("name", [UNTIED, TIED])
def test_mowe_llm_gives_transformers_logits_and_the_written_weights(gguf_dir, name):
    import gguf
    from transformers import AutoModelForCausalLM

    folder, written = gguf_dir
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    llm = build_llm(LLMConfig(name_or_path=str(folder), gguf_file=name, train="frozen"), LoRAConfig()).eval()
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (reader, name_map)  # memoised only during the load
    ref = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name).eval()
    assert llm.config.tie_word_embeddings == (name == TIED)
    assert not getattr(
        llm, "is_quantized", False
    )  # plain weights: LoRA, .to(dtype), save_pretrained all work
    with torch.no_grad():
        logits = llm(PROMPT).logits
        assert torch.equal(logits, ref(PROMPT).logits)
        # F32 tensors, q/k un-permuted on load: exactly the weights the file was written from
        assert torch.equal(logits, written[name](PROMPT).logits)


def _model(folder, name, *, vocab_size=None, audio_token_id=5):
    cfg = tiny_config(weak=False)
    llm = LLMConfig(name_or_path=str(folder), gguf_file=name, vocab_size=vocab_size)
    cfg = dataclasses.replace(
        cfg, llm=llm, lora=LoRAConfig(r=4, alpha=8, dropout=0.0), audio_token_id=audio_token_id
    )
    torch.manual_seed(1)
    model = MoWEAudioLLM.from_config(cfg).eval()
    with torch.no_grad():  # a LoRA that is not zero, so that losing it would show
        for n, p in model.llm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return model


def _batch(processor, tmp_path):
    wav = tmp_path / "tone.wav"
    write_tone_wav(wav, 440, 0.6)
    return processor(text=["What do you hear?", "Describe it."], audio=[str(wav), str(wav)])


@pytest.mark.parametrize("name,grow", [(UNTIED, False), (TIED, True)], ids=["untied", "tied+audio-token"])
def test_save_reload_and_export_are_exact_and_reference_the_file(gguf_dir, tmp_path, name, grow):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, _ = gguf_dir
    cfg = LLMConfig(name_or_path=str(folder), gguf_file=name)
    tok = llm_tokenizer(cfg)  # the GGUF's own tokenizer + <|audio|>
    assert len(tok) == llm_vocab_size(cfg) + 1 == 276
    if grow:
        model = _model(
            folder, name, vocab_size=len(tok), audio_token_id=tok.convert_tokens_to_ids("<|audio|>")
        )
        assert model.llm.get_input_embeddings().weight.shape[0] == 276
    else:  # a placeholder that is a token of the file's own vocabulary, so no row is added
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = _model(folder, name, audio_token_id=tok.convert_tokens_to_ids("<|endoftext|>"))
    proc = MoWEProcessor(tok, audio_token="<|audio|>" if grow else "<|endoftext|>")
    batch = _batch(proc, tmp_path)
    keys = ("input_ids", "waveforms", "wave_lengths", "attention_mask")
    with torch.no_grad():
        before = model(**{k: batch[k] for k in keys}).logits

    saved = tmp_path / "saved"
    model.save_pretrained(saved)
    proc.save_pretrained(saved)
    written = json.loads((saved / "config.json").read_text())["llm"]
    assert (written["name_or_path"], written["gguf_file"]) == (str(folder), name)
    assert written["vocab_size"] == (276 if grow else None)
    assert not list(saved.rglob("*.gguf"))
    with safe_open(saved / "model.safetensors", "pt") as f:
        assert not [k for k in f.keys() if k.startswith("llm.")]  # noqa: SIM118 (safe_open is not iterable)
    assert (saved / "llm_adapter" / "adapter_model.safetensors").is_file()

    again = MoWEAudioLLM.from_pretrained(saved).eval()
    with torch.no_grad():
        assert torch.equal(again(**{k: batch[k] for k in keys}).logits, before)

    exported = model.export_llm(tmp_path / "plain", tokenizer=tok)
    plain = AutoModelForCausalLM.from_pretrained(exported).eval()
    assert len(AutoTokenizer.from_pretrained(exported)) == len(tok)
    ids = batch["input_ids"][:1].masked_fill(batch["input_ids"][:1] == proc.audio_token_id, 7)
    with torch.no_grad():
        merged = _merged_copy(model.llm)
        assert torch.equal(plain(ids).logits, merged(ids).logits)
        torch.testing.assert_close(plain(ids).logits, model.llm(input_ids=ids).logits, atol=1e-5, rtol=0)


def _merged_copy(llm):
    import copy

    return copy.deepcopy(llm).merge_and_unload().eval()


# ----------------------------------------------------------------------------------------------- broken files
def _broken(folder, kind: str, source) -> str:
    """``folder/<kind>.gguf``: missing, not GGUF at all, cut inside its header, or cut inside its tensor
    data."""
    path = folder / f"{kind}.gguf"
    data = (source).read_bytes()
    if kind == "not-gguf":
        path.write_bytes(b"PK\x03\x04" + data[4:200])
    elif kind == "cut-header":
        path.write_bytes(data[:300])
    elif kind == "cut-tensors":
        path.write_bytes(data[: len(data) * 2 // 3])
    return path.name


@pytest.mark.parametrize(
    "kind,says",
    [
        ("missing", "does not exist"),
        ("not-gguf", "not a GGUF file"),
        ("cut-header", "truncated"),
        ("cut-tensors", "truncated"),
    ],
)
def test_a_broken_gguf_file_is_a_checkpoint_error_naming_it(gguf_dir, tmp_path, kind, says):
    folder, _ = gguf_dir
    name = _broken(tmp_path, kind, folder / UNTIED)
    cfg = dataclasses.replace(
        tiny_config(weak=False), llm=LLMConfig(name_or_path=str(tmp_path), gguf_file=name)
    )
    with pytest.raises(CheckpointError, match=says) as e:
        MoWEAudioLLM.from_config(cfg)
    assert str(tmp_path / name) in str(e.value)
    with pytest.raises(CheckpointError, match=says):
        llm_tokenizer(cfg.llm)


def test_a_saved_model_whose_gguf_file_was_damaged_is_a_checkpoint_error(gguf_dir, tmp_path):
    folder, _ = gguf_dir
    own = tmp_path / "llm"
    own.mkdir()
    shutil.copy(folder / UNTIED, own / GGUF_NAME)
    _model(own, GGUF_NAME).save_pretrained(tmp_path / "saved")
    data = (own / GGUF_NAME).read_bytes()
    (own / GGUF_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated GGUF file") as e:
        MoWEAudioLLM.from_pretrained(tmp_path / "saved")
    assert str(own / GGUF_NAME) in str(e.value)


def test_without_the_gguf_package_the_error_says_to_install_it(gguf_dir, monkeypatch):
    folder, _ = gguf_dir
    monkeypatch.setitem(
        sys.modules, "gguf", None
    )  # what `import gguf` meets when the package is not installed
    cfg = dataclasses.replace(
        tiny_config(weak=False), llm=LLMConfig(name_or_path=str(folder), gguf_file=UNTIED)
    )
    with pytest.raises(CheckpointError, match=r"needs the 'gguf' package \(pip install gguf\)") as e:
        MoWEAudioLLM.from_config(cfg)
    assert str(folder / UNTIED) in str(e.value)


def test_the_header_reader_agrees_with_the_gguf_package(gguf_dir):
    from gguf import GGUFReader

    from mowe.gguf import check_gguf_file

    folder, _ = gguf_dir
    header, reader = check_gguf_file(str(folder / UNTIED)), GGUFReader(folder / UNTIED)
    assert header.tensors == tuple(
        (t.name, int(t.tensor_type), int(t.n_elements), int(t.data_offset) - header.data_start)
        for t in reader.tensors
    )
    assert header.data_start == reader.data_offset
    assert (
        header.metadata["general.architecture"] == "llama" and header.metadata["tokenizer.ggml.tokens"] == 275
    )
    assert header.metadata["llama.attention.head_count_kv"] == 2 and header.vocab_size == 275

"""The processor's options are defined once (:class:`ProcessorOptions`): the constructor's keywords and
defaults, the read-only attributes, the checks, ``processor_config.json`` and a run file's ``processor``
section all come from its fields, so a new option is one field there."""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from pathlib import Path

import pytest
import yaml

from mowe.config import from_dict
from mowe.data.manifest import ManifestDataset
from mowe.data.processor import MoWEProcessor
from mowe.data.processor_io import load_processor, save_processor
from mowe.data.processor_options import DEFAULT_SYSTEM_PROMPT, PROCESSOR_CONFIG_NAME, ProcessorOptions
from mowe.data.tokenizer import train_bpe_tokenizer
from mowe.errors import ConfigError
from mowe.training.run_file import DataSection, load_run_file

FIELDS = [f.name for f in dataclasses.fields(ProcessorOptions)]
# A value other than the default for every option (the test below fails until a new option has one here).
NON_DEFAULT = {
    "audio_token": "<|clip|>",
    "system_prompt": None,
    "prompt_template": "Q: {audio} {instruction}\nA:",
    "paraphrases": {"asr": ["Write it down.", "What is said?"]},
    "max_audio_seconds": 12.5,
    "length_policy": "chunk",
    "seed": 7,
    "max_duration_seconds": 600.0,
}
# Bad values, each refused naming its option, whichever way the options come in.
BAD = [
    ("audio_token", 3),
    ("audio_token", ""),
    ("system_prompt", ["a"]),
    ("system_prompt", "hi <|audio|>"),
    ("prompt_template", "{instruction}"),
    ("prompt_template", "{audio}{instruction}{x}"),
    ("prompt_template", "{audio"),
    ("paraphrases", {"asr": "one string"}),
    ("paraphrases", {"asr": []}),
    ("paraphrases", ["a"]),
    ("max_audio_seconds", 0),
    ("max_audio_seconds", float("inf")),
    ("max_audio_seconds", "30"),
    ("length_policy", "pad"),
    ("seed", -1),
    ("seed", 1.5),
    ("seed", True),
    ("max_duration_seconds", 0),
    ("max_duration_seconds", -60.0),
    ("max_duration_seconds", float("nan")),
]


@pytest.fixture(scope="module")
def tok():
    texts = ["transcribe the speech", "what is said", "write it down"] * 5
    return train_bpe_tokenizer(texts, vocab_size=300, special_tokens=["<|clip|>"])


def test_every_option_has_a_non_default_value_in_this_test():
    assert set(NON_DEFAULT) == set(FIELDS)
    defaults = ProcessorOptions()
    assert all(NON_DEFAULT[n] != getattr(defaults, n) for n in FIELDS)
    assert set(FIELDS) == {n for n, _ in BAD}  # every option has a bad value below


def test_constructor_keywords_and_attributes_are_the_fields(tok):
    params = inspect.signature(MoWEProcessor).parameters
    options = [p for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "options"]
    assert [p.name for p in options] == FIELDS
    hints = typing.get_type_hints(ProcessorOptions)
    for p, f in zip(options, dataclasses.fields(ProcessorOptions)):
        assert p.default == f.default and p.annotation == hints[f.name]
    proc = MoWEProcessor(tok, **NON_DEFAULT)
    assert {n: getattr(proc, n) for n in FIELDS} == NON_DEFAULT == proc.options.to_dict()
    with pytest.raises(AttributeError):
        proc.seed = 3  # read-only: the options object is the one copy


def test_defaults_agree_everywhere(tok, tmp_path: Path):
    """Constructor, dataclass, a processor_config.json that omits every option, a run file's empty section."""
    assert ProcessorOptions().system_prompt == DEFAULT_SYSTEM_PROMPT
    expected = ProcessorOptions().to_dict()
    assert MoWEProcessor(tok).options.to_dict() == expected
    assert from_dict(ProcessorOptions, {}, where="processor").to_dict() == expected
    # the clip limit of the datasets the processor is paired with: the same default
    dataset_default = inspect.signature(ManifestDataset).parameters["max_audio_seconds"].default
    assert dataset_default == expected["max_audio_seconds"]
    assert DataSection(train="t.jsonl").max_audio_seconds == expected["max_audio_seconds"]
    MoWEProcessor(tok).save_pretrained(tmp_path)
    (tmp_path / PROCESSOR_CONFIG_NAME).write_text(json.dumps({"processor_class": "MoWEProcessor"}))
    assert MoWEProcessor.from_pretrained(tmp_path).options.to_dict() == expected


def test_every_option_round_trips_through_save_and_load(tok, tmp_path: Path):
    proc = MoWEProcessor(tok, **NON_DEFAULT)
    save_processor(proc, tmp_path)
    saved = json.loads((tmp_path / PROCESSOR_CONFIG_NAME).read_text())
    assert saved == {"processor_class": "MoWEProcessor", **NON_DEFAULT}
    loaded = load_processor(MoWEProcessor, tmp_path)
    assert loaded.options == proc.options and loaded.audio_token_id == proc.audio_token_id
    # options + keywords: the keywords win, and are checked like the rest
    both = MoWEProcessor(tok, options=proc.options, seed=1)
    assert both.options == dataclasses.replace(proc.options, seed=1)


def _run_file(tmp_path: Path, processor: dict) -> Path:
    run = {
        "model": {},
        "tokenizer": {"train_bpe": {"vocab_size": 300}},
        "data": {"train": "train.jsonl"},
        "train": {"output_dir": "out"},
        "stages": [{"name": "s", "train": ["lora"], "steps": 1, "lr": 1e-3}],
        "processor": processor,
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run))
    return path


@pytest.mark.parametrize("name, value", BAD, ids=[f"{n}={v!r}" for n, v in BAD])
def test_a_bad_value_names_its_option_on_every_path(tok, tmp_path: Path, name, value):
    with pytest.raises(ConfigError) as by_keyword:
        MoWEProcessor(tok, **{name: value})
    message = str(by_keyword.value)
    assert message.startswith(f"processor.{name}"), message
    with pytest.raises(ConfigError) as by_options:
        ProcessorOptions(**{name: value})
    assert str(by_options.value) == message
    MoWEProcessor(tok).save_pretrained(tmp_path)
    cfg = tmp_path / PROCESSOR_CONFIG_NAME
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), name: value}))
    with pytest.raises(ConfigError) as by_file:
        MoWEProcessor.from_pretrained(tmp_path)
    assert str(by_file.value) == f"{cfg}: {message}"
    run = _run_file(tmp_path, {name: value})
    with pytest.raises(ConfigError) as by_run_file:
        load_run_file(run)
    assert str(by_run_file.value) == f"{run}: {message}"


def test_an_unknown_option_is_named(tok, tmp_path: Path):
    with pytest.raises(ConfigError, match=r"processor\.sample_rate: unknown option 'sample_rate'"):
        MoWEProcessor(tok, sample_rate=16000)
    with pytest.raises(ConfigError, match=r"processor\.options: expected ProcessorOptions"):
        MoWEProcessor(tok, options={"seed": 1})


def test_the_readme_documents_every_option():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert [n for n in FIELDS if f"`{n}`" not in readme] == []

"""The one strict config loader (mowe.config): the three mistakes each give one ConfigError naming the key
path, for every kind of config that goes through it."""

import json

import pytest

from mowe.config import MoWEConfig, apply_overrides, from_dict, parse_value, read_config_file
from mowe.curriculum import Stage
from mowe.data.processor_options import ProcessorOptions
from mowe.encoders.beats import BEATsConfig
from mowe.errors import ConfigError
from mowe.training.config import TrainConfig
from mowe.training.run_file import load_run_file

CASES = [  # (build, data, key path, kind of mistake)
    (
        lambda d: from_dict(MoWEConfig, d, where="model"),
        {"router": {"top_kk": 2}},
        r"model\.router\.top_kk",
        "unknown",
    ),
    (
        lambda d: from_dict(MoWEConfig, d, where="model"),
        {"router": {"top_k": "2"}},
        r"model\.router\.top_k",
        "type",
    ),
    (
        lambda d: from_dict(MoWEConfig, d, where="model"),
        {"router": {"layout": "dense"}},
        r"model\.router\.layout",
        "choice",
    ),
    (
        lambda d: from_dict(MoWEConfig, d, where="model"),
        {"weak_encoders": {"a": {"freeze": "no"}}},
        r"model\.weak_encoders\.a\.freeze",
        "type",
    ),
    (
        lambda d: from_dict(MoWEConfig, d, where="model"),
        {"llm": {"dtype": "fp8"}},
        r"model\.llm\.dtype",
        "choice",
    ),
    (TrainConfig.from_dict, {"output_dir": "x", "sed": 1}, r"train\.sed", "unknown"),
    (TrainConfig.from_dict, {"output_dir": "x", "seed": "1"}, r"train\.seed", "type"),
    (
        TrainConfig.from_dict,
        {"output_dir": "x", "mixed_precision": "fp16"},
        r"train\.mixed_precision",
        "choice",
    ),
    (
        TrainConfig.from_dict,
        {"output_dir": "x", "pack_sequences": "always"},
        r"train\.pack_sequences",
        "choice",
    ),
    (
        Stage.from_dict,
        {"name": "a", "train": ["lora"], "steps": 1, "lr": 1e-3, "epochs": 1},
        r"stage\.epochs",
        "unknown",
    ),
    (Stage.from_dict, {"name": "a", "train": ["lora"], "steps": 1.5, "lr": 1e-3}, r"stage\.steps", "type"),
    (BEATsConfig.from_dict, {"encoder_width": 3}, r"BEATs config\.encoder_width", "unknown"),
    (BEATsConfig.from_dict, {"encoder_layers": "12"}, r"BEATs config\.encoder_layers", "type"),
    (BEATsConfig.from_dict, {"activation_fn": "glu"}, r"BEATs config\.activation_fn", "choice"),
    (
        lambda d: from_dict(ProcessorOptions, d, where="processor"),
        {"length_policy": "pad"},
        r"processor\.length_policy",
        "choice",
    ),
]
MESSAGES = {
    "unknown": "unknown key",
    "type": "expected (int|float|str|true or false|a list)",
    "choice": "expected (true/false or )?one of",
}


@pytest.mark.parametrize("build, data, path, kind", CASES)
def test_each_mistake_is_one_error_naming_the_key_path(build, data, path, kind):
    with pytest.raises(ConfigError, match=rf"{path}: {MESSAGES[kind]}"):
        build(data)


def test_direct_construction_is_checked_like_a_file():
    with pytest.raises(ConfigError, match=r"train\.mixed_precision: expected one of \['no', 'bf16'\]"):
        TrainConfig(output_dir="x", mixed_precision="fp16")
    cfg = TrainConfig(output_dir="x", weight_decay=0, adam_betas=[0.9, 0.95])  # normalised, and frozen
    assert cfg.weight_decay == 0.0 and isinstance(cfg.weight_decay, float) and cfg.adam_betas == (0.9, 0.95)
    with pytest.raises(AttributeError):
        cfg.seed = 3  # type: ignore[misc]


def test_missing_key_and_round_trip():
    with pytest.raises(ConfigError, match=r"stage\.lr: missing key"):
        Stage.from_dict({"name": "a", "train": ["lora"], "steps": 1})
    cfg = from_dict(MoWEConfig, {"router": {"top_k": 2, "layout": "topk"}, "llm": {"dtype": "bfloat16"}})
    assert MoWEConfig.from_json(cfg.to_json()) == cfg


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-4\nsteps: 3\n")
    assert read_config_file(path) == {"lr": 1e-4, "steps": 3}  # 1e-4 without a dot is a float here
    tree = apply_overrides({"train": {"seed": 0}}, ["train.seed=5", "train.betas=[0.9, 0.95]"])
    assert tree == {"train": {"seed": 5, "betas": [0.9, 0.95]}}
    assert parse_value("null") is None
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["nonsense"])
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="bad.json"):
        read_config_file(bad)


def test_run_file_errors_name_the_file_and_key_path(tmp_path):
    run = {
        "model": {},
        "tokenizer": {"train_bpe": {"vocab_size": 300}},
        "data": {"train": "t.jsonl"},
        "train": {"output_dir": "o"},
        "stages": {"preset": "mowe_paper", "steps": 2},
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    assert load_run_file(path)["stages"]["preset"] == "mowe_paper"  # both preset names are accepted
    for override, key, message in [
        ("data.on_bad_example=drop", r"data\.on_bad_example", "one of"),
        ("data.sampler=x", r"data\.sampler", "unknown key"),
        ("tokenizer.train_bpe.vocab_size=big", r"tokenizer\.train_bpe\.vocab_size", "expected"),
        ("stages.preset=llava", r"stages\.preset", "one of"),
    ]:
        with pytest.raises(ConfigError, match=rf"run\.json: {key}: .*{message}|run\.json: {key}: {message}"):
            load_run_file(path, [override])

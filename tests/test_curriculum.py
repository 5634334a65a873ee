"""One validation of each stage value: a run file's stage, a list of stage dicts and a ``Stage(...)`` built in
Python are refused by the same rule (``mowe.validation.RULES`` + ``Stage.__post_init__``) with the same
message; values that a stage shares with other places (lora_scale) use the same rule there too."""

from __future__ import annotations

import argparse
import inspect
import json
import math
import re
from pathlib import Path

import pytest

import mowe.curriculum
from mowe.cli_errors import check_flags
from mowe.config import InferenceConfig, from_dict
from mowe.curriculum import Stage, stages_from_list
from mowe.errors import ConfigError
from mowe.training.config import TrainConfig
from mowe.training.run_file import load_run_file
from mowe.validation import RULES

GOOD = {"name": "warm", "train": ["connector", "lora"], "steps": 5, "lr": 1e-3}
BAD = [
    ("lr", 0),
    ("lr", -1e-4),
    ("lr", 20.0),
    ("lr", 1e38),
    ("lr", math.inf),
    ("lr", math.nan),
    ("lr", "1e-3"),
    ("lr", True),
    ("steps", 0),
    ("steps", 1.5),
    ("warmup_steps", -1),
    ("warmup_steps", 6),
    ("lora_scale", -0.5),
    ("tasks", {"asr": -1.0}),
    ("tasks", {"asr": 0.0}),
    ("tasks", {}),
    ("train", ["encoder"]),
    ("train", []),
]
# What each bad value's message says after "stage 'warm'." / "stage 'warm': ".
EXPECT = {
    "lr": r"lr: (must be a finite number in \(0, 10\]|expected float)",
    "steps": r"steps: (must be an integer >= 1|expected int)",
    "warmup_steps": r"warmup_steps: must be",
    "lora_scale": r"lora_scale: must be a finite number in \[0, inf\)",
    "tasks": r"tasks(\.asr)?: ",
    "train": r"(unknown part|'train' names no part)",
}


def _message(build) -> str:
    with pytest.raises(ConfigError) as e:
        build()
    return str(e.value)


def _run_file(tmp_path: Path, stage: dict) -> Path:
    run = {
        "model": {},
        "tokenizer": {"train_bpe": {"vocab_size": 300}},
        "data": {"train": "train.jsonl"},
        "train": {"output_dir": "out"},
        "stages": [stage],
    }
    # JSON keeps "1e-3" a string (mowe's YAML reads an unquoted 1e-3 as a number)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    return path


@pytest.mark.parametrize("key, value", BAD, ids=[f"{k}={v!r}" for k, v in BAD])
def test_python_stage_and_run_file_stage_get_the_same_message(tmp_path: Path, key, value):
    stage = {**GOOD, key: value}
    in_python = _message(lambda: Stage(**stage))
    assert in_python.startswith("stage 'warm'")  # the stage is named ...
    assert re.search(EXPECT[key], in_python), in_python  # ... and so is the key and its rule
    assert _message(lambda: stages_from_list([stage])) == in_python
    assert _message(lambda: Stage.from_dict(stage, where="stage 'warm'")) == in_python
    run = _run_file(tmp_path, stage)
    assert _message(lambda: load_run_file(run)) == f"{run}: {in_python}"  # refused at load, naming the file


def test_lr_has_one_rule():
    """The (0, 10] range is written once, in mowe.validation; Stage holds no range of its own."""
    rules = {r.field: r for r in RULES["mowe.curriculum.Stage"]}
    assert rules["lr"].allowed == "a finite number in (0, 10]"
    assert "self.lr" not in inspect.getsource(mowe.curriculum.Stage)
    assert Stage(**{**GOOD, "lr": 10}).lr == 10.0 and isinstance(Stage(**{**GOOD, "lr": 1}).lr, float)


def test_a_stage_without_a_name_is_named_by_its_index():
    with pytest.raises(ConfigError, match=r"stages\[0\]\.name: missing key"):
        stages_from_list([{k: v for k, v in GOOD.items() if k != "name"}])


def test_lora_scale_and_seed_have_one_rule_wherever_they_are_set():
    """A stage's lora_scale, a saved model's inference.lora_scale and ``--lora-scale`` share mowe.validation's
    rule; so do train.seed and ``--seed``."""
    rule = "must be a finite number in [0, inf)"
    messages = [
        _message(lambda: Stage(**{**GOOD, "lora_scale": -1.0})),
        _message(lambda: from_dict(InferenceConfig, {"lora_scale": -1.0}, where="model.inference")),
        _message(lambda: check_flags(argparse.Namespace(lora_scale=-1.0))),
    ]
    where = ["stage 'warm'.lora_scale", "model.inference.lora_scale", "--lora-scale"]
    assert [m.split(": ", 1)[0] for m in messages] == where
    assert all(m.split(": ", 1)[1].startswith(rule) for m in messages), messages
    seed = 2**40
    by_config = _message(lambda: TrainConfig(output_dir="x", seed=seed))
    by_flag = _message(lambda: check_flags(argparse.Namespace(seed=seed)))
    expected = f"must be an integer in [0, {2**32 - 1}], got {seed}"
    assert by_config.split(": ", 1)[1] == by_flag.split(": ", 1)[1] == expected

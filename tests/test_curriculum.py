"""One validation of each stage value: a run file's stage, a list of stage dicts and a ``Stage(...)`` built in Python
are refused by the same rule (``mowe.validation.RULES`` + ``Stage.__post_init__``) with the same message."""

from __future__ import annotations

import inspect
import json
import math
import re
from pathlib import Path

import pytest

import mowe.curriculum
from mowe.curriculum import Stage, stages_from_list
from mowe.errors import ConfigError
from mowe.training.run_file import load_run_file
from mowe.validation import RULES

GOOD = {"name": "warm", "train": ["connector", "lora"], "steps": 5, "lr": 1e-3}
BAD = [("lr", 0), ("lr", -1e-4), ("lr", 20.0), ("lr", 1e38), ("lr", math.inf), ("lr", math.nan), ("lr", "1e-3"),
       ("lr", True), ("steps", 0), ("steps", 1.5), ("warmup_steps", -1), ("warmup_steps", 6),
       ("lora_scale", -0.5), ("tasks", {"asr": -1.0}), ("tasks", {"asr": 0.0}), ("tasks", {}),
       ("train", ["encoder"]), ("train", [])]
# What each bad value's message says after "stage 'warm'." / "stage 'warm': ".
EXPECT = {"lr": r"lr: (must be a finite number in \(0, 10\]|expected float)",
          "steps": r"steps: (must be an integer >= 1|expected int)", "warmup_steps": r"warmup_steps: must be", "lora_scale": r"lora_scale: must be a finite number in \[0, inf\)",
          "tasks": r"tasks(\.asr)?: ", "train": r"(unknown part|'train' names no part)"}


def _message(build) -> str:
    with pytest.raises(ConfigError) as e:
        build()
    return str(e.value)


def _run_file(tmp_path: Path, stage: dict) -> Path:
    run = {"model": {}, "tokenizer": {"train_bpe": {"vocab_size": 300}}, "data": {"train": "train.jsonl"},
           "train": {"output_dir": "out"}, "stages": [stage]}
    path = tmp_path / "run.json"  # JSON keeps "1e-3" a string (mowe's YAML reads an unquoted 1e-3 as a number)
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

"""The run file of ``mowe train`` (mowe.training.run_file): overrides, strict sections, errors naming the
key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mowe.errors import ConfigError
from mowe.training.run_file import load_run_file

RUN_TINY = str(Path(__file__).resolve().parents[2] / "examples" / "run_tiny.yaml")


def test_run_file_details(tmp_path):
    stage = "stages=[{name: a, train: [lora], steps: 1, lr: 2e-4}]"
    run = load_run_file(RUN_TINY, ["train.batch_size=3", stage])
    assert run["train"]["batch_size"] == 3 and run["stages"][0]["lr"] == 2e-4  # 2e-4 is a float, not a string
    with pytest.raises(ConfigError, match="'sampler'"):
        load_run_file(RUN_TINY, ["data.sampler=1"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_run_file(RUN_TINY, ["nonsense"])

"""RunLog mirrors log.jsonl to accelerate trackers chosen by TrainConfig.log_with."""

from __future__ import annotations

import json

import pytest
from accelerate.tracking import GeneralTracker

from mowe.errors import ConfigError
from mowe.training.config import TrainConfig
from mowe.training.logging import RunLog, make_trackers


class ListTracker(GeneralTracker):
    """An accelerate tracker that keeps what it is given."""

    name = "list"
    requires_logging_directory = False

    def __init__(self):
        super().__init__()
        self.events = []

    def start(self):
        self.events.append("start")

    @property
    def tracker(self):
        return self

    def log(self, values, step=None, **kwargs):
        self.events.append((step, dict(values)))

    def finish(self):
        self.events.append("finish")


def test_records_go_to_log_jsonl_and_every_tracker(tmp_path):
    tracker = ListTracker()
    log = RunLog(str(tmp_path), enabled=True, log_with=[tracker])
    log.open_trackers()
    log(
        {
            "step": 3,
            "stage": "s1",
            "loss": 1.5,
            "aux_loss": None,
            "lr": 1e-3,
            "nan": float("nan"),
            "flag": True,
        }
    )
    log({"event": "resume", "checkpoint": "x"})  # no step: log.jsonl only
    log.close()
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [x.get("step") for x in lines] == [3, None]
    assert tracker.events == ["start", (3, {"loss": 1.5, "lr": 1e-3}), "finish"]
    off = RunLog(str(tmp_path / "other"), enabled=False, log_with=[ListTracker()])
    off.open_trackers()
    off({"step": 1, "loss": 1.0})
    assert off._trackers is None and not (tmp_path / "other").exists()


def test_log_with_names_are_checked_and_missing_packages_skipped(tmp_path):
    from accelerate.utils import is_wandb_available

    assert TrainConfig(output_dir=str(tmp_path), log_with=["wandb"]).log_with == ("wandb",)
    with pytest.raises(ConfigError, match="log_with"):
        TrainConfig(output_dir=str(tmp_path), log_with="tensorboard")
    with pytest.raises(ConfigError, match="unknown tracker 'neptune'"):
        make_trackers(["neptune"], output_dir=str(tmp_path))
    if not is_wandb_available():
        with pytest.warns(UserWarning, match="'wandb' is not installed"):
            assert make_trackers(["wandb"], output_dir=str(tmp_path)) == []

"""Per-encoder freezing: a stage naming the group ``weak_encoders`` trains only the members not built frozen;
a stage naming one member (``weak_encoders.<name>``) trains it even when it was built frozen.

"Trains" is checked on tensor changes after two optimizer steps through the real Trainer.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from _trainer_helpers import SyntheticDataset, changed, collate, snapshot, tiny_config

from mowe import MoWEAudioLLM
from mowe.curriculum import Stage, stages_from_list
from mowe.errors import ConfigError
from mowe.training.stages import apply_stage, trainable_summary
from mowe.training.trainer import TrainConfig, Trainer


def _model(freeze: dict[str, bool]) -> MoWEAudioLLM:
    """Two weak encoders, top_k=2 (both run on every clip, so both get gradients when trainable)."""
    cfg = tiny_config(weak=2, top_k=2, lora_dropout=0.0)
    weak = {n: dataclasses.replace(c, freeze=freeze[n]) for n, c in cfg.weak_encoders.items()}
    torch.manual_seed(0)
    return MoWEAudioLLM.from_config(cfg.replace(weak_encoders=weak))


def _train(model, parts, tmp_path) -> tuple[set[str], list[dict]]:
    before = snapshot(model)
    cfg = TrainConfig(output_dir=str(tmp_path), batch_size=2, progress=False, save_final=False)
    Trainer(
        model, SyntheticDataset(8), config=cfg, stages=[Stage("s", tuple(parts), 2, 1e-2)], collate_fn=collate
    ).train()
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    return changed(before, model), log


def _of(names, member: str) -> set[str]:
    return {n for n in names if n.startswith(f"weak_encoders.encoders.{member}.")}


def test_group_trains_only_unfrozen_members_and_a_name_trains_a_frozen_one(tmp_path):
    model = _model({"w0": True, "w1": False})
    params = {n for n, _ in model.named_parameters()}
    moved, log = _train(model, ["weak_encoders"], tmp_path / "group")
    assert _of(params, "w0") and not _of(moved, "w0")  # frozen by its config: every tensor unchanged
    assert _of(moved, "w1") == _of(params, "w1")  # the unfrozen member: every tensor changed
    assert moved == _of(params, "w1")  # and nothing else trained
    (start,) = [r for r in log if r.get("event") == "stage_start"]
    n_w1 = sum(p.numel() for n, p in model.named_parameters() if n.startswith("weak_encoders.encoders.w1."))
    assert start["trains"] == {"weak_encoders.w1": n_w1} and start["trainable_parameters"] == n_w1

    # Naming the frozen member itself trains it (and only it), on the same model, after the first stage.
    moved, _ = _train(model, ["weak_encoders.w0"], tmp_path / "named")
    assert moved == _of(params, "w0")


def test_a_module_frozen_by_hand_stays_frozen_under_the_group(tmp_path):
    model = _model({"w0": False, "w1": False})
    model.weak_encoders.encoders["w0"].requires_grad_(False)  # frozen through the API, not the config
    moved, _ = _train(model, ["weak_encoders", "connector"], tmp_path)
    params = {n for n, _ in model.named_parameters()}
    assert not _of(moved, "w0") and _of(moved, "w1") == _of(params, "w1")
    assert {n for n in moved if n.startswith("connector.")}


def test_member_names_are_checked(tmp_path):
    model = _model({"w0": True, "w1": True})
    with pytest.raises(ConfigError, match="every weak encoder is frozen"):
        apply_stage(model, Stage("s", ("weak_encoders",), 1, 1e-3))
    with pytest.raises(ConfigError, match=r"no weak encoder 'w9' \(weak encoders: \['w0', 'w1'\]\)"):
        apply_stage(model, Stage("s", ("weak_encoders.w9",), 1, 1e-3))
    with pytest.raises(ConfigError, match=r"unknown part 'weak_encoders\.'"):
        stages_from_list([{"name": "s", "train": ["weak_encoders."], "steps": 1, "lr": 1e-3}])
    apply_stage(model, Stage("s", ("weak_encoders.w1", "routers"), 1, 1e-3))
    summary = trainable_summary(model)
    assert set(summary) == {"weak_encoders.w1", "routers"}

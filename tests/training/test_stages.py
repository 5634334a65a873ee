"""Stages: validation, (de)serialisation, and that each stage trains exactly the parts it names.

"Trains" is checked on parameter *changes* after two optimizer steps through the real Trainer, not only on
``requires_grad``.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml
from _trainer_helpers import SyntheticDataset, changed, collate, snapshot, tiny_model

from mowe.config import parse_value
from mowe.curriculum import PARTS, Stage, mowe_default_stages, stages_from_list, stages_to_list
from mowe.errors import ConfigError
from mowe.hf.adapter import set_lora_scale
from mowe.ltu_as import ltu_as_stages
from mowe.salmonn import salmonn_stages
from mowe.training.stages import apply_stage, parameter_groups
from mowe.training.trainer import TrainConfig, Trainer


@pytest.fixture(scope="module")
def pool_model():
    # Two weak encoders with top_k=2: both run on every clip, so routers and weak encoders all get gradients.
    return tiny_model(weak=2, top_k=2, lora_dropout=0.0)


def _expected(model, parts) -> set[str]:
    groups = parameter_groups(model)
    member = [p.split(".", 1)[1] for p in parts if p.startswith("weak_encoders.")]  # one named weak encoder
    return {n for p in parts if p in groups for n, _ in groups[p]} | {
        n for m in member for n, _ in groups["weak_encoders"] if n.startswith(f"weak_encoders.encoders.{m}.")
    }


def _train_two_steps(model, stage: Stage, tmp_path, dataset=None, collate_fn=collate) -> set[str]:
    stage = dataclasses.replace(stage, steps=2, warmup_steps=0, lr=1e-2)
    before = snapshot(model)
    cfg = TrainConfig(output_dir=str(tmp_path / stage.name), batch_size=2, progress=False, save_final=False)
    Trainer(model, dataset or SyntheticDataset(16), config=cfg, stages=[stage], collate_fn=collate_fn).train()
    return changed(before, model)


def test_stage_validation():
    with pytest.raises(ConfigError, match="'encoder'"):
        Stage("s", ("connector", "encoder"), 10, 1e-4)
    with pytest.raises(ConfigError, match="steps"):
        Stage("s", ("connector",), 0, 1e-4)
    with pytest.raises(ConfigError, match="warmup_steps"):
        Stage("s", ("connector",), 5, 1e-4, warmup_steps=6)
    with pytest.raises(ConfigError, match="every task weight is 0"):
        Stage("s", ("connector",), 5, 1e-4, tasks={"asr": 0.0})
    with pytest.raises(ConfigError, match=r"stage\.train: expected a list"):
        Stage.from_dict({"name": "s", "train": "connector", "steps": 1, "lr": 1e-3})


def test_stage_serialisation_round_trip_and_unknown_key():
    stages = (
        salmonn_stages((3, 4, 5), pretrain_tasks={"asr": 1.0})
        + ltu_as_stages(2, closed_ended_tasks=["x"])[1:]
    )
    stages = [dataclasses.replace(s, name=f"{s.name}{i}") for i, s in enumerate(stages)]
    as_json = json.loads(json.dumps(stages_to_list(stages)))
    assert stages_from_list(as_json) == stages
    as_yaml = yaml.safe_load(yaml.safe_dump(stages_to_list(stages)))
    assert stages_from_list(as_yaml) == stages
    bad = stages_to_list(stages)
    bad[1]["learning_rate"] = 1e-3
    with pytest.raises(ConfigError, match=r"stage 'instruction1'\.learning_rate: unknown key"):
        stages_from_list(bad)
    # The loader's YAML reads 1e-4 (no dot) as a number; a string in a dict is a type error naming the key.
    assert Stage.from_dict(parse_value("{name: a, train: [lora], steps: 1, lr: 1e-4}")).lr == 1e-4
    with pytest.raises(ConfigError, match=r"stage\.lr: expected float"):
        Stage.from_dict({"name": "a", "train": ["lora"], "steps": 1, "lr": "1e-4"})
    with pytest.raises(ConfigError, match=r"stage\.steps: missing key"):
        Stage.from_dict({"name": "a", "train": ["lora"], "lr": 1e-4})


def test_mowe_stages_shape():  # the seed systems' curricula: tests/salmonn, tests/ltu_as
    (d,) = mowe_default_stages(100)
    assert set(d.train) == {"connector", "routers", "lora"} and d.tasks is None


@pytest.mark.parametrize("part", [*PARTS, "weak_encoders.w1"])
def test_each_part_alone_changes_exactly_its_parameters(pool_model, part, tmp_path):
    stage = Stage(f"only_{part}", (part,), 2, 1e-2)
    if part == "weak_encoders":  # both members are built frozen (freeze=True): the group trains neither
        with pytest.raises(ConfigError, match="every weak encoder is frozen.*'weak_encoders.w0'"):
            apply_stage(pool_model, stage)
        return
    trainable = set(apply_stage(pool_model, stage))
    expected = _expected(pool_model, [part])
    assert trainable == expected and expected
    assert _train_two_steps(pool_model, stage, tmp_path) == expected


@pytest.mark.parametrize("preset", ["mowe", "salmonn", "ltu_as"])
def test_presets_change_exactly_the_named_parts(pool_model, preset, tmp_path):
    stages = {
        "mowe": lambda: mowe_default_stages(2),
        "salmonn": lambda: salmonn_stages(2),
        "ltu_as": lambda: ltu_as_stages(2),
    }[preset]()
    for stage in stages:
        seen: list[str] = []

        def recording_collate(examples, seen=seen):
            batch = collate(examples)
            seen.extend(batch["task"])
            return batch

        got = _train_two_steps(pool_model, stage, tmp_path, collate_fn=recording_collate)
        assert got == _expected(pool_model, stage.train), stage.name
        if stage.tasks is not None:
            assert set(seen) <= set(stage.tasks), stage.name


def test_base_only_model_skips_router_and_pool_parts(tmp_path):
    model = tiny_model(weak=0, lora_dropout=0.0)
    (stage,) = mowe_default_stages(2)
    names = apply_stage(model, stage)
    assert names and all(n.startswith(("connector.", "llm.")) for n in names)
    with pytest.raises(ConfigError, match="'lora'"):
        apply_stage(tiny_model(weak=0, llm_train="full"), Stage("x", ("lora",), 1, 1e-3))


def test_lora_scale_is_applied_during_the_stage_and_restored(tmp_path):
    model = tiny_model(weak=0, lora_dropout=0.0)
    lora = next(m for _, m in model.named_modules() if isinstance(getattr(m, "scaling", None), dict))
    base = lora.scaling["default"]
    seen = []

    def recording_collate(examples):
        seen.append(lora.scaling["default"])
        return collate(examples)

    stage = Stage("act", ("connector", "lora"), 2, 1e-3, tasks={"co_reasoning": 1.0}, lora_scale=0.25)
    cfg = TrainConfig(output_dir=str(tmp_path), batch_size=2, progress=False, save_final=False)
    Trainer(model, SyntheticDataset(16), config=cfg, stages=[stage], collate_fn=recording_collate).train()
    assert seen and all(s == pytest.approx(base * 0.25) for s in seen)
    assert lora.scaling["default"] == pytest.approx(base)
    assert all(v == pytest.approx(base * 0.5) for v in set_lora_scale(model, 0.5).values())


def test_stage_naming_a_task_absent_from_the_data_is_an_error(tmp_path):
    model = tiny_model(weak=0)
    stage = Stage("s", ("connector",), 1, 1e-3, tasks={"asr": 1.0, "astr": 1.0})
    cfg = TrainConfig(output_dir=str(tmp_path), batch_size=2, progress=False)
    with pytest.raises(ConfigError, match="'astr'"):
        Trainer(model, SyntheticDataset(16), config=cfg, stages=[stage], collate_fn=collate).train()


def test_parameter_groups_cover_the_model_disjointly(pool_model):
    groups = parameter_groups(pool_model)
    names = [n for p in PARTS for n, _ in groups[p]]
    assert len(names) == len(set(names))
    assert set(names) == {n for n, _ in pool_model.named_parameters()}
    assert torch.is_tensor(next(iter(groups["lora"]))[1])

"""Trainer: learning, non-finite losses, atomic checkpoints, exact resume (in-process and after SIGKILL)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from _trainer_helpers import TRAIN_SCRIPT, SyntheticDataset, collate, read_weights, tiny_model

import mowe.training.checkpoint as checkpoint_mod
from mowe.config import parse_value
from mowe.curriculum import Stage
from mowe.errors import CheckpointError, ConfigError, NonFiniteLossError
from mowe.training.trainer import StageSampler, TrainConfig, Trainer, find_checkpoint, load_trainer_state

TESTS_DIR = os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))
)  # tests/, where _trainer_helpers.py is

TWO_STAGES = [
    Stage("a", ("connector",), 3, 2e-3),
    Stage(
        "b",
        ("connector", "routers", "lora"),
        5,
        2e-3,
        warmup_steps=1,
        tasks={"asr": 2.0, "gender": 1.0, "sound_event": 1.0},
    ),
]


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = {"output_dir": str(tmp_path), "batch_size": 2, "progress": False, "log_every": 1}
    base.update(kw)
    return TrainConfig(**base)


def _log(path) -> list[dict]:
    with open(os.path.join(path, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------------ config
def test_train_config_is_strict():
    with pytest.raises(ConfigError, match="'batchsize'"):
        TrainConfig.from_dict({"output_dir": "x", "batchsize": 3})
    with pytest.raises(ConfigError, match="mixed_precision"):
        TrainConfig(output_dir="x", mixed_precision="fp8")
    with pytest.raises(ConfigError, match="on_nonfinite_loss"):
        TrainConfig(output_dir="x", on_nonfinite_loss="ignore")
    # YAML text goes through the loader's resolver: 1e-2 (no dot) is a float, as in YAML 1.2 and JSON.
    cfg = TrainConfig.from_dict(parse_value("{output_dir: x, weight_decay: 1e-2, adam_betas: [0.9, 0.95]}"))
    with pytest.raises(ConfigError, match=r"train\.weight_decay: expected float"):
        TrainConfig.from_dict({"output_dir": "x", "weight_decay": "1e-2"})
    assert cfg.weight_decay == 0.01 and cfg.adam_betas == (0.9, 0.95)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.group_by_length is True and cfg.length_group_mult == 50
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match=r"train\.length_group_mult"):
            TrainConfig(output_dir="x", length_group_mult=bad)
    with pytest.raises(ConfigError, match=r"train\.length_group_mult"):
        TrainConfig.from_dict({"output_dir": "x", "length_group_mult": 0})
    with pytest.raises(ConfigError, match=r"train\.group_by_length"):
        TrainConfig.from_dict({"output_dir": "x", "group_by_length": "yes"})
    off = TrainConfig.from_dict({"output_dir": "x", "group_by_length": False, "length_group_mult": 4})
    assert (off.group_by_length, off.length_group_mult) == (False, 4)


# ------------------------------------------------------------------------------------------------ sampling
def test_global_batches_do_not_depend_on_the_process_count():
    kw = {"num_examples": 24, "task_list": None, "tasks": None, "seed": 3, "stage_index": 1}
    one = StageSampler(batch_size=4, **kw)
    two = [StageSampler(batch_size=2, num_processes=2, process_index=r, **kw) for r in range(2)]
    for epoch in range(2):
        full = one.process_batches(epoch)
        halves = [s.process_batches(epoch) for s in two]
        assert full == [a + b for a, b in zip(*halves)]
        assert sorted(i for batch in full for i in batch) == list(range(24))
    assert one.process_batches(1) != one.process_batches(0)
    assert one.process_batches(0, start=2) == one.process_batches(0)[2:]
    assert one.position(13) == (2, 1)


def test_weighted_sampling_follows_task_weights():
    tasks = ["asr"] * 10 + ["gender"] * 30 + ["chord"] * 20
    s = StageSampler(
        num_examples=60,
        task_list=tasks,
        tasks={"asr": 3.0, "gender": 1.0},
        seed=0,
        stage_index=0,
        batch_size=4,
    )
    drawn = torch.cat([s.epoch_order(e) for e in range(50)]).tolist()
    share = sum(tasks[i] == "asr" for i in drawn) / len(drawn)
    assert all(tasks[i] in ("asr", "gender") for i in drawn)
    assert 0.7 < share < 0.8  # 3:1 weights despite 1:3 example counts


# ------------------------------------------------------------------------------------------------ length
# grouping
def _random_lengths(n: int, seed: int = 0) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    return (1 + 29 * torch.rand(n, generator=g, dtype=torch.float64)).tolist()  # uniform 1-30 s


def _global_batches(sampler: StageSampler, epoch: int) -> list[list[int]]:
    order = sampler.epoch_order(epoch).tolist()
    g = sampler.global_batch
    return [order[b * g : (b + 1) * g] for b in range(sampler.batches_per_epoch)]


def _padding(batches: list[list[int]], lengths: list[float]) -> float:
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


def _max_over_mean(batches: list[list[int]], lengths: list[float]) -> float:
    """Mean over batches of (longest clip / mean clip) - 1: 0 when a batch needs no padding."""
    r = [max(lengths[i] for i in b) / (sum(lengths[i] for i in b) / len(b)) - 1 for b in batches]
    return sum(r) / len(r)


def test_length_grouping_cuts_padding():
    lengths = _random_lengths(400)
    kw = {"num_examples": 400, "task_list": None, "tasks": None, "seed": 0, "stage_index": 0, "batch_size": 8}
    plain = StageSampler(**kw)
    for mult in (50, 5):  # one mega-batch per epoch / several
        grouped = StageSampler(lengths=lengths, group_mult=mult, **kw)
        for epoch in range(2):
            a, b = _global_batches(plain, epoch), _global_batches(grouped, epoch)
            assert _padding(b, lengths) * 3 < _padding(a, lengths), mult  # ~40x less with 50, ~4.5x with 5
            assert _max_over_mean(b, lengths) * 3 < _max_over_mean(a, lengths), mult


def test_length_grouped_order_is_a_seeded_subset_of_the_plain_order():
    n = 403  # 50 global batches of 8, 3 examples left over
    lengths = _random_lengths(n, seed=1)
    kw = {"num_examples": n, "task_list": None, "tasks": None, "seed": 5, "stage_index": 2, "batch_size": 8}
    plain = StageSampler(**kw)
    grouped = StageSampler(lengths=lengths, group_mult=5, **kw)
    assert grouped.batches_per_epoch == plain.batches_per_epoch == 50
    orders = []
    for epoch in range(3):
        order = grouped.epoch_order(epoch).tolist()
        assert len(order) == len(set(order)) == 400 and all(0 <= i < n for i in order)
        # The same examples as the plain order's batches (the same 3 left out), only regrouped.
        assert sorted(order) == sorted(plain.epoch_order(epoch).tolist()[:400])
        assert order == StageSampler(lengths=lengths, group_mult=5, **kw).epoch_order(epoch).tolist()
        batches = _global_batches(grouped, epoch)
        for b in batches:  # each global batch longest first: process slices hold neighbouring lengths
            assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)
        maxima = [lengths[b[0]] for b in batches]
        assert maxima != sorted(
            maxima, reverse=True
        )  # batches shuffled: no long-to-short sweep over the epoch
        orders.append(order)
    assert orders[0] != orders[1] != orders[2]
    other_seed = StageSampler(lengths=lengths, group_mult=5, **dict(kw, seed=6))
    assert other_seed.epoch_order(0).tolist() != orders[0]


def test_length_grouped_batch_with_the_longest_clip_comes_first():
    lengths = _random_lengths(96, seed=2)
    s = StageSampler(
        num_examples=96,
        task_list=None,
        tasks=None,
        seed=0,
        stage_index=0,
        batch_size=4,
        lengths=lengths,
        group_mult=3,
    )
    for epoch in range(5):
        batches = _global_batches(s, epoch)
        longest = max(lengths[i] for b in batches for i in b)
        assert lengths[batches[0][0]] == longest


def test_length_grouped_global_batches_do_not_depend_on_the_process_count():
    lengths = _random_lengths(26, seed=3)
    kw = {
        "num_examples": 26,
        "task_list": None,
        "tasks": None,
        "seed": 3,
        "stage_index": 1,
        "lengths": lengths,
        "group_mult": 2,
    }
    one = StageSampler(batch_size=4, **kw)
    two = [StageSampler(batch_size=2, num_processes=2, process_index=r, **kw) for r in range(2)]
    for epoch in range(3):
        full = one.process_batches(epoch)
        halves = [s.process_batches(epoch) for s in two]
        assert len(full) == 6 and full == [a + b for a, b in zip(*halves)]
        for a, b in zip(*halves):  # rank 0 gets the longer half of each global batch
            assert min(lengths[i] for i in a) >= max(lengths[i] for i in b)
        assert full != StageSampler(batch_size=4, **dict(kw, lengths=None)).process_batches(epoch)
    assert one.process_batches(1, start=4) == one.process_batches(1)[4:]


def test_length_grouped_weighted_sampling_keeps_the_draws_and_the_task_weights():
    tasks = ["asr"] * 10 + ["gender"] * 30 + ["chord"] * 20
    lengths = _random_lengths(60, seed=4)
    kw = {
        "num_examples": 60,
        "task_list": tasks,
        "tasks": {"asr": 3.0, "gender": 1.0},
        "seed": 0,
        "stage_index": 0,
        "batch_size": 4,
    }
    plain = StageSampler(**kw)
    s = StageSampler(lengths=lengths, group_mult=2, **kw)
    used = s.batches_per_epoch * s.global_batch
    for e in range(5):  # the same multinomial draws as without lengths, only regrouped
        assert sorted(s.epoch_order(e).tolist()) == sorted(plain.epoch_order(e).tolist()[:used])
    drawn = torch.cat([s.epoch_order(e) for e in range(50)]).tolist()
    share = sum(tasks[i] == "asr" for i in drawn) / len(drawn)
    assert all(tasks[i] in ("asr", "gender") for i in drawn)
    assert 0.7 < share < 0.8  # 3:1 weights despite 1:3 example counts
    batches = _global_batches(s, 0)
    assert lengths[batches[0][0]] == max(lengths[i] for b in batches for i in b)


def test_length_grouping_validates_its_inputs():
    kw = {
        "num_examples": 16,
        "task_list": None,
        "tasks": None,
        "seed": 0,
        "stage_index": 0,
        "batch_size": 2,
        "stage_name": "warmup",
    }
    with pytest.raises(ConfigError, match=r"'warmup'.*15 lengths.*16 examples"):
        StageSampler(lengths=[1.0] * 15, **kw)
    with pytest.raises(ConfigError, match="'warmup'"):
        StageSampler(lengths=[1.0] * 15 + [float("nan")], **kw)
    with pytest.raises(ConfigError, match="'warmup'"):
        StageSampler(lengths=[1.0] * 16, group_mult=0, **kw)
    # Equal lengths: the stable sort keeps the seeded order inside each mega-batch.
    assert StageSampler(lengths=[2.0] * 16, **kw).epoch_order(0).tolist() != list(range(16))


def test_trainer_groups_by_length_when_the_dataset_has_lengths(tmp_path):
    stage = [Stage("s", ("connector",), 2, 1e-3)]
    ds = SyntheticDataset(40, lengths=True)
    trainer = Trainer(
        tiny_model(weak=0), ds, config=_cfg(tmp_path, length_group_mult=2), stages=stage, collate_fn=collate
    )
    expected = StageSampler(
        num_examples=40,
        task_list=None,
        tasks=None,
        seed=0,
        stage_index=0,
        batch_size=2,
        lengths=ds.lengths,
        group_mult=2,
    )
    assert trainer._sampler(0).process_batches(0) == expected.process_batches(0)
    off = Trainer(
        tiny_model(weak=0), ds, config=_cfg(tmp_path, group_by_length=False), stages=stage, collate_fn=collate
    )
    plain = StageSampler(num_examples=40, task_list=None, tasks=None, seed=0, stage_index=0, batch_size=2)
    assert off._sampler(0).process_batches(0) == plain.process_batches(0)


def test_trainer_without_lengths_warns_once_and_keeps_the_plain_order(tmp_path):
    stages = [Stage("a", ("connector",), 2, 1e-3), Stage("b", ("connector",), 2, 1e-3)]
    trainer = Trainer(
        tiny_model(weak=0), SyntheticDataset(16), config=_cfg(tmp_path), stages=stages, collate_fn=collate
    )
    with pytest.warns(UserWarning, match="group_by_length") as record:
        samplers = [trainer._sampler(0), trainer._sampler(1)]
    assert len([w for w in record if "group_by_length" in str(w.message)]) == 1
    plain = StageSampler(num_examples=16, task_list=None, tasks=None, seed=0, stage_index=1, batch_size=2)
    assert samplers[1].process_batches(0) == plain.process_batches(0)


@pytest.mark.parametrize("pack", [True, False, "auto", "groups"])
def test_trainer_runs_the_llm_padding_free_unless_told_not_to(tmp_path, pack):
    model = tiny_model(weak=0)
    rows = []
    layer = next(m for n, m in model.llm.named_modules() if n.endswith("layers.0"))
    layer.register_forward_pre_hook(
        lambda m, args, kw: rows.append((args or (kw["hidden_states"],))[0].shape[0]), with_kwargs=True
    )
    trainer = Trainer(
        model,
        SyntheticDataset(16),
        config=_cfg(tmp_path, pack_sequences=pack, batch_size=4),
        stages=[Stage("s", ("connector",), 2, 1e-3)],
        collate_fn=collate,
    )
    trainer.train()
    # Packed: the 4 samples of a batch run as one row; padded: 4 rows. "auto" on equal-length samples (no
    # padding to save) keeps the padded layout, and their length groups are one group of 4.
    assert rows and set(rows) == ({1} if pack is True else {4})


# ------------------------------------------------------------------------------------------------ learning
def test_loss_goes_down_and_logs_are_complete(tmp_path):
    model = tiny_model(weak=0, lora_dropout=0.0)
    stage = Stage("learn", ("connector", "lora"), 30, 1e-2, warmup_steps=3)
    res = Trainer(
        model,
        SyntheticDataset(32),
        config=_cfg(tmp_path, batch_size=2, log_every=5, save_final=True),
        stages=[stage],
        collate_fn=collate,
    ).train()
    logs = [r for r in _log(tmp_path) if "loss" in r]
    assert [r["step"] for r in logs] == [5, 10, 15, 20, 25, 30]
    for key in (
        "step",
        "stage",
        "loss",
        "lm_loss",
        "aux_loss",
        "lr",
        "samples_per_s",
        "grad_norm",
        "skipped_nonfinite",
    ):
        assert key in logs[0]
    assert logs[-1]["loss"] < logs[0]["loss"] - 0.5, [r["loss"] for r in logs]
    assert res.global_step == 30 and os.path.isfile(os.path.join(res.final_dir, "model.safetensors"))


def test_none_examples_are_dropped_and_skip_report_printed(tmp_path, capsys):
    class WithReport(SyntheticDataset):
        def skip_report(self):
            return "skipped 2 bad examples"

    ds = WithReport(16, none_at=(0, 1, 2, 3))
    Trainer(
        tiny_model(weak=0),
        ds,
        config=_cfg(tmp_path, batch_size=1, save_final=False),
        stages=[Stage("s", ("connector",), 6, 1e-3)],
        collate_fn=collate,
    ).train()
    assert "skipped 2 bad examples" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ NaN / Inf
def _nan_once(model, at_call: int):
    calls = {"n": 0}
    forward = model.forward

    def patched(**kw):
        out = forward(**kw)
        calls["n"] += 1
        if calls["n"] == at_call:
            out.loss = out.loss * float("nan")
        return out

    model.forward = patched
    return calls


def test_nonfinite_loss_skip_counts_and_continues(tmp_path):
    model = tiny_model(weak=0)
    _nan_once(model, at_call=2)
    res = Trainer(
        model,
        SyntheticDataset(16),
        config=_cfg(tmp_path, on_nonfinite_loss="skip", save_final=False),
        stages=[Stage("s", ("connector", "lora"), 4, 1e-3)],
        collate_fn=collate,
    ).train()
    assert res.global_step == 4 and res.skipped_nonfinite == 1
    logs = [r for r in _log(tmp_path) if "loss" in r]
    assert [r["skipped_nonfinite"] for r in logs] == [0, 1, 1, 1]
    assert logs[1]["loss"] is None and logs[1]["grad_norm"] is None
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nonfinite_loss_stop_raises_a_clear_error(tmp_path):
    model = tiny_model(weak=0)
    _nan_once(model, at_call=2)
    trainer = Trainer(
        model,
        SyntheticDataset(16),
        config=_cfg(tmp_path, on_nonfinite_loss="stop"),
        stages=[Stage("s", ("connector",), 4, 1e-3)],
        collate_fn=collate,
    )
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss.*step 2.*'s'.*on_nonfinite_loss"):
        trainer.train()


# ------------------------------------------------------------------------------------------------ checkpoints
def test_checkpoint_contents_load_with_weights_only(tmp_path):
    model = tiny_model(weak=1)
    Trainer(
        model,
        SyntheticDataset(16),
        config=_cfg(tmp_path, save_every=2, keep_last_checkpoints=2),
        stages=TWO_STAGES,
        collate_fn=collate,
    ).train()
    ck = os.path.join(tmp_path, "checkpoints")
    assert sorted(d for d in os.listdir(ck) if d.startswith("step-")) == ["step-6", "step-8"]
    assert not [d for d in os.listdir(ck) if d.startswith(".tmp")]
    assert find_checkpoint("latest", tmp_path) == os.path.join(ck, "step-8")
    for f in ("optimizer.pt", "scheduler.pt", "rng-0.pt"):
        torch.load(os.path.join(ck, "step-6", f), weights_only=True)
    state = load_trainer_state(os.path.join(ck, "step-6"))
    assert (state["stage_index"], state["step_in_stage"], state["global_step"]) == (1, 3, 6)
    assert (
        state["epoch"] * 3 + state["batch_in_epoch"] == 3
    )  # 6 examples of the 3 tasks / batch 2: 3 per epoch


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    real = checkpoint_mod._save_torch

    def failing(obj, path):
        if "step-4" in path and path.endswith("optimizer.pt"):
            raise OSError("disk full (simulated)")
        real(obj, path)

    monkeypatch.setattr(checkpoint_mod, "_save_torch", failing)
    stage = Stage("s", ("connector", "lora"), 6, 1e-3)
    with pytest.raises(OSError, match="disk full"):
        Trainer(
            tiny_model(weak=0),
            SyntheticDataset(16),
            config=_cfg(tmp_path, save_every=2),
            stages=[stage],
            collate_fn=collate,
        ).train()
    ck = os.path.join(tmp_path, "checkpoints")
    with open(os.path.join(ck, "latest")) as f:
        assert f.read().strip() == "step-2"
    assert sorted(os.listdir(ck)) == ["latest", "step-2"]
    monkeypatch.setattr(checkpoint_mod, "_save_torch", real)
    res = Trainer(
        tiny_model(weak=0),
        SyntheticDataset(16),
        config=_cfg(tmp_path, save_every=2),
        stages=[stage],
        collate_fn=collate,
    ).train(resume="latest")
    assert res.global_step == 6
    assert _log(tmp_path)[-1]["step"] == 6 and any(
        r.get("event") == "resume" and r["step"] == 2 for r in _log(tmp_path)
    )


@pytest.mark.parametrize("lengths", [False, True], ids=["plain", "by-length"])
@pytest.mark.parametrize("resume_at", [2, 4])  # inside stage "a" / inside stage "b" (after a stage switch)
def test_resume_in_process_matches_an_uninterrupted_run(tmp_path, resume_at, lengths):
    full_dir = tmp_path / "full"
    model = tiny_model(weak=1)
    # 24 examples, length_group_mult 2: several mega-batches per epoch in stage "a".
    Trainer(
        model,
        SyntheticDataset(24, lengths=lengths),
        config=_cfg(full_dir, save_every=2, keep_last_checkpoints=10, save_final=False, length_group_mult=2),
        stages=TWO_STAGES,
        collate_fn=collate,
    ).train()
    expected = _params(model)

    fresh = tiny_model(seed=123, weak=1)  # different init: everything must come from the checkpoint
    res = Trainer(
        fresh,
        SyntheticDataset(24, lengths=lengths),
        config=_cfg(tmp_path / "resumed", save_final=False, length_group_mult=2),
        stages=TWO_STAGES,
        collate_fn=collate,
    ).train(resume=str(full_dir / "checkpoints" / f"step-{resume_at}"))
    assert res.global_step == 8
    got = _params(fresh)
    assert all(torch.equal(expected[k], got[k]) for k in expected), [
        k for k in expected if not torch.equal(expected[k], got[k])
    ][:5]


def test_resume_with_another_global_batch_is_refused(tmp_path):
    stage = Stage("s", ("connector",), 2, 1e-3)
    Trainer(
        tiny_model(weak=0),
        SyntheticDataset(16),
        config=_cfg(tmp_path, save_every=2, save_final=False),
        stages=[stage],
        collate_fn=collate,
    ).train()
    with pytest.raises(CheckpointError, match="global batch"):
        Trainer(
            tiny_model(weak=0),
            SyntheticDataset(16),
            config=_cfg(tmp_path, batch_size=4),
            stages=[stage],
            collate_fn=collate,
        ).train(resume="latest")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        Trainer(
            tiny_model(weak=0),
            SyntheticDataset(16),
            config=_cfg(tmp_path),
            stages=[stage],
            collate_fn=collate,
        ).train(resume=str(tmp_path / "nowhere"))


def test_resume_with_another_length_grouping_is_refused(tmp_path):
    stage = [Stage("s", ("connector",), 2, 1e-3)]
    ds = SyntheticDataset(16, lengths=True)
    Trainer(
        tiny_model(weak=0),
        ds,
        config=_cfg(tmp_path, save_every=2, save_final=False),
        stages=stage,
        collate_fn=collate,
    ).train()
    for kw in ({"group_by_length": False}, {"length_group_mult": 7}):
        with pytest.raises(CheckpointError, match="length"):
            Trainer(
                tiny_model(weak=0), ds, config=_cfg(tmp_path, **kw), stages=stage, collate_fn=collate
            ).train(resume="latest")
    with pytest.warns(UserWarning, match="group_by_length"), pytest.raises(CheckpointError, match="length"):
        Trainer(
            tiny_model(weak=0), SyntheticDataset(16), config=_cfg(tmp_path), stages=stage, collate_fn=collate
        ).train(resume="latest")  # the same data without lengths: plain order
    res = Trainer(tiny_model(weak=0), ds, config=_cfg(tmp_path), stages=stage, collate_fn=collate).train(
        resume="latest"
    )
    assert res.global_step == 2


def test_sigkill_then_resume_gives_identical_weights(tmp_path):
    """Kill a training process with SIGKILL after checkpoint step-4, resume in a fresh process: same
    weights."""
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT.format(tests_dir=TESTS_DIR))
    stages = [
        {"name": "a", "train": ["connector"], "steps": 4, "lr": 2e-3},
        {
            "name": "b",
            "train": ["connector", "routers", "lora"],
            "steps": 16,
            "lr": 2e-3,
            "warmup_steps": 2,
            "tasks": {"asr": 2.0, "gender": 1.0, "co_reasoning": 1.0},
        },
    ]

    def args(out, resume=None):
        return json.dumps(
            {
                "stages": stages,
                "resume": resume,
                "n": 24,
                "lengths": True,
                "train": {
                    "output_dir": str(out),
                    "batch_size": 2,
                    "save_every": 2,
                    "progress": False,
                    "keep_last_checkpoints": 3,
                    "length_group_mult": 2,
                },
            }
        )

    env = dict(os.environ, OMP_NUM_THREADS="1")
    ref = subprocess.Popen(
        [sys.executable, str(script), args(tmp_path / "ref")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    victim = subprocess.Popen(
        [sys.executable, str(script), args(tmp_path / "run")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    latest = tmp_path / "run" / "checkpoints" / "latest"

    def latest_step() -> int:
        try:
            return int(latest.read_text().strip().split("-")[1])
        except (OSError, IndexError, ValueError):
            return 0

    deadline = time.time() + 120
    while latest_step() < 4 and victim.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, victim.stderr.read().decode()[-2000:]
    assert latest_step() >= 4 and not (tmp_path / "run" / "final").exists()

    resumed = subprocess.run(
        [sys.executable, str(script), args(tmp_path / "run", resume="latest")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "DONE 20" in resumed.stdout
    _out, err = ref.communicate(timeout=180)
    assert ref.returncode == 0, err.decode()[-3000:]

    a = read_weights(str(tmp_path / "ref" / "final" / "model.safetensors"))
    b = read_weights(str(tmp_path / "run" / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, diff[:5]
    resumes = [r for r in _log(tmp_path / "run") if r.get("event") == "resume"]
    assert len(resumes) == 1 and resumes[0]["step"] >= 4


def test_grad_accum_matches_a_bigger_batch(tmp_path):
    """batch 2 x 2 accumulation steps == batch 4: the same examples and the same mean loss per step."""
    stage = [Stage("s", ("connector", "lora"), 3, 3e-3)]
    weights = []
    for bs, ga in ((4, 1), (2, 2)):
        model = tiny_model(weak=0, lora_dropout=0.0)
        Trainer(
            model,
            SyntheticDataset(16),
            config=_cfg(tmp_path / f"{bs}", batch_size=bs, grad_accum=ga, save_final=False),
            stages=stage,
            collate_fn=collate,
        ).train()
        weights.append(_params(model))
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], atol=1e-5, rtol=0, msg=k)


def test_bf16_and_gradient_checkpointing_across_stages(tmp_path):
    model = tiny_model(weak=1)
    stages = [Stage("a", ("connector",), 2, 1e-3), Stage("b", ("connector", "lora", "routers"), 2, 1e-3)]
    res = Trainer(
        model,
        SyntheticDataset(16),
        config=_cfg(tmp_path, mixed_precision="bf16", gradient_checkpointing=True, save_final=False),
        stages=stages,
        collate_fn=collate,
    ).train()
    logs = [r for r in _log(tmp_path) if "loss" in r]
    assert res.global_step == 4 and all(r["loss"] is not None and math.isfinite(r["loss"]) for r in logs)
    assert "_original_forward" in vars(model)  # autocast wrapper applied once, not stacked per stage
    assert vars(model)["_original_forward"].__func__ is type(model).forward


def test_feature_cache_dir_gives_the_same_run_and_fills_the_cache(tmp_path):
    """train.feature_cache_dir: frozen encoders are read from disk in later epochs; the run is unchanged."""
    from mowe.encoders.cache import FeatureCache

    def run(sub, cache_dir):
        model = tiny_model(weak=1, lora_dropout=0.0)
        stage = Stage("s", ("connector", "routers", "lora"), 8, 1e-2)
        Trainer(
            model,
            SyntheticDataset(8),
            config=_cfg(tmp_path / sub, batch_size=4, log_every=1, feature_cache_dir=cache_dir),
            stages=[stage],
            collate_fn=collate,
        ).train()
        return [r["loss"] for r in _log(tmp_path / sub) if "loss" in r], model

    live, _ = run("live", None)
    cached, model = run("cached", str(tmp_path / "cache"))
    assert cached == pytest.approx(live, rel=1e-5, abs=1e-6)
    stats = model.feature_cache.stats
    # 8 clips, 8 steps of 4: the strong encoder misses each clip once and hits every later visit.
    assert stats.misses["strong"] == 8 and stats.hits["strong"] == 8 * 4 - 8
    assert len(FeatureCache(tmp_path / "cache")) >= 8

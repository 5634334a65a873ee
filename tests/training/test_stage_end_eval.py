"""A dev set given to the trainer is evaluated at each stage's end when ``eval_every`` is 0 (never
ignored)."""

from __future__ import annotations

import json

import pytest
import torch
from _trainer_helpers import SyntheticDataset, collate, tiny_model

from mowe.curriculum import Stage
from mowe.training.trainer import TrainConfig, Trainer, eval_due


def test_eval_due():
    assert [s for s in range(1, 7) if eval_due(0, s, s in (2, 6), object(), None)] == [2, 6]
    assert [s for s in range(1, 7) if eval_due(3, s, s in (2, 6), object(), None)] == [3, 6]
    assert not eval_due(0, 2, True, None, None)


@pytest.mark.parametrize("eval_every", [0, 3])
def test_dev_loss_is_logged_at_each_stage_end_when_eval_every_is_0(tmp_path, eval_every):
    model = tiny_model(weak=1, lora_dropout=0.0)
    dev = SyntheticDataset(6, seed=1)
    cfg = TrainConfig(
        output_dir=str(tmp_path), batch_size=2, progress=False, save_final=False, eval_every=eval_every
    )
    stages = [Stage("a", ("connector",), 2, 1e-2), Stage("b", ("connector", "lora"), 2, 1e-2)]
    Trainer(
        model, SyntheticDataset(8), config=cfg, stages=stages, collate_fn=collate, eval_dataset=dev
    ).train()
    evals = [
        r for r in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines()) if "eval_loss" in r
    ]
    assert [(r["step"], r["stage"]) for r in evals] == (
        [(2, "a"), (4, "b")] if eval_every == 0 else [(3, "b")]
    )
    if eval_every == 0:  # the last one is the trained model's mean loss per dev example
        model.eval()
        with torch.no_grad():
            losses = [
                float(
                    model(
                        **{
                            k: v
                            for k, v in collate([dev[i], dev[i + 1]]).items()
                            if k in ("input_ids", "attention_mask", "labels", "waveforms", "wave_lengths")
                        }
                    ).loss
                )
                for i in (0, 2, 4)
            ]
        assert evals[-1]["eval_loss"] == pytest.approx(sum(losses) / 3, rel=1e-4)

"""FSDP2 on the CPU (2 processes, gloo): sharding really applied, same result as one process, sharded
checkpoints that resume exactly, and a consolidated export that loads in one process with the same logits.

The runs use ``accelerate launch --num_processes 2 --use_fsdp --fsdp_version 2`` with
``ACCELERATE_USE_CPU=1``: accelerate itself does not shard on CPUs, so mowe does
(``mowe.training.distributed.place_model``) and each run prints whether its model ended up an FSDP module.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from _dist_helpers import (
    VarLenDataset,
    final_weights,
    finish,
    launch,
    logs,
    pad_collate,
    run_args,
    shared_dir,
)

from mowe import MoWEAudioLLM
from mowe.errors import CheckpointError
from mowe.training.checkpoint import load_model_weights
from mowe.training.distributed import DistributedSetupError, verify_sharded

TOL = 1e-5


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory):
    """One process x batch 8, FSDP 2 x 4 (checkpoints at steps 2 and 4), then FSDP resumed from step 2
    alone."""
    tmp = tmp_path_factory.mktemp("fsdp")
    ref = shared_dir(tmp_path_factory) / "single"  # test_distributed.py's one-process run, when it ran first
    single = None if (ref / "final").is_dir() else launch(tmp, run_args(ref, batch_size=8))
    fsdp = launch(
        tmp,
        {**run_args(tmp / "fsdp", batch_size=4, save_every=2, keep_last_checkpoints=5), "logits": True},
        processes=2,
        fsdp=True,
    )
    if single is not None:
        finish(single)
    outs = {"fsdp": finish(fsdp, processes=2)}
    # "Killed" after step 2: a fresh run folder holding only the step-2 checkpoint, resumed with
    # resume="latest".
    ck = tmp / "resumed" / "checkpoints"
    ck.mkdir(parents=True)
    shutil.copytree(tmp / "fsdp" / "checkpoints" / "step-2", ck / "step-2")
    (ck / "latest").write_text("step-2\n")
    resumed = launch(
        tmp,
        {
            **run_args(tmp / "resumed", batch_size=4, save_every=2, keep_last_checkpoints=5),
            "resume": "latest",
            "logits": True,
        },
        processes=2,
        fsdp=True,
    )
    outs["resumed"] = finish(resumed, processes=2)
    (tmp / "single").symlink_to(ref, target_is_directory=True)
    yield tmp, outs
    shutil.rmtree(tmp, ignore_errors=True)


def test_fsdp_shards_and_writes_sharded_checkpoints(fsdp_runs):
    tmp, outs = fsdp_runs
    assert outs["fsdp"].count("SHARDED True") == 2  # the model on both processes is an FSDP module
    step = tmp / "fsdp" / "checkpoints" / "step-4"
    shards = sorted(p.name for p in (step / "sharded").glob("*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"]  # each process wrote its own shards
    assert not (step / "model.safetensors").exists() and not (step / "optimizer.pt").exists()
    # a sharded checkpoint needs a sharded model: refused with a clear error in a plain process
    from _dist_helpers import model

    with pytest.raises(CheckpointError, match="written by an FSDP run"):
        load_model_weights(model(), str(step))


def test_fsdp_with_answers_of_different_lengths_equals_one_process(fsdp_runs):
    tmp, _ = fsdp_runs
    a = final_weights(tmp / "single")
    b = final_weights(tmp / "fsdp")  # consolidated by the FSDP run
    assert a.keys() == b.keys() and any(k.startswith("adapter:") for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=TOL, rtol=0, msg=k)
    print("max |single - fsdp| =", max(float((a[k] - b[k]).abs().max()) for k in a))
    for ra, rb in zip(logs(tmp / "single"), logs(tmp / "fsdp"), strict=True):
        assert abs(ra["loss"] - rb["loss"]) < TOL, (ra, rb)
    # evaluation on 9 examples: one process runs a filler batch (a sharded model needs equal forwards)
    for ra, rb in zip(logs(tmp / "single", "eval_loss"), logs(tmp / "fsdp", "eval_loss"), strict=True):
        assert ra["step"] == rb["step"] and abs(ra["eval_loss"] - rb["eval_loss"]) < TOL, (ra, rb)


def test_fsdp_run_resumed_from_a_sharded_checkpoint_equals_the_uninterrupted_run(fsdp_runs):
    tmp, outs = fsdp_runs
    assert outs["resumed"].count("DONE 4") == 2
    a, b = final_weights(tmp / "fsdp"), final_weights(tmp / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)
    full = {r["step"]: r["loss"] for r in logs(tmp / "fsdp")}
    res = logs(tmp / "resumed")
    assert [r["step"] for r in res] == [3, 4]
    for r in res:
        assert abs(r["loss"] - full[r["step"]]) < 1e-6


def test_consolidated_export_loads_in_one_process_with_the_same_logits(fsdp_runs):
    tmp, _ = fsdp_runs
    m = MoWEAudioLLM.from_pretrained(tmp / "fsdp" / "final").eval()
    batch = pad_collate([VarLenDataset(8)[i] for i in range(4)])
    with torch.no_grad():
        out = m(
            **{k: batch[k] for k in ("input_ids", "attention_mask", "labels", "waveforms", "wave_lengths")}
        )
    sharded = torch.load(tmp / "fsdp" / "logits.pt", weights_only=True)
    keep = out.attention_mask.bool()
    torch.testing.assert_close(out.logits[keep], sharded[keep], atol=1e-5, rtol=0)


def test_fsdp_asked_for_but_not_applied_fails_loudly(monkeypatch):
    from _dist_helpers import model

    from mowe.training.trainer import prepare_for_stage

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    m = model()
    with pytest.raises(DistributedSetupError, match="FSDP was asked for .* not sharded"):
        verify_sharded(m)
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    with pytest.raises(DistributedSetupError, match="not sharded"):  # accelerate on a CPU ignores the request
        prepare_for_stage(Accelerator(), m, torch.optim.SGD(m.parameters(), lr=0.1))
    AcceleratorState._reset_state(reset_partial_state=False)

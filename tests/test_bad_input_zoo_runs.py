"""The bad-input zoo, part 2: full and read-only disks, resumes, silent partial success, real CLI
subprocesses.

Each case names its expected error and the file / key it must name; every case runs under the per-case alarm
of ``_bad_input_helpers`` (a hang fails instead of blocking CI).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from _bad_input_helpers import (  # noqa: F401 (per_case_timeout: an autouse fixture)
    _FLOW_BOMB,
    _LLAMA,
    ENV,
    _fifo,
    _raise,
    _run_file,
    per_case_timeout,
)
from _trainer_helpers import SyntheticDataset, collate, tiny_model

from mowe.cli_errors import run_command
from mowe.config import LLMConfig, MoWEConfig, parse_value
from mowe.errors import CheckpointError, ConfigError, NonFiniteLossError
from mowe.training.config import TrainConfig


# ================================================================================ 7. full / read-only disks
def _tiny_saved_model():
    from mowe import MoWEAudioLLM
    from mowe.config import EncoderConfig

    cfg = MoWEConfig(
        strong=EncoderConfig(
            "whisper",
            preset="tiny",
            pad_to_30s=False,
            overrides={
                "d_model": 32,
                "encoder_layers": 1,
                "encoder_attention_heads": 2,
                "encoder_ffn_dim": 64,
            },
        ),
        llm=LLMConfig(
            config={
                **_LLAMA,
                "hidden_size": 32,
                "intermediate_size": 64,
                "vocab_size": 64,
                "num_hidden_layers": 1,
                "max_position_embeddings": 64,
            }
        ),
    )
    return MoWEAudioLLM.from_config(cfg)


@pytest.fixture
def tiny_mount(tmp_path):
    """A 256 KiB tmpfs (needs root; CI containers that refuse mount skip the cases that need it)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, check=False
    ).returncode:
        pytest.skip("cannot mount a tmpfs here (not root): the full-disk case needs a real small file system")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_disk_full_names_the_file_and_keeps_the_previous_save(tiny_mount, capsys):
    model = _tiny_saved_model()
    prev = tiny_mount / "final"
    prev.mkdir()
    (prev / "config.json").write_text('{"old": true}')
    with pytest.raises(OSError) as ei:
        model.save_pretrained(prev)
    assert ei.value.errno == errno.ENOSPC and str(prev / "model.safetensors") in str(ei.value.filename)
    assert (prev / "config.json").read_text() == '{"old": true}'  # the previous save is as it was
    assert sorted(os.listdir(tiny_mount)) == ["final"]  # no temp folder left behind
    assert run_command("train", _raise(ei.value)) == 5
    assert "no space left on the device while writing" in capsys.readouterr().err


def test_disk_full_while_logging_names_log_jsonl(tiny_mount, capsys):
    from mowe.training.logging import RunLog

    (tiny_mount / "filler").write_bytes(b"\0" * (256 * 1024 - 4096))  # leave one page
    log = RunLog(str(tiny_mount / "run"), enabled=True)
    try:
        with pytest.raises(OSError) as ei:
            for step in range(2000):  # line buffering: the write that does not fit fails
                log({"step": step, "loss": 1.0, "note": "x" * 200})
    finally:
        with contextlib.suppress(OSError):  # the unwritten line is still buffered
            log.close()
    assert ei.value.errno == errno.ENOSPC and ei.value.filename == str(tiny_mount / "run" / "log.jsonl")
    assert run_command("train", _raise(ei.value)) == 5
    assert "log.jsonl" in capsys.readouterr().err


def test_read_only_folder_names_the_path(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True, check=False
    ).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (not root; root ignores chmod)")
    try:
        with pytest.raises(OSError) as ei:
            _tiny_saved_model().save_pretrained(ro / "final")
        assert ei.value.errno == errno.EROFS and str(ro) in str(ei.value.filename)
        assert run_command("train", _raise(ei.value)) == 5
        assert "read-only" in capsys.readouterr().err
    finally:
        subprocess.run(["umount", str(ro)], check=False)


def _fake_accelerator():
    return SimpleNamespace(is_main_process=True, process_index=0, wait_for_everyone=lambda: None)


@pytest.mark.parametrize("failure", ["safetensors", "torch-save"])
def test_checkpoint_disk_full_names_the_file_and_keeps_latest(tmp_path, monkeypatch, failure):
    import mowe.training.checkpoint as ck

    model = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    kw = {
        "accelerator": _fake_accelerator(),
        "checkpoint_dir": str(tmp_path),
        "state": {"global_step": 2},
        "model": model,
        "keys": ["weight", "bias"],
        "optimizer": opt,
        "scheduler": sched,
        "keep_last": 2,
    }
    ck.write_checkpoint(name="step-2", **kw)
    if failure == "safetensors":  # what safetensors says on a full disk: no file named

        def full(tensors, path):
            raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

        monkeypatch.setattr(ck, "_save_safetensors", full)
    else:  # Python's write: an OSError without a filename

        def full(obj, path):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(ck, "_save_torch", full)
    with pytest.raises(OSError) as ei:
        ck.write_checkpoint(name="step-4", **{**kw, "state": {"global_step": 4}})
    assert ei.value.errno == errno.ENOSPC and ".tmp-step-4" in ei.value.filename
    assert sorted(os.listdir(tmp_path)) == ["latest", "step-2"]
    assert (tmp_path / "latest").read_text().strip() == "step-2"


# ================================================================================ 8. resumes
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished 2-stage run with a checkpoint after every step (stage a: steps 1-2, stage b: steps 3-4)."""
    from mowe.curriculum import Stage
    from mowe.training.trainer import Trainer

    out = tmp_path_factory.mktemp("run")
    stages = [Stage("a", ("connector",), 2, 1e-3), Stage("b", ("connector", "lora"), 2, 1e-3)]
    Trainer(
        tiny_model(weak=0),
        SyntheticDataset(8),
        stages=stages,
        collate_fn=collate,
        config=TrainConfig(
            output_dir=str(out),
            batch_size=2,
            save_every=1,
            keep_last_checkpoints=10,
            progress=False,
            save_final=False,
        ),
    ).train()
    return out, stages


def _resume_from(run_dir, tmp, damage: Callable[[Path, Path], None]):
    from mowe.training.trainer import Trainer

    out, stages = run_dir
    ck = tmp / "step-3"
    shutil.copytree(out / "checkpoints" / "step-3", ck)
    damage(ck, out / "checkpoints")
    model = tiny_model(seed=5, weak=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(
        model,
        SyntheticDataset(8),
        stages=stages,
        collate_fn=collate,
        config=TrainConfig(output_dir=str(tmp / "new"), batch_size=2, progress=False, save_final=False),
    )
    try:
        trainer.train(resume=str(ck))
    except CheckpointError:  # whatever failed, it failed before touching the model
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        raise
    return trainer


def _state_edit(fn) -> Callable[[Path, Path], None]:
    def damage(ck, _):
        p = ck / "trainer_state.json"
        s = json.loads(p.read_text())
        fn(s)
        p.write_text(json.dumps(s))

    return damage


RESUME_CASES = [
    (
        "trainer-state-not-json",
        lambda ck, _: (ck / "trainer_state.json").write_text("{\"global_st"),
        r"trainer_state\.json: unreadable",
    ),
    (
        "trainer-state-key-missing",
        _state_edit(lambda s: s.pop("global_step")),
        r"trainer_state\.json.*'global_step'",
    ),
    (
        "trainer-state-bad-type",
        _state_edit(lambda s: s.update(step_in_stage="1")),
        r"trainer_state\.json.*'step_in_stage' must be an integer",
    ),
    (
        "trainer-state-not-object",
        lambda ck, _: (ck / "trainer_state.json").write_text("[1]"),
        r"trainer_state\.json: expected a JSON object",
    ),
    ("trainer-state-wrong-stage-name", _state_edit(lambda s: s.update(stage_name="z")), r"stage 'z'.*'b'"),
    (
        "optimizer-from-another-stage",
        lambda ck, root: shutil.copy(root / "step-1" / "optimizer.pt", ck / "optimizer.pt"),
        r"optimizer\.pt: the optimizer state does not fit stage 'b'",
    ),
    (
        "optimizer-weights-only-refusal",
        lambda ck, _: torch.save({"x": argparse.Namespace()}, ck / "optimizer.pt"),
        r"optimizer\.pt: unreadable",
    ),
    (
        "weights-truncated",
        lambda ck, _: (ck / "model.safetensors").write_bytes(b"\x08"),
        r"model\.safetensors",
    ),
]


@pytest.mark.parametrize(("name", "damage", "match"), RESUME_CASES, ids=[c[0] for c in RESUME_CASES])
def test_resume_is_checked_before_anything_is_touched(run_dir, tmp_path, name, damage, match):
    with pytest.raises(CheckpointError, match=match) as ei:
        _resume_from(run_dir, tmp_path, damage)
    assert "\x1b[" not in str(ei.value)


def test_intact_checkpoint_still_resumes(run_dir, tmp_path):
    assert _resume_from(run_dir, tmp_path, lambda ck, root: None).global_step == 4


# ================================================================================ 9. silent partial success
def _nan_at(model, calls: set[int]):
    forward, n = model.forward, {"i": 0}

    def patched(**kw):
        out = forward(**kw)
        n["i"] += 1
        if n["i"] in calls:
            out.loss = out.loss * float("nan")
        return out

    model.forward = patched


def _train_with_nans(tmp, calls: set[int], steps: int):
    from mowe.curriculum import Stage
    from mowe.training.trainer import Trainer

    model = tiny_model(weak=0)
    _nan_at(model, calls)
    return Trainer(
        model,
        SyntheticDataset(8),
        stages=[Stage("s", ("connector",), steps, 1e-3)],
        collate_fn=collate,
        config=TrainConfig(output_dir=str(tmp), batch_size=2, progress=False, save_final=False),
    ).train()


def test_skipping_most_steps_fails_the_run(tmp_path):
    with pytest.raises(
        NonFiniteLossError, match=r"4 of the run's 6 steps skipped.*max_nonfinite_fraction=0\.5"
    ):
        _train_with_nans(tmp_path, {2, 3, 4, 5, 6}, 6)
    assert run_command("train", _raise(NonFiniteLossError("x"))) == 6


def test_a_run_that_skipped_steps_says_so(tmp_path, capsys):
    assert _train_with_nans(tmp_path, {2}, 3).skipped_nonfinite == 1
    assert "1 of 3 training steps were skipped" in capsys.readouterr().err


def test_parse_value_alias_budget_is_fast():
    with pytest.raises(ConfigError, match="alias"):
        parse_value(_FLOW_BOMB)


# ================================================================================ 10. real CLI subprocesses
def _mowe(args: list[str], *, shell: str | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = ["bash", "-c", shell] if shell else [sys.executable, "-m", "mowe", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout, check=False)


def test_subprocess_fifo_without_writer_does_not_hang(tmp_path):
    res = _mowe(["train", "--config", str(_fifo(tmp_path, "run.yaml"))], timeout=60)
    assert res.returncode == 2 and "FIFO" in res.stderr and "run.yaml" in res.stderr
    assert "Traceback" not in res.stderr


def test_subprocess_process_substitution_and_alias_bomb(tmp_path):
    """``--config <(cat run.yaml)`` is read (it fails later, at the missing manifest it names: exit 3), and an
    alias bomb through --set is refused at once (exit 2); neither prints a traceback."""
    run = _run_file(tmp_path)
    py = sys.executable
    res = _mowe(
        [],
        shell=f"{py} -m mowe train --config <(cat '{run}'); echo \"rc=$?\" >&2; "
        f"{py} -m mowe train --config '{run}' --set 'model.connector.options={_FLOW_BOMB}'; "
        f"echo \"rc=$?\" >&2",
    )
    err = res.stderr
    assert "Traceback" not in err, err
    first, second = err.split("rc=")[0], err.split("rc=")[1]
    assert "train.jsonl" in first and err.count("rc=3") == 1, err
    assert "alias" in second and "rc=2" in err, err

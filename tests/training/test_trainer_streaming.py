"""Must-show 2: a streaming run (``data.streaming: true``, a Hugging Face dataset read as an IterableDataset)
that is SIGKILLed after a checkpoint and resumed with ``mowe train --resume latest`` ends with the same
weights as an uninterrupted run; real ``python -m mowe`` subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import torch
from _hf_helpers import save_hf_dataset, write_corpus
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN_TINY = os.path.join(ROOT, "examples", "run_tiny.yaml")
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
STAGES = (
    "stages=[{name: connector, train: [connector], steps: 4, lr: 0.002}, "
    "{name: mowe, train: [connector, routers, lora], steps: 10, lr: 0.002, warmup_steps: 1}]"
)


def _cmd(data, out, *extra):
    return [
        sys.executable,
        "-m",
        "mowe",
        "train",
        "--config",
        RUN_TINY,
        "--set",
        f"data.train={data}",
        "--set",
        "data.streaming=true",
        "--set",
        "data.on_bad_example=error",
        "--set",
        f"train.output_dir={out}",
        "--set",
        "train.save_every=2",
        "--set",
        "train.length_group_mult=2",
        "--set",
        "model.lora.dropout=0.1",
        "--set",
        STAGES,
        *extra,
    ]


def test_streaming_run_killed_after_a_checkpoint_and_resumed_equals_the_uninterrupted_run(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", n=14)
    data = save_hf_dataset(corpus, tmp_path / "hf")
    ref = subprocess.Popen(
        _cmd(data, tmp_path / "ref"), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    victim = subprocess.Popen(
        _cmd(data, tmp_path / "run"), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    latest = tmp_path / "run" / "checkpoints" / "latest"

    def latest_step() -> int:
        try:
            return int(latest.read_text().strip().split("-")[1])
        except (OSError, IndexError, ValueError):
            return 0

    deadline = time.time() + 240
    while latest_step() < 6 and victim.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, victim.stderr.read().decode()[-2000:]
    killed_at = latest_step()
    assert 6 <= killed_at < 14 and not (tmp_path / "run" / "final").exists()  # inside the second stage

    resumed = subprocess.run(
        _cmd(data, tmp_path / "run", "--resume", "latest"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _out, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err.decode()[-3000:]

    a = load_file(str(tmp_path / "ref" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    resumes = [r for r in log if r.get("event") == "resume"]
    assert len(resumes) == 1 and resumes[0]["step"] == killed_at
    ref_log = [json.loads(x) for x in (tmp_path / "ref" / "log.jsonl").read_text().splitlines()]
    # the resumed run saw the same batches after the checkpoint: the same per-step losses
    after = {r["step"]: r["loss"] for r in log if "loss" in r and r["step"] > killed_at}
    assert after == {r["step"]: r["loss"] for r in ref_log if "loss" in r and r["step"] > killed_at}


def test_a_stream_cannot_be_sampled_by_task_weights(tmp_path, capsys):
    from mowe.cli import main

    data = save_hf_dataset(write_corpus(tmp_path / "corpus", n=8), tmp_path / "hf")
    code = main(
        [
            "train",
            "--config",
            RUN_TINY,
            "--set",
            f"data.train={data}",
            "--set",
            "data.streaming=true",
            "--set",
            f"train.output_dir={tmp_path / 'out'}",
            "--set",
            "stages=[{name: s, train: [connector], steps: 1, lr: 0.001, tasks: {asr: 1.0}}]",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "stage 's' samples by task weights" in err and "data.tasks" in err

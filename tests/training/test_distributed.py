"""The same trainer under ``accelerate launch --num_processes 2`` on the CPU (gloo): same global batch, same result.

Two processes with ``batch_size=2`` each must end with the weights of one process with ``batch_size=4``: the
sampler cuts one global order into global batches and gives each process a contiguous slice, so the global
batch holds the same examples in both set-ups; every example has the same number of answer tokens, so the mean
of the two processes' mean losses (DDP averages gradients) equals the single process's mean loss. LoRA dropout
is off (the processes draw different dropout masks by design: seed + rank).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import torch
from _trainer_helpers import TRAIN_SCRIPT, read_weights

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/, where _trainer_helpers.py is


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(out, batch_size: int) -> str:
    stages = [{"name": "a", "train": ["connector"], "steps": 2, "lr": 3e-3},
              {"name": "b", "train": ["connector", "lora"], "steps": 2, "lr": 3e-3, "tasks": {"asr": 1.0, "gender": 1.0,
                                                                                  "chord": 1.0, "tempo": 1.0}}]
    return json.dumps({"stages": stages, "n": 16, "weak": 0, "lora_dropout": 0.0,
                       "train": {"output_dir": str(out), "batch_size": batch_size, "save_every": 2, "progress": False,
                                     "log_every": 1}})


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT.format(tests_dir=TESTS_DIR))
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    env.pop("WORLD_SIZE", None)
    # `--cpu` with several processes needs mpirun; `--multi_gpu` runs torchrun, and ACCELERATE_USE_CPU=1 makes
    # the processes use the CPU with the gloo backend (DistributedType.MULTI_CPU).
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
              "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
              str(_free_port()), str(script), _args(tmp_path / "ddp", 2)]
    ddp = subprocess.Popen(launch, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    single = subprocess.run([sys.executable, str(script), _args(tmp_path / "single", 4)], env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    out, err = ddp.communicate(timeout=300)
    assert ddp.returncode == 0, err[-4000:]
    assert single.returncode == 0, single.stderr[-4000:]
    assert out.count("DONE 4") == 2  # both ranks finished all steps

    a = read_weights(str(tmp_path / "single" / "final" / "model.safetensors"))
    b = read_weights(str(tmp_path / "ddp" / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=0, msg=k)
    print("max |single - ddp| =", max(float((a[k] - b[k]).abs().max()) for k in a))
    # and training did move the weights (the comparison is not between two untouched models)
    state = json.loads((tmp_path / "ddp" / "checkpoints" / "step-4" / "trainer_state.json").read_text())
    assert state["num_processes"] == 2 and state["global_step"] == 4
    assert os.path.isfile(tmp_path / "ddp" / "checkpoints" / "step-4" / "rng-1.pt")
    logs = [r for r in map(json.loads, (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()) if "loss" in r]
    single_logs = [r for r in map(json.loads, (tmp_path / "single" / "log.jsonl").read_text().splitlines())
                   if "loss" in r]  # step records (the log also holds stage_start events)
    assert [round(r["loss"], 4) for r in logs] == [round(r["loss"], 4) for r in single_logs]
    assert logs[-1]["loss"] != logs[0]["loss"]

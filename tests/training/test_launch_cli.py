"""The README's CPU commands of "Training on many devices", run exactly as printed (``accelerate launch ... -m
mowe train --config run.yaml``): DDP and FSDP2 with 2 processes x batch 2 end with the weights of one process
   x batch 4; an FSDP2 run SIGKILLed
after a sharded checkpoint and resumed with ``--resume latest`` ends with the uninterrupted run's weights.

Answers have 1 to 12 words, so the runs only agree when the loss is normalised by the global answer-token
count.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from _audio_helpers import write_tone_wav
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]

RUN = {
    "model": {
        "strong": {
            "family": "whisper",
            "preset": "tiny",
            "pad_to_30s": False,
            "overrides": {
                "d_model": 32,
                "encoder_layers": 1,
                "encoder_attention_heads": 2,
                "encoder_ffn_dim": 64,
            },
        },
        "weak_encoders": {
            "w": {
                "family": "whisper",
                "preset": "tiny",
                "pad_to_30s": False,
                "overrides": {
                    "d_model": 16,
                    "encoder_layers": 1,
                    "encoder_attention_heads": 2,
                    "encoder_ffn_dim": 32,
                },
            }
        },
        "router": {"top_k": 1, "aux_loss_weight": 0.0, "hidden_dim": 16},
        "connector": {"kind": "stack", "options": {"stack": 4}},
        "llm": {
            "config": {
                "model_type": "llama",
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "max_position_embeddings": 512,
            },
            "train": "lora",
        },
        "lora": {"r": 2, "alpha": 4, "dropout": 0.0},
    },
    "tokenizer": {"train_bpe": {"vocab_size": 280}},
    "data": {"train": "train.jsonl", "max_audio_seconds": 5},
    "train": {
        "output_dir": "run",
        "batch_size": 2,
        "save_every": 1,
        "log_every": 1,
        "seed": 5,
        "progress": False,
        "group_by_length": False,
    },
    "stages": [{"name": "all", "train": ["connector", "routers", "lora"], "steps": 4, "lr": 2e-4}],
}


def _readme_command(setup: str) -> list[str]:
    """The command of the README table's row ``setup``, with ``accelerate`` run by this interpreter."""
    with open(os.path.join(ROOT, "README.md")) as f:
        row = next(line for line in f if line.startswith(f"| {setup} |"))
    cmd = row.split("`")[1]
    env, rest = cmd.split(" accelerate launch ")
    return [env, *rest.split()]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("launch")
    os.makedirs(root / "audio")
    with open(root / "train.jsonl", "w") as f:
        for i in range(8):
            path = root / "audio" / f"{i}.wav"
            write_tone_wav(path, 250 + 90 * i, 0.4 + 0.1 * i, amplitude=9000)
            answer = " ".join(WORDS[: [1, 12, 2, 9, 1, 5, 12, 3][i]])
            f.write(
                json.dumps(
                    {
                        "id": f"ex{i}",
                        "audio": f"audio/{i}.wav",
                        "instruction": "Count.",
                        "answer": answer,
                        "task": "count",
                    }
                )
                + "\n"
            )
    (root / "run.yaml").write_text(yaml.safe_dump(RUN, sort_keys=False))
    return root


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT, **extra)
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _final(path) -> dict[str, torch.Tensor]:
    final = path / "final"
    adapter = load_file(str(final / "llm_adapter" / "adapter_model.safetensors"))
    return {**load_file(str(final / "model.safetensors")), **{f"adapter/{k}": v for k, v in adapter.items()}}


def _log(path) -> list[dict]:
    with open(path / "log.jsonl") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def runs(workdir):
    """One process x batch 4, then the README's DDP and FSDP2 rows with 2 processes x batch 2 (one at a
    time)."""
    out = {}
    single = subprocess.run(
        [
            sys.executable,
            "-m",
            "mowe",
            "train",
            "--config",
            str(workdir / "run.yaml"),
            "--set",
            f"train.output_dir={workdir / 'one'}",
            "--set",
            "train.batch_size=4",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    out["one"] = _final(workdir / "one")
    for name, setup in (("ddp", "CPU, DDP (gloo)"), ("fsdp", "CPU, FSDP2 (gloo)")):
        env_kv, *args = _readme_command(setup)
        key, value = env_kv.split("=")
        args = [a for a in args if a not in ("-m", "mowe", "train", "--config", "run.yaml")]
        cmd = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            *args,
            "-m",
            "mowe",
            "train",
            "--config",
            str(workdir / "run.yaml"),
            "--set",
            f"train.output_dir={workdir / name}",
        ]
        res = subprocess.run(
            cmd, env=_env(**{key: value}), capture_output=True, text=True, timeout=400, check=False
        )
        assert res.returncode == 0, f"{shlex.join(cmd)}\n{res.stderr[-3000:]}"
        out[name] = _final(workdir / name)
        out[name + "_log"] = _log(workdir / name)
        out[name + "_sharded"] = sorted(os.listdir(workdir / name / "checkpoints" / "step-4"))
        out[name + "_cmd"] = cmd
    out["one_log"] = _log(workdir / "one")
    return out


@pytest.mark.parametrize("name", ["ddp", "fsdp"])
def test_readme_cpu_commands_equal_one_process(runs, name):
    one, other = runs["one"], runs[name]
    assert sorted(one) == sorted(other)
    lora_b = [v for k, v in one.items() if "lora_B" in k]
    assert lora_b and max(v.abs().max().item() for v in lora_b) > 1e-4  # it trained (LoRA B starts at zero)
    for k in one:
        torch.testing.assert_close(other[k], one[k], atol=1e-5, rtol=0, msg=k)
    steps = {r["step"]: r["lm_loss"] for r in runs["one_log"] if "lm_loss" in r and "step" in r}
    theirs = {r["step"]: r["lm_loss"] for r in runs[name + "_log"] if "lm_loss" in r and "step" in r}
    assert steps and steps.keys() == theirs.keys()
    for s, mine in steps.items():
        assert abs(mine - theirs[s]) < 1e-5, (s, mine, theirs[s])
    # FSDP2 really sharded: its checkpoint is a DCP folder of shards; DDP's is a plain one.
    assert ("sharded" in runs[name + "_sharded"]) == (name == "fsdp"), runs[name + "_sharded"]


def test_readme_fsdp2_command_killed_and_resumed_equals_the_uninterrupted_run(workdir, runs):
    cmd = [
        a if not a.startswith("train.output_dir=") else f"train.output_dir={workdir / 'killed'}"
        for a in runs["fsdp_cmd"]
    ]
    env = _env(ACCELERATE_USE_CPU="1")
    latest = workdir / "killed" / "checkpoints" / "latest"
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while not (latest.is_file() and latest.read_text().strip() in ("step-1", "step-2")):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers, mid-run
    proc.wait(timeout=60)
    proc.stderr.close()
    assert not (workdir / "killed" / "final").exists()
    res = subprocess.run(
        [*cmd, "--resume", "latest"], env=env, capture_output=True, text=True, timeout=400, check=False
    )
    assert res.returncode == 0, res.stderr[-3000:]
    full, resumed = runs["fsdp"], _final(workdir / "killed")
    assert sorted(full) == sorted(resumed)
    for k in full:
        torch.testing.assert_close(resumed[k], full[k], atol=1e-6, rtol=0, msg=k)


def test_a_manifest_given_by_process_substitution_trains_like_the_file(workdir):
    """``data.train=<(cat train.jsonl)`` (a FIFO, readable once) with a BPE tokenizer trained on the manifest:
    the run reads it once and builds the same tokenizer and weights as from the file."""
    with open(workdir / "train.jsonl") as f, open(workdir / "abs.jsonl", "w") as g:
        for line in f:
            rec = json.loads(line)
            g.write(json.dumps({**rec, "audio": str(workdir / rec["audio"])}) + "\n")
    one_step = "stages=[{name: s, train: [connector], steps: 1, lr: 1e-3}]"
    base = f"{shlex.quote(sys.executable)} -m mowe train --config {shlex.quote(str(workdir / 'run.yaml'))}"
    outs = {}
    for name, manifest in (
        ("file", shlex.quote(str(workdir / "abs.jsonl"))),
        ("fifo", f"<(cat {shlex.quote(str(workdir / 'abs.jsonl'))})"),
    ):
        out = workdir / f"bpe-{name}"
        cmd = (
            f"{base} --set data.train={manifest} --set train.output_dir={out} --set train.save_every=0 "
            f"--set {shlex.quote(one_step)}"
        )
        res = subprocess.run(
            ["bash", "-c", cmd], env=_env(), capture_output=True, text=True, timeout=300, check=False
        )
        assert res.returncode == 0, res.stderr[-3000:]
        outs[name] = out / "final"
    with open(outs["file"] / "tokenizer.json") as a, open(outs["fifo"] / "tokenizer.json") as b:
        assert json.load(a) == json.load(b)
    a, b = (
        load_file(str(outs["file"] / "model.safetensors")),
        load_file(str(outs["fifo"] / "model.safetensors")),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

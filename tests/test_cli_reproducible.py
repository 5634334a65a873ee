"""``mowe train`` with the user's own encoders and router named by import path, reloaded in a fresh process;
reproducible CLI runs (two runs, and a SIGKILLed run resumed with ``--resume latest``, give the same weights).

The user package (``my_parts``: conv encoders at 25 / 50 Hz, a router by clip duration) is written into a temp
folder that only the subprocesses' ``PYTHONPATH`` (and, where a test says so, ``sys.path``) contain.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import yaml
from _audio_helpers import write_tone_wav
from _component_helpers import PACKAGE, write_package
from safetensors.torch import load_file

from mowe.cli import main
from mowe.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "Which tone is it?"

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
            "conv25": {"component": f"{PACKAGE}.Conv", "hop": 640, "out_dim": 8, "freeze": False},
            "conv50": {"component": f"{PACKAGE}.Conv", "out_dim": 8, "freeze": False},
            "whisper": {
                "family": "whisper",
                "preset": "tiny",
                "pad_to_30s": False,
                "overrides": {
                    "d_model": 16,
                    "encoder_layers": 1,
                    "encoder_attention_heads": 2,
                    "encoder_ffn_dim": 32,
                },
            },
        },
        "router": {
            "component": f"{PACKAGE}.DurationRouter",
            "top_k": 2,
            "buckets": 3,
            "frames_per_bucket": 12,
        },
        "connector": {"kind": "stack", "options": {"stack": 4}},
        "llm": {
            "config": {
                "model_type": "llama",
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "max_position_embeddings": 512,
            },
            "train": "lora",
        },
        "lora": {"r": 2, "alpha": 4, "dropout": 0.1},
    },
    "tokenizer": {"train_bpe": {"vocab_size": 280}},
    "data": {"train": "train.jsonl", "on_bad_example": "error", "max_audio_seconds": 5},
    "train": {
        "output_dir": "run",
        "batch_size": 4,
        "save_every": 2,
        "log_every": 1,
        "seed": 3,
        "progress": False,
    },
    "stages": [
        {"name": "pool", "train": ["connector", "routers", "weak_encoders"], "steps": 4, "lr": 1e-2},
        {"name": "lora", "train": ["connector", "lora"], "steps": 4, "lr": 1e-2},
    ],
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The user package, 12 WAV clips of 0.3-1.4 s with a manifest, and the run file."""
    root = tmp_path_factory.mktemp("byo")
    write_package(root / "pkgs")
    os.makedirs(root / "audio")
    with open(root / "train.jsonl", "w") as f:
        for i in range(12):
            write_tone_wav(root / "audio" / f"{i}.wav", 300 + 400 * (i % 3), seconds=0.3 + 0.1 * i)
            f.write(
                json.dumps(
                    {
                        "id": f"ex{i}",
                        "audio": f"audio/{i}.wav",
                        "instruction": PROMPT,
                        "answer": ["low", "mid", "high"][i % 3],
                        "task": "tone",
                    }
                )
                + "\n"
            )
    (root / "run.yaml").write_text(yaml.safe_dump(RUN, sort_keys=False))
    return root


def _env(root) -> dict[str, str]:
    return dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([ROOT, str(root / "pkgs"), os.environ.get("PYTHONPATH", "")]),
    )


def _train(root, out: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mowe",
            "train",
            "--config",
            str(root / "run.yaml"),
            "--set",
            f"train.output_dir={root / out}",
            *extra,
        ],
        env=_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> str:
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return err


@pytest.fixture(scope="module")
def runs(workdir):
    """Runs ``a``, ``b`` and ``c`` of one run file side by side; ``c`` is SIGKILLed once its step-2 checkpoint
    is complete, then resumed with ``--resume latest`` while a fresh process reloads ``a`` (see FRESH)."""
    procs = {name: _train(workdir, name) for name in ("a", "b", "c")}
    marker = workdir / "c" / "checkpoints" / "latest"  # written (atomically) once a checkpoint is complete
    deadline = time.monotonic() + 300
    while not marker.exists() and procs["c"].poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    procs["c"].send_signal(signal.SIGKILL)
    procs["c"].communicate(timeout=60)
    out = {"killed_rc": procs["c"].returncode, "killed_final": (workdir / "c" / "final").exists()}
    out.update({name: _finish(procs[name]) for name in ("a", "b")})
    resume = _train(workdir, "c", "--resume", "latest")
    fresh = subprocess.Popen(
        [
            sys.executable,
            "-c",
            FRESH,
            str(workdir / "a" / "final"),
            _wav(workdir),
            PROMPT,
            str(workdir / "fresh.pt"),
        ],
        env=_env(workdir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out["resumed"] = _finish(resume)
    out["fresh"] = fresh.communicate(timeout=300)
    out["fresh_rc"] = fresh.returncode
    return out


def _wav(root) -> str:
    return str(root / "audio" / "7.wav")


def _weights(root, out: str) -> dict[str, torch.Tensor]:
    """Every saved tensor of the final model: ``model.safetensors`` and the PEFT adapter in
    ``llm_adapter/``."""
    final = root / out / "final"
    adapter = {
        f"llm_adapter/{k}": v
        for k, v in load_file(str(final / "llm_adapter" / "adapter_model.safetensors")).items()
    }
    return {**load_file(str(final / "model.safetensors")), **adapter}


FRESH = textwrap.dedent('''
    import sys, torch
    from mowe import MoWEAudioLLM
    from mowe.data.processor import MoWEProcessor
    from mowe.errors import ConfigError
    final, wav, prompt, dest = sys.argv[1:5]
    try:
        MoWEAudioLLM.from_pretrained(final)
    except ConfigError as e:
        print("REFUSED:", e)
    assert "my_parts" not in sys.modules, "the refusal came after importing the package"
    model = MoWEAudioLLM.from_pretrained(final, allow_components=["my_parts"]).eval()
    proc = MoWEProcessor.from_pretrained(final)
    batch = proc(text=prompt, audio=wav)
    with torch.no_grad():
        logits = model(batch["input_ids"], batch["waveforms"], batch["wave_lengths"],
                       attention_mask=batch["attention_mask"]).logits
    router = type(model.router).__module__ + "." + type(model.router).__name__
    torch.save({"logits": logits, "router": router}, dest)
''')


def test_custom_components_train_from_the_cli_and_reload_in_a_fresh_process(
    workdir, runs, monkeypatch, capsys
):
    final = workdir / "a" / "final"
    cfg = json.loads((final / "config.json").read_text())
    # The saved config names the components with their keyword arguments; common keys stay regular fields.
    assert cfg["router"]["component"] == "my_parts.DurationRouter" and cfg["router"]["kwargs"] == {
        "buckets": 3,
        "frames_per_bucket": 12,
    }
    assert (
        cfg["weak_encoders"]["conv25"]["kwargs"] == {"hop": 640, "out_dim": 8}
        and cfg["weak_encoders"]["conv25"]["freeze"] is False
    )
    saved = _weights(workdir, "a")
    assert "router.table.weight" in saved and saved["router.table.weight"].shape == (3, 3)
    # The stage log says what trained: both conv encoders by name, never the frozen built-in Whisper.
    start = [
        json.loads(x) for x in (workdir / "a" / "log.jsonl").read_text().splitlines() if "stage_start" in x
    ]
    assert [s["stage"] for s in start] == ["pool", "lora"]
    assert {"weak_encoders.conv25", "weak_encoders.conv50", "routers"} <= set(start[0]["trains"])
    assert "weak_encoders.whisper" not in start[0]["trains"]
    assert "stage 'pool': training" in runs["a"]

    wav = _wav(workdir)
    stdout, stderr = runs["fresh"]
    assert runs["fresh_rc"] == 0, stderr[-3000:]
    refusal = next(line for line in stdout.splitlines() if line.startswith("REFUSED:"))
    assert "'my_parts.Conv'" in refusal and "allow_components=['my_parts']" in refusal
    assert "--allow-components my_parts" in refusal
    fresh = torch.load(workdir / "fresh.pt", weights_only=True)
    assert fresh["router"] == "my_parts.DurationRouter"

    # The same model here (package on sys.path now) gives bit-identical logits, and holds the saved weights.
    monkeypatch.syspath_prepend(str(workdir / "pkgs"))
    from mowe import MoWEAudioLLM
    from mowe.data.processor import MoWEProcessor

    with pytest.raises(
        ConfigError, match=r"^model\.weak_encoders\.conv25: component 'my_parts\.Conv' is outside mowe"
    ):
        MoWEAudioLLM.from_pretrained(final, allow_components=["my_partsX", "other"])
    model = MoWEAudioLLM.from_pretrained(final, allow_components=["my_parts"]).eval()
    state = model.state_dict()

    def in_model(key: str) -> str:  # a PEFT adapter file's key -> the model's state-dict key
        if not key.startswith("llm_adapter/"):
            return key
        head, _, tail = key[len("llm_adapter/") :].rpartition(".")  # "...lora_A", "weight"
        return f"llm.{head}.default.{tail}"

    assert all(torch.equal(state[in_model(k)], v) for k, v in saved.items())
    proc = MoWEProcessor.from_pretrained(final)
    batch = proc(text=PROMPT, audio=wav)
    with torch.no_grad():
        logits = model(
            batch["input_ids"],
            batch["waveforms"],
            batch["wave_lengths"],
            attention_mask=batch["attention_mask"],
        ).logits
    assert torch.equal(logits, fresh["logits"])

    # mowe infer refuses without --allow-components (exit 2, naming the flag) and answers with it.
    args = [
        "infer",
        "--model",
        str(workdir / "a"),
        "--audio",
        wav,
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "2",
    ]
    assert main(args) == 2
    assert "--allow-components my_parts" in capsys.readouterr().err
    assert main([*args, "--allow-components", "my_parts"]) == 0


def test_two_cli_runs_and_a_killed_then_resumed_run_give_identical_weights(workdir, runs):
    a, b = _weights(workdir, "a"), _weights(workdir, "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert runs["killed_rc"] == -signal.SIGKILL and not runs["killed_final"], (
        "run c ended before it was killed"
    )
    log = [json.loads(x) for x in (workdir / "c" / "log.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "resume" for r in log)
    c = _weights(workdir, "c")
    assert c.keys() == a.keys() and all(torch.equal(c[k], a[k]) for k in a)

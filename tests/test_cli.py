"""The ``mowe`` command line end to end (train -> final model -> infer), run-file strictness, the examples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _audio_helpers import write_tone_wav

from mowe.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_TINY = os.path.join(ROOT, "examples", "run_tiny.yaml")
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _write_wav(path: str, freq: float, seconds: float = 0.5, sr: int = 16000) -> None:
    write_tone_wav(path, freq, seconds, sr=sr)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """12 real WAV files and a JSONL manifest (tone height -> answer)."""
    root = tmp_path_factory.mktemp("corpus")
    os.makedirs(root / "audio")
    names = ["low", "mid", "high"]
    with open(root / "train.jsonl", "w") as f:
        for i in range(12):
            c = i % 3
            _write_wav(str(root / "audio" / f"{i}.wav"), 300 + 500 * c, seconds=0.4 + 0.05 * i)
            task = "sound_event" if i % 2 else "asr"
            f.write(
                json.dumps(
                    {
                        "id": f"ex{i}",
                        "audio": f"audio/{i}.wav",
                        "instruction": "Which tone is it?",
                        "answer": names[c],
                        "task": task,
                    }
                )
                + "\n"
            )
    return root


def _mowe(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "mowe", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
        check=False,
    )


def test_train_then_infer_from_the_command_line(corpus, tmp_path):
    out = tmp_path / "run"
    res = _mowe(
        "train",
        "--config",
        RUN_TINY,
        "--set",
        f"data.train={corpus / 'train.jsonl'}",
        "--set",
        f"train.output_dir={out}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    final = out / "final"
    for f in ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json"):
        assert (final / f).is_file(), f
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs if "loss" in r] == [1, 2, 3, 4]
    assert (out / "checkpoints" / "step-4" / "trainer_state.json").is_file()

    res = _mowe(
        "infer",
        "--model",
        str(out),
        "--audio",
        str(corpus / "audio" / "1.wav"),
        "--prompt",
        "Which tone is it?",
        "--max-new-tokens",
        "4",
        "--num-beams",
        "2",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    # The command prints exactly what the Python API generates for the same inputs (a random model's
    # tokens can decode to any characters, so compare strings rather than counting lines).
    import torch

    from mowe import MoWEAudioLLM
    from mowe.data.processor import MoWEProcessor

    model = MoWEAudioLLM.from_pretrained(out / "final").eval()
    proc = MoWEProcessor.from_pretrained(out / "final")
    batch = proc(text="Which tone is it?", audio=str(corpus / "audio" / "1.wav"))
    with torch.no_grad():
        ids = model.generate(
            batch["input_ids"],
            batch["waveforms"],
            batch["wave_lengths"],
            attention_mask=batch["attention_mask"],
            max_new_tokens=4,
            num_beams=2,
        )
    assert res.stdout == proc.decode(ids)[0] + "\n"
    assert _warnings(res.stderr) == []

    # mowe eval on the same model: no warning either (dependencies' own deprecations are filtered, mowe's
    # calls use current APIs), only its progress bar on stderr.
    res = _mowe(
        "eval",
        "--model",
        str(out / "final"),
        "--manifest",
        str(corpus / "train.jsonl"),
        "--out",
        str(tmp_path / "eval"),
        "--max-new-tokens",
        "2",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert _warnings(res.stderr) == [] and (tmp_path / "eval" / "eval.json").is_file()


def _warnings(stderr: str) -> list[str]:
    """Lines of a command's stderr that report a warning (Python's warnings module, transformers' logger)."""
    return [
        ln
        for ln in stderr.splitlines()
        if any(w in ln for w in ("Warning", "warnings.warn", "deprecated", "[transformers]", "WARNING"))
    ]


def test_unknown_key_in_the_run_file_exits_2_naming_it(tmp_path, capsys):
    import yaml

    run = yaml.safe_load(Path(RUN_TINY).read_text())
    run["train"]["learning_rate"] = 1e-3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(run))
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "'learning_rate'" in err and "Traceback" not in err

    run = yaml.safe_load(Path(RUN_TINY).read_text())
    run["optimizer"] = {}
    bad.write_text(yaml.safe_dump(run))
    res = _mowe("train", "--config", str(bad), timeout=120)
    assert res.returncode == 2 and "'optimizer'" in res.stderr and "Traceback" not in res.stderr


def test_example_custom_encoder_pool_runs():
    res = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "custom_encoder_pool.py"), "--steps", "2"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "trained 2 steps" in res.stdout

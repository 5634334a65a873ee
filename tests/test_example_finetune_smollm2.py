"""``examples/finetune_smollm2.py`` runs as a user would run it: the packaged SmolLM2, Whisper tiny.en, GE2E
and CREPE from their wheels, a JSONL manifest of espeak-ng speech, a few training steps, evaluation, save +
   reload, and one
question to ``mowe serve`` through the real ``openai`` client."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
SENTENCES = ["the cat sat on the mat", "open the window please", "seven green apples", "it is raining today"]


def test_finetune_smollm2_example_trains_evaluates_reloads_and_serves(tmp_path):
    (tmp_path / "clips").mkdir()
    with open(tmp_path / "train.jsonl", "w") as f:
        for i, text in enumerate(SENTENCES):
            subprocess.run(
                ["espeak-ng", "-v", "en-us", "-w", str(tmp_path / "clips" / f"{i}.wav"), text],
                check=True,
                capture_output=True,
            )
            f.write(
                json.dumps(
                    {
                        "id": f"s{i}",
                        "audio": f"clips/{i}.wav",
                        "instruction": "Transcribe the speech.",
                        "answer": text,
                        "task": "asr",
                    }
                )
                + "\n"
            )
    out = tmp_path / "run"
    res = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "examples", "finetune_smollm2.py"),
            "--train",
            str(tmp_path / "train.jsonl"),
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--max-new-tokens",
            "6",
            "--output-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    final = out / "final"
    assert summary["final_dir"] == str(final) and summary["metrics"]["asr"]["n"] == 4
    assert summary["reloaded_answer"] == summary["served_answer"]  # one clip, greedy, in-process and served
    config = json.loads((final / "config.json").read_text())
    assert (
        config["llm"]["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
        and config["llm"]["vocab_size"] == 49153
    )
    assert set(config["weak_encoders"]) == {"speaker", "pitch"} and config["lora"]["target_modules"] == [
        "q_proj",
        "v_proj",
    ]
    assert (final / "llm_adapter" / "adapter_config.json").is_file() and (
        final / "processor_config.json"
    ).is_file()
    assert not list(final.rglob("*.gguf"))
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs if "loss" in r] == [1, 2]

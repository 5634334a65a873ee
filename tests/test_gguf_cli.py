"""``mowe train`` / ``mowe infer`` on an LLM read from a GGUF file: ``tokenizer: llm`` takes the file's own
tokenizer (+ ``<|audio|>``, with ``llm.vocab_size`` grown to fit), ``model.llm.gguf_file`` works in a run file
   and through
``--set``, and a missing or damaged file is one line naming it with exit code 4."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from _audio_helpers import write_tone_wav
from _gguf_helpers import GGUF_NAME, write_tiny_gguf
from conftest import WHISPER_TINY

from mowe.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
PROMPT = "Which tone is it?"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny GGUF LLM in its own folder, 8 tone clips with a manifest, and a run file that names the
    folder."""
    root = tmp_path_factory.mktemp("gguf-cli")
    write_tiny_gguf(root / "llm")
    (root / "audio").mkdir()
    with open(root / "train.jsonl", "w") as f:
        for i in range(8):
            write_tone_wav(root / "audio" / f"{i}.wav", 300 + 400 * (i % 2), 0.4 + 0.05 * i)
            f.write(
                json.dumps(
                    {
                        "id": f"t{i}",
                        "audio": f"audio/{i}.wav",
                        "instruction": PROMPT,
                        "answer": ["low", "high"][i % 2],
                        "task": "tone",
                    }
                )
                + "\n"
            )
    run = {
        "model": {
            "strong": {"family": "whisper", "preset": "tiny", "pad_to_30s": False, "overrides": WHISPER_TINY},
            "connector": {"kind": "stack", "options": {"stack": 4}},
            "llm": {"name_or_path": str(root / "llm"), "gguf_file": GGUF_NAME, "train": "lora"},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        },
        "tokenizer": "llm",
        "data": {"train": "train.jsonl", "max_audio_seconds": 5},
        "train": {"output_dir": "run", "batch_size": 4, "log_every": 1, "seed": 0, "progress": False},
        "stages": [{"name": "mowe", "train": ["connector", "lora"], "steps": 2, "lr": 1e-3}],
    }
    (root / "run.yaml").write_text(yaml.safe_dump(run))
    return root


def test_train_and_infer_on_a_gguf_llm_with_its_own_tokenizer(setup, capsys):
    config = str(setup / "run.yaml")
    assert main(["train", "--config", config]) == 0, capsys.readouterr().err[-2000:]
    final = setup / "run" / "final"
    saved = json.loads((final / "config.json").read_text())
    # <|audio|> takes id 275, past the LLM's 275 rows: it needs no row (its embedding is never looked up)
    assert saved["llm"]["gguf_file"] == GGUF_NAME and saved["llm"]["vocab_size"] is None
    assert saved["audio_token_id"] == 275 and not list(final.rglob("*.gguf"))
    logs = [json.loads(line) for line in (setup / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs if "loss" in r] == [1, 2]

    capsys.readouterr()
    wav = str(setup / "audio" / "1.wav")
    assert (
        main(
            [
                "infer",
                "--model",
                str(setup / "run"),
                "--audio",
                wav,
                "--prompt",
                PROMPT,
                "--max-new-tokens",
                "3",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    from mowe import MoWEAudioLLM
    from mowe.data.processor import MoWEProcessor

    model, proc = MoWEAudioLLM.from_pretrained(final).eval(), MoWEProcessor.from_pretrained(final)
    assert len(proc.tokenizer) == 276 and proc.audio_token_id == 275
    batch = proc(text=PROMPT, audio=wav)
    with torch.no_grad():
        ids = model.generate(
            batch["input_ids"],
            batch["waveforms"],
            batch["wave_lengths"],
            attention_mask=batch["attention_mask"],
            max_new_tokens=3,
        )
    assert printed == proc.decode(ids)[0] + "\n"


@pytest.mark.parametrize(
    "kind,says",
    [
        ("missing.gguf", "the GGUF file does not exist"),
        ("cut.gguf", "a truncated GGUF file"),
        ("text.gguf", "not a GGUF file"),
    ],
)
def test_train_on_a_broken_gguf_file_is_one_line_exit_4(setup, tmp_path, capsys, kind, says):
    data = (setup / "llm" / GGUF_NAME).read_bytes()
    llm = tmp_path / "llm"
    llm.mkdir()
    if kind == "cut.gguf":
        (llm / kind).write_bytes(data[: len(data) - 1000])
    elif kind == "text.gguf":
        (llm / kind).write_text("not a model\n")
    code = main(
        [
            "train",
            "--config",
            str(setup / "run.yaml"),
            "--set",
            f"model.llm.name_or_path={llm}",
            "--set",
            f"model.llm.gguf_file={kind}",
            "--set",
            f"train.output_dir={tmp_path / 'run'}",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4 and len(err) == 1 and err[0].startswith("mowe train: error: "), err
    assert f"{llm / kind}: {says}" in err[0]
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_tokenizer_llm_needs_an_llm_with_a_source(setup, capsys):
    code = main(
        [
            "train",
            "--config",
            str(setup / "run.yaml"),
            "--set",
            "model.llm.name_or_path=null",
            "--set",
            "model.llm.gguf_file=null",
            "--set",
            "model.llm.config={model_type: llama, hidden_size: 64}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "tokenizer: 'llm'" in err and "model.llm.name_or_path" in err, err


def test_infer_and_serve_after_the_gguf_file_was_damaged_are_one_line_exit_4(setup, tmp_path):
    llm = tmp_path / "llm"
    shutil.copytree(setup / "llm", llm)
    assert (
        main(
            [
                "train",
                "--config",
                str(setup / "run.yaml"),
                "--set",
                f"model.llm.name_or_path={llm}",
                "--set",
                f"train.output_dir={tmp_path / 'run'}",
                "--set",
                "stages=[{name: c, train: [connector], steps: 1, lr: 1e-3}]",
            ]
        )
        == 0
    )
    data = (llm / GGUF_NAME).read_bytes()
    (llm / GGUF_NAME).write_bytes(data[: len(data) // 3])
    for command in (
        [
            "infer",
            "--model",
            str(tmp_path / "run"),
            "--audio",
            str(setup / "audio" / "0.wav"),
            "--prompt",
            PROMPT,
        ],
        ["serve", str(tmp_path / "run" / "final"), "--port", "0"],
    ):
        res = subprocess.run(
            [sys.executable, "-m", "mowe", *command],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
            check=False,
        )
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 4 and len(lines) == 1, res.stderr[-2000:]
        assert lines[0].startswith(f"mowe {command[0]}: error: {llm / GGUF_NAME}: a truncated GGUF file (")

"""The evaluation harness: batched generation, per-task metrics, JSON + Markdown (issue 4, must-show 2)."""

import json

import numpy as np
import soundfile as sf
import torch
from conftest import LLAMA_TINY, WHISPER_TINY

from mowe import MoWEAudioLLM, MoWEConfig
from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig
from mowe.data.manifest import ManifestDataset
from mowe.data.processor import MoWEProcessor
from mowe.data.tokenizer import train_bpe_tokenizer
from mowe.evaluation.evaluate import evaluate_model, write_report


def _corpus(tmp_path):
    rows = []
    for i, (task, answer) in enumerate(
        [
            ("sound_event", "tone"),
            ("sound_event", "noise"),
            ("asr", "one two"),
            ("gender", "male"),
            ("asr", "three"),
        ]
    ):
        t = np.arange(16000 + 1600 * i) / 16000
        sf.write(
            tmp_path / f"c{i}.wav", (0.3 * np.sin(2 * np.pi * 300 * (i + 1) * t)).astype(np.float32), 16000
        )
        rows.append(
            {
                "id": f"x{i}",
                "audio": f"c{i}.wav",
                "instruction": f"What is it? {task}",
                "answer": answer,
                "task": task,
            }
        )
    man = tmp_path / "test.jsonl"
    man.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return man, rows


def _model_and_processor(rows, tmp_path):
    tok = train_bpe_tokenizer([r["instruction"] + " " + r["answer"] for r in rows] * 5, vocab_size=300)
    proc = MoWEProcessor(tok)
    cfg = MoWEConfig(
        strong=EncoderConfig("whisper", preset="tiny", overrides=WHISPER_TINY, pad_to_30s=False),
        weak_encoders={
            "w": EncoderConfig("whisper", preset="tiny", overrides=WHISPER_TINY, pad_to_30s=False)
        },
        connector=ConnectorConfig("stack", {"stack": 4}),
        llm=LLMConfig(config={**LLAMA_TINY, "vocab_size": len(tok)}),
        audio_token_id=proc.audio_token_id,
    )
    return MoWEAudioLLM.from_config(cfg), proc


def test_evaluate_scores_what_the_model_generates(tmp_path, monkeypatch):
    man, rows = _corpus(tmp_path)
    model, proc = _model_and_processor(rows, tmp_path)
    ds = ManifestDataset(man)
    # Make the "model" answer exactly the reference for sound events and wrongly elsewhere, through the real
    # generate -> decode path, so the metrics are checked on known predictions.
    answers = {r["id"]: (r["answer"] if r["task"] == "sound_event" else "nope") for r in rows}
    order = iter([r["id"] for r in rows])

    def fake_generate(*args, **kwargs):
        ids = [
            proc.tokenizer(answers[next(order)], add_special_tokens=False)["input_ids"]
            for _ in range(kwargs["input_ids"].shape[0])
        ]
        return proc.pad(ids, padding_side="right")["input_ids"]

    monkeypatch.setattr(model, "generate", fake_generate)
    res = evaluate_model(model, proc, ds, batch_size=2, progress=False, task_metrics={"asr": "wer"})
    assert res.metrics["sound_event"] == {"n": 2, "accuracy": 1.0}
    assert res.metrics["gender"]["accuracy"] == 0.0
    assert res.metrics["asr"]["wer"] == 1.0  # every reference word wrong: 3 substitutions/deletions of 3
    assert sum(sum(c) for c in res.router_counts.values()) == 5 and res.encoder_names == ["w"]
    table = write_report({"tiny": res}, tmp_path / "rep")
    assert "| sound_event (acc ↑) | 1.000 |" in table
    saved = json.loads((tmp_path / "rep" / "eval.json").read_text())
    assert len(saved["tiny"]["predictions"]) == 5


def test_mowe_eval_command_on_a_saved_model(tmp_path):
    import subprocess
    import sys

    man, rows = _corpus(tmp_path)
    model, proc = _model_and_processor(rows, tmp_path)
    model.save_pretrained(tmp_path / "model")
    proc.save_pretrained(tmp_path / "model")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mowe",
            "eval",
            "--model",
            str(tmp_path / "model"),
            "--manifest",
            str(man),
            "--out",
            str(tmp_path / "out"),
            "--max-new-tokens",
            "3",
            "--metric",
            "asr=wer",
            "--spell-digits",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    md = (tmp_path / "out" / "eval.md").read_text()
    assert "| task | model |" in md and "asr (WER ↓)" in md and "sound_event (acc ↑)" in md
    assert torch.isfinite(
        torch.tensor(
            json.loads((tmp_path / "out" / "eval.json").read_text())["model"]["metrics"]["asr"]["wer"]
        )
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mowe",
            "eval",
            "--model",
            str(tmp_path / "model"),
            "--manifest",
            str(man),
            "--metric",
            "asr=cer",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "asr=cer" in r.stderr and "Traceback" not in r.stderr


def test_router_counts_count_windows_when_routing_is_per_window(tmp_path, monkeypatch):
    man, rows = _corpus(tmp_path)
    model, proc = _model_and_processor(rows, tmp_path)
    model.window_seconds = 0.5  # 25 strong frames: clips of 1.0-1.4 s have 2 or 3 windows
    monkeypatch.setattr(
        model,
        "generate",
        lambda *a, **k: proc.pad([[1]] * k["input_ids"].shape[0], padding_side="right")["input_ids"],
    )
    res = evaluate_model(model, proc, ManifestDataset(man), batch_size=2, progress=False)
    assert sum(sum(c) for c in res.router_counts.values()) == 2 + 3 + 3 + 3 + 3

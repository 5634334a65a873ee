"""Must-show 4: the audio check flags a model that ignores its audio and passes one that uses it.

All three models are a real tiny MoWEAudioLLM run through the real eval path (run_eval -> evaluate_model -> the
collator -> encode_audio -> generate -> decode -> scoring); only the answer step of ``generate`` is fixed so the
behaviour is known: the listening model answers from the waveform it is handed (zero-crossing rate: a high or a
low tone), the deaf ones from nothing (a constant) or from the prompt's token ids."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import LLAMA_TINY, WHISPER_TINY

from mowe import MoWEAudioLLM, MoWEConfig
from mowe.config import ConnectorConfig, EncoderConfig, LLMConfig
from mowe.data.manifest import ManifestDataset
from mowe.data.processor import MoWEProcessor
from mowe.data.tokenizer import train_bpe_tokenizer
from mowe.evaluation.audio_check import same_answer_tasks
from mowe.evaluation.eval_run import run_eval, write_eval_run

N = 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tones")
    rows = []
    for i in range(N):
        high = i % 2 == 1
        t = np.arange(4000 + 160 * i) / 16000
        sf.write(root / f"{i}.wav", (0.4 * np.sin(2 * np.pi * (2000 if high else 200) * t)).astype(np.float32), 16000)
        rows.append({"id": f"t{i}", "audio": f"{i}.wav", "instruction": f"Is tone {i} high or low?",
                     "answer": "high" if high else "low", "task": "pitch"})
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = train_bpe_tokenizer([r["instruction"] + " " + r["answer"] for r in rows] * 3, vocab_size=300)
    proc = MoWEProcessor(tok)
    cfg = MoWEConfig(strong=EncoderConfig("whisper", preset="tiny", overrides=WHISPER_TINY, pad_to_30s=False),
                     connector=ConnectorConfig("stack", {"stack": 4}),
                     llm=LLMConfig(config={**LLAMA_TINY, "vocab_size": len(tok)}), audio_token_id=proc.audio_token_id)
    torch.manual_seed(0)
    return root, ManifestDataset(root / "test.jsonl"), MoWEAudioLLM.from_config(cfg), proc


def _answering(model, proc, monkeypatch, answer):
    def generate(*args, **kwargs):
        words = [answer(kwargs["waveforms"][b, : int(kwargs["wave_lengths"][b])], kwargs["input_ids"][b])
                 for b in range(kwargs["input_ids"].shape[0])]
        ids = [proc.tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
        return proc.pad(ids, padding_side="right")["input_ids"]

    monkeypatch.setattr(model, "generate", generate)


def _listens(wave, _ids):
    crossings = (torch.sign(wave[1:]) != torch.sign(wave[:-1])).float().mean()
    return "high" if crossings > 0.1 else "low"


@pytest.mark.parametrize("control", ["shuffled", "silent"])
def test_a_model_that_uses_its_audio_is_not_flagged(setup, monkeypatch, tmp_path, control):
    _root, ds, model, proc = setup
    _answering(model, proc, monkeypatch, _listens)
    run = run_eval(model, proc, ds, audio_control=control, batch_size=4, progress=False)
    assert run.result.metrics["pitch"]["accuracy"] == 1.0
    gap = run.check.gaps["pitch"]["accuracy"]
    assert gap.diff >= 0.5 and gap.low > 0 and not run.check.flagged, run.check.warnings
    text = write_eval_run(run, tmp_path)
    assert "audio check: the real run is ahead" in text and f"real - {control}" in text
    saved = json.loads((tmp_path / "audio_check.json").read_text())
    assert saved["flagged"] is False and saved["gaps"]["pitch"]["accuracy"]["n"] == N
    assert set(json.loads((tmp_path / "eval.json").read_text())) == {"model", f"model ({control} audio)"}


def test_a_model_that_ignores_its_audio_is_flagged(setup, monkeypatch):
    _root, ds, model, proc = setup
    _answering(model, proc, monkeypatch, lambda wave, ids: "low")  # a constant answer
    run = run_eval(model, proc, ds, audio_control="shuffled", batch_size=4, progress=False)
    assert run.check.flagged
    assert any("not ahead" in w for w in run.check.warnings)
    assert any("every example got the same answer ('low')" in w for w in run.check.warnings)

    _answering(model, proc, monkeypatch, lambda wave, ids: "high" if int(ids.sum()) % 2 else "low")  # the prompt
    run = run_eval(model, proc, ds, audio_control="shuffled", batch_size=4, progress=False)
    assert run.check.gaps["pitch"]["accuracy"].diff == 0.0  # the same answers with any audio
    assert run.check.flagged and all("same answer" not in w for w in run.check.warnings)


def test_same_answer_needs_two_distinct_references():
    recs = [{"task": "a", "answer": x, "prediction": "yes"} for x in ("yes", "no")]
    recs += [{"task": "b", "answer": "yes", "prediction": "yes"}] * 2
    assert same_answer_tasks(recs) == ["a"]


def test_mowe_eval_command_with_a_benchmark_format_and_a_control(setup, tmp_path):
    root, _ds, model, proc = setup
    model.save_pretrained(tmp_path / "model")
    proc.save_pretrained(tmp_path / "model")
    (root / "bench.json").write_text(json.dumps([
        {"id": f"b{i}", "audio_id": f"{i}.wav", "question": "Is the tone high or low?", "choices": ["high", "low"],
         "answer": "high" if i % 2 else "low", "task": "pitch"} for i in range(6)]))
    r = subprocess.run([sys.executable, "-m", "mowe", "eval", "--model", str(tmp_path / "model"), "--data",
                        str(root / "bench.json"), "--format", "mmau", "--audio-control", "shuffled", "--out",
                        str(tmp_path / "out"), "--max-new-tokens", "2", "--batch-size", "3", "--update-card"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| mmau task | n | accuracy | 95% interval | no option | several options | wrong |" in r.stdout
    bench = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    assert bench["real"]["all"]["n"] == 6 and set(bench) == {"real", "control"}
    check = json.loads((tmp_path / "out" / "audio_check.json").read_text())
    assert check["control"] == "shuffled" and check["flagged"] is True  # a random model does not listen
    assert "warning: task 'pitch'" in r.stdout
    from huggingface_hub import ModelCard  # the results reach the model card's model-index

    card = ModelCard.load(tmp_path / "model" / "README.md")
    res = {(r.task_name, r.metric_type): r for r in card.data.eval_results}
    assert res[("all", "accuracy")].metric_value == bench["real"]["all"]["accuracy"]["value"]
    assert res[("all", "accuracy")].dataset_name == "bench.json" and "(mmau scoring), n=6" in res[("all", "accuracy")].metric_name


def test_mowe_eval_command_on_a_hugging_face_dataset(setup, tmp_path, capsys):
    from mowe.cli import main
    from mowe.data.export import manifests_to_dataset

    root, _ds, model, proc = setup
    model.save_pretrained(tmp_path / "model")
    proc.save_pretrained(tmp_path / "model")
    dd = manifests_to_dataset(root / "test.jsonl", tmp_path / "hf")
    dd["test"].rename_column("answer", "label").save_to_disk(str(tmp_path / "renamed"))
    args = ["eval", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "renamed")]
    assert main([*args, "--column", "answer=label", "--column", "task==tones", "--out", str(tmp_path / "out"),
                 "--max-new-tokens", "2", "--batch-size", "8"]) == 0
    saved = json.loads((tmp_path / "out" / "eval.json").read_text())["model"]
    assert saved["metrics"]["tones"]["n"] == N and {p["answer"] for p in saved["predictions"]} == {"high", "low"}
    capsys.readouterr()
    assert main(args) == 2  # the column is not there: one line naming it
    err = capsys.readouterr().err
    assert "answer -> 'answer'" in err and "Traceback" not in err

"""Must-show 4: the audio check flags a model that ignores its audio and passes one that uses it.

All three models are a real tiny MoWEAudioLLM run through the real eval path (run_eval -> evaluate_model ->
the collator -> encode_audio -> generate -> decode -> scoring); only the answer step of ``generate`` is fixed
so the behaviour is known: the listening model answers from the waveform it is handed (zero-crossing rate: a
high or a low tone), the deaf ones from nothing (a constant) or from the prompt's token ids."""

from __future__ import annotations

import json

import pytest
import torch
from _eval_helpers import N, tone_setup

from mowe.evaluation.audio_check import same_answer_tasks
from mowe.evaluation.eval_run import run_eval, write_eval_run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tone_setup(tmp_path_factory.mktemp("tones"))


def _answering(model, proc, monkeypatch, answer):
    def generate(*args, **kwargs):
        words = [
            answer(kwargs["waveforms"][b, : int(kwargs["wave_lengths"][b])], kwargs["input_ids"][b])
            for b in range(kwargs["input_ids"].shape[0])
        ]
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

    _answering(
        model, proc, monkeypatch, lambda wave, ids: "high" if int(ids.sum()) % 2 else "low"
    )  # the prompt
    run = run_eval(model, proc, ds, audio_control="shuffled", batch_size=4, progress=False)
    assert run.check.gaps["pitch"]["accuracy"].diff == 0.0  # the same answers with any audio
    assert run.check.flagged and all("same answer" not in w for w in run.check.warnings)


def test_same_answer_needs_two_distinct_references():
    recs = [{"task": "a", "answer": x, "prediction": "yes"} for x in ("yes", "no")]
    recs += [{"task": "b", "answer": "yes", "prediction": "yes"}] * 2
    assert same_answer_tasks(recs) == ["a"]


def test_trained_models_one_that_listens_and_one_trained_deaf(tmp_path):
    """No fixed answers: the same tiny model and recipe trained twice on the tone set, once with its audio and
    once with the audio silenced (AudioControl as training data). The first learns from the clips and passes
    the check; the second can only use the prompt and is flagged."""
    from mowe.curriculum import Stage
    from mowe.data.collator import MoWECollator
    from mowe.evaluation.controls import AudioControl
    from mowe.training.trainer import TrainConfig, Trainer

    checks = {}
    for name in ("listens", "deaf"):
        (tmp_path / name).mkdir()
        _root, ds, model, proc = tone_setup(tmp_path / name)
        train_set = ds if name == "listens" else AudioControl(ds, "silent")
        Trainer(
            model,
            train_set,
            config=TrainConfig(
                output_dir=str(tmp_path / f"run_{name}"),
                batch_size=8,
                save_every=0,
                progress=False,
                save_final=False,
            ),
            stages=[Stage("s", ("connector", "lora", "strong_encoder"), 100, 6e-3)],
            collate_fn=MoWECollator(proc, train=True),
        ).train()
        checks[name] = run_eval(
            model, proc, ds, audio_control="shuffled", batch_size=8, progress=False, max_new_tokens=3
        )
    listens, deaf = checks["listens"], checks["deaf"]
    assert listens.result.metrics["pitch"]["accuracy"] >= 0.875 and not listens.check.flagged, (
        listens.check.warnings
    )
    assert deaf.check.flagged and any("not ahead" in w for w in deaf.check.warnings)

"""Must-show 5: save_pretrained / push_to_hub write a README.md model card mowe generates: what the model is
built from, the training data, and the evaluation results as a model-index that huggingface_hub's ModelCard
parses."""

from __future__ import annotations

import dataclasses

import torch
from conftest import tiny_config
from huggingface_hub import ModelCard

import mowe.hf.saving as saving
from mowe import MoWEAudioLLM
from mowe.config import EncoderConfig, LLMConfig
from mowe.evaluation.eval_run import EvalRun, card_results
from mowe.evaluation.evaluate import EvalResult
from mowe.hf.model_card import CardInfo, CardResult, model_card


def _model():
    torch.manual_seed(0)
    return MoWEAudioLLM.from_config(tiny_config())


def _result():
    recs = [
        {
            "id": f"x{i}",
            "task": "gender",
            "answer": "male",
            "prediction": "male" if i < 3 else "female",
            "instruction": "q",
        }
        for i in range(4)
    ]
    return EvalRun("m", EvalResult(recs, {"gender": {"n": 4, "accuracy": 0.75}}))


def test_saved_card_lists_the_parts_the_data_and_the_results(tmp_path):
    model = _model()
    model.card_info.training_data = ["corpus/train.jsonl", "someone/audio-qa"]
    model.card_info.add_results(card_results(_result(), dataset="corpus/test.jsonl", split="test"))
    model.card_info.add_results(
        [CardResult("mmau-test-mini.json", "all", "accuracy", 0.5, 8, [0.125, 0.875], scoring="mmau")]
    )
    model.save_pretrained(tmp_path / "my-model")
    card = ModelCard.load(tmp_path / "my-model" / "README.md")
    assert card.data.library_name == "mowe" and card.data.datasets == [
        "corpus/train.jsonl",
        "someone/audio-qa",
    ]
    res = {(r.dataset_name, r.task_name, r.metric_type): r for r in card.data.eval_results}
    gender = res[("corpus/test.jsonl", "gender", "accuracy")]
    assert gender.metric_value == 0.75 and gender.dataset_split == "test" and "n=4" in gender.metric_name
    assert "95% CI [" in gender.metric_name
    assert res[("mmau-test-mini.json", "all", "accuracy")].metric_value == 0.5
    assert card.data.model_name == "my-model"
    text = card.text
    for part in (
        "strong encoder",
        "weak encoder `whisper_a`",
        "weak encoder `hubert_b`",
        "hubert",
        "router",
        "top-1 of 4",
        "connector",
        "LLM",
        "LoRA",
        "r=8",
        "corpus/train.jsonl",
        "| gender | accuracy | 0.750",
    ):
        assert part in text, part
    again = MoWEAudioLLM.from_pretrained(tmp_path / "my-model")  # the card info travels with the model
    assert again.card_info.training_data == model.card_info.training_data
    assert [r.task for r in again.card_info.results] == ["gender", "all"]


def test_card_names_sources_and_a_model_without_results():
    cfg = dataclasses.replace(
        tiny_config(),
        strong=EncoderConfig("whisper", name_or_path="openai/whisper-large-v3"),
        llm=LLMConfig(name_or_path="Qwen/Qwen2-7B-Instruct"),
    )
    text = model_card(cfg, CardInfo(), model_name="x")
    card = ModelCard(text)
    assert card.data.base_model == "Qwen/Qwen2-7B-Instruct" and not card.data.eval_results
    assert "openai/whisper-large-v3" in text and "No results recorded" in text


def test_push_to_hub_uploads_the_card_named_after_the_repo(tmp_path, monkeypatch):
    seen = {}

    def fake_push(folder, repo_id, **kw):  # the upload itself needs the network; the folder is what it sends
        seen["readme"] = open(f"{folder}/README.md").read()
        seen["repo"] = repo_id

    monkeypatch.setattr(saving, "push_folder", fake_push)
    model = _model()
    model.card_info.add_results([CardResult("d", "t", "wer", 0.25, 10, [0.1, 0.4])])
    model.push_to_hub("someone/mowe-tiny")
    card = ModelCard(seen["readme"])
    assert seen["repo"] == "someone/mowe-tiny" and card.data.model_name == "someone/mowe-tiny"
    assert card.data.eval_results[0].metric_type == "wer" and card.data.eval_results[0].metric_value == 0.25

"""Tests for mowe.evaluation.metrics."""

from __future__ import annotations

import pytest

from mowe.demo.corpus import TASK_METRICS, score_normalize
from mowe.evaluation.metrics import (
    accuracy,
    bleu,
    evaluate_predictions,
    format_markdown_table,
    is_correct,
    normalize_text,
    part_accuracy,
    word_error_rate,
)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("  Hello,   WORLD!! ", "hello world"),
        ("3", "3"),
        ("314", "314"),
        ("I have 2 dogs.", "i have 2 dogs"),
        ("don't stop", "dont stop"),
        ("well-known: yes", "well known yes"),
        ("", ""),
        ("Ünïcode ÉCOLE", "ünïcode école"),
    ],
)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


def test_normalize_text_can_spell_digits():
    assert normalize_text("314", spell_digits=True) == "three one four"
    assert normalize_text("I have 2 dogs.", spell_digits=True) == "i have two dogs"


def test_wer_known_values():
    assert word_error_rate(["a b c d"], ["a x c"]) == pytest.approx(0.5)  # 1 sub + 1 del over 4
    assert word_error_rate("a b c d", "a b c d") == 0.0
    assert word_error_rate(["three one four"], ["3 1 4"]) == 1.0  # digits kept by default
    assert word_error_rate(["three one four"], ["3 1 4"], normalize=score_normalize) == 0.0  # the demo's
    assert word_error_rate(["Hello, world."], ["hello world"]) == 0.0
    # corpus level: (1 + 0 + 2 insertions) / (4 + 2) words
    assert word_error_rate(["a b c d", "x y"], ["a x c d", "x y z w"]) == pytest.approx(3 / 6)
    assert isinstance(word_error_rate(["a"], ["b"]), float)


def test_wer_empty_references_and_hypotheses():
    assert word_error_rate(["a b"], [""]) == pytest.approx(1.0)
    # an empty reference contributes its hypothesis words as insertions, no reference words
    assert word_error_rate(["a b", ""], ["a b", "c"]) == pytest.approx(0.5)
    assert word_error_rate([""], [""]) == 0.0
    assert word_error_rate([""], ["oops"]) == 1.0
    assert word_error_rate([], []) == 0.0
    with pytest.raises(ValueError, match="length"):
        word_error_rate(["a"], ["a", "b"])


@pytest.mark.parametrize(
    "ref, hyp, ok",
    [
        ("male", "male", True),
        ("male", "Male.", True),
        ("male", "  MALE  ", True),
        ("male", "male, the voice is low", True),  # leads with the answer, then a clause
        ("male", '"male"', True),
        ("male", "female", False),
        ("male", "male or female", False),  # hedging is wrong
        ("male", "The speaker is male.", False),  # must lead with the answer
        ("male", "", False),
        ("three one four", "3 1 4", True),
        ("three one four", "314", True),
        ("seven", "7.", True),
        ("slow", "slowly", False),
        ("", "", True),
        ("", "anything", False),
    ],
)
def test_is_correct(ref, hyp, ok):
    assert is_correct(ref, hyp, normalize=score_normalize) is ok
    if not any(c.isdigit() for c in hyp):  # without digits, the default normaliser agrees
        assert is_correct(ref, hyp) is ok


def test_accuracy():
    assert accuracy(["male", "female", "fast", "minor"], ["Male.", "male", "fast!", "major"]) == 0.5
    assert accuracy([], []) == 0.0


def test_bleu():
    s = "the quick brown fox jumps over the lazy dog"
    assert bleu([s], [s]) == pytest.approx(100.0)
    assert bleu([s, "hello there my friend"], [s, "hello there my friend"]) == pytest.approx(100.0)
    assert bleu([s], ["completely unrelated words here now"]) < 10
    assert 0 < bleu([s], ["the quick brown fox jumps over a lazy cat"]) < 100


def test_co_reasoning_partial_credit():
    assert part_accuracy("siren, seven", "siren, seven") == (1.0, True)
    assert part_accuracy("siren, seven", "Siren, 7.", normalize=score_normalize) == (1.0, True)
    assert part_accuracy("siren, seven", "siren, eight") == (0.5, False)
    assert part_accuracy("siren, seven", "tone, seven") == (0.5, False)
    assert part_accuracy("siren, seven", "siren") == (0.5, False)
    assert part_accuracy("siren, seven", "seven, siren") == (0.0, False)  # order matters
    assert part_accuracy("siren, seven", "siren, seven, eight") == (1.0, False)  # extra parts not exact


def test_evaluate_predictions_per_task():
    records = [
        {"task": "asr", "answer": "a b c d", "prediction": "a x c"},
        {"task": "asr", "answer": "three one", "prediction": "3 1"},
        {"task": "gender", "answer": "male", "prediction": "Male."},
        {"task": "gender", "answer": "female", "prediction": "male"},
        {"task": "co_reasoning", "answer": "siren, seven", "prediction": "siren, seven"},
        {"task": "co_reasoning", "answer": "tone, red", "prediction": "tone, blue"},
        {"task": "translation", "answer": "le chat noir", "prediction": "le chat noir"},
        {"task": "ast_en_de", "answer": "die katze", "prediction": "die katze"},
        {"task": "chord", "answer": "minor", "prediction": None},
    ]
    metrics = {"asr": "wer", "co_reasoning": "parts", "translation": "bleu", "ast_en_de": "bleu"}
    res = evaluate_predictions(records, task_metrics=metrics, normalize=score_normalize)
    assert list(res) == sorted(res)
    assert res["asr"] == {"n": 2, "wer": pytest.approx(2 / 6)}
    assert res["gender"] == {"n": 2, "accuracy": 0.5}
    assert res["co_reasoning"] == {"n": 2, "part_accuracy": pytest.approx(0.75), "accuracy": 0.5}
    assert res["translation"]["bleu"] == pytest.approx(100.0) and res["translation"]["n"] == 1
    assert set(res["ast_en_de"]) == {"n", "bleu"}
    assert res["chord"] == {"n": 1, "accuracy": 0.0}
    with pytest.raises(KeyError, match="record 0"):
        evaluate_predictions([{"task": "asr", "answer": "a"}])
    with pytest.raises(ValueError, match="'asr'"):
        evaluate_predictions([], task_metrics={"asr": "cer"})
    # No task map: every task is scored by accuracy; the demo's map is data of the demo.
    assert set(evaluate_predictions(records)["asr"]) == {"n", "accuracy"}
    assert TASK_METRICS == {"asr": "wer", "co_reasoning": "parts"}


def test_format_markdown_table():
    results = {
        "mowe": {
            "asr": {"n": 10, "wer": 0.1234},
            "gender": {"n": 4, "accuracy": 0.75},
            "co_reasoning": {"n": 2, "part_accuracy": 0.75, "accuracy": 0.5},
        },
        "salmonn": {"asr": {"n": 10, "wer": 0.2}, "translation": {"n": 3, "bleu": 31.25}},
    }
    table = format_markdown_table(results)
    lines = table.splitlines()
    assert lines[0] == "| task | mowe | salmonn |"
    assert lines[1] == "|---|---|---|"
    assert lines[2] == "| asr (WER ↓) | 0.123 | 0.200 |"
    assert lines[3] == "| gender (acc ↑) | 0.750 | – |"
    assert lines[4] == "| co_reasoning (part acc ↑) | 0.750 | – |"
    assert lines[5] == "| co_reasoning (acc ↑) | 0.500 | – |"
    assert lines[6] == "| translation (BLEU ↑) | – | 31.2 |"
    assert len(lines) == 7
    assert all(line.count("|") == 4 for line in lines)
    # round trip with evaluate_predictions
    res = evaluate_predictions([{"task": "tempo", "answer": "fast", "prediction": "fast"}])
    assert format_markdown_table({"sys": res}).splitlines()[-1] == "| tempo (acc ↑) | 1.000 |"

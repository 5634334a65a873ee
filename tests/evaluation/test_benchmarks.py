"""Must-show 3: each benchmark format scored on rows written here, the expected scores worked out by hand; the
benchmarks' own files read as mowe examples."""

from __future__ import annotations

import pytest

from mowe.errors import ConfigError
from mowe.evaluation.benchmarks import airbench_letter, mmau_match, named_options, score_benchmark, verdict

BARK = ["Dog barking", "Cat meowing", "Car horn"]
NESTED = ["dog", "dog barking", "silence"]
# (answer, choices, prediction, verdict worked out by hand from MMAU's rule)
MMAU_ROWS = [
    ("Dog barking", BARK, "dog barking.", "correct"),  # case and punctuation only
    ("Dog barking", BARK, "The sound is a DOG BARKING!", "correct"),  # extra words no other choice has
    ("Dog barking", BARK, "dog barking or car horn", "several_options"),
    ("Dog barking", BARK, "I am not sure", "no_option"),
    ("Dog barking", BARK, "cat meowing", "wrong"),
    ("Dog barking", BARK, "", "no_option"),  # MMAU: an empty prediction is wrong
    ("dog barking", NESTED, "Dog barking", "correct"),  # "dog" is inside the answer: not another's word
    ("dog", NESTED, "dog barking", "wrong"),  # "barking" belongs to another choice
]


def _records(rows, task="t"):
    recs = [
        {"id": f"r{i}", "task": task, "answer": a, "prediction": p} for i, (a, _c, p, _v) in enumerate(rows)
    ]
    return recs, {f"r{i}": c for i, (_a, c, _p, _v) in enumerate(rows)}


def test_mmau_rule_by_hand():
    recs, choices = _records(MMAU_ROWS)
    scores = score_benchmark(recs, "mmau", choices=choices)
    assert [r["verdict"] for r in recs] == [v for *_, v in MMAU_ROWS]
    s = scores["t"]
    # 3 of 8 right (rows 1, 2, 7); 2 named no option, 1 several, 2 plainly wrong
    assert s.n == 8 and s.accuracy.value == 3 / 8
    assert s.counts == {"correct": 3, "wrong": 2, "no_option": 2, "several_options": 1}
    assert (
        s.accuracy.low <= 3 / 8 <= s.accuracy.high and s.accuracy.n == 8 and s.accuracy.low < s.accuracy.high
    )
    assert scores["all"].n == 8 and s.to_dict()["accuracy"]["n"] == 8
    assert mmau_match("The dog barks.", "Dog barks", ["dog barks", "cat meows"])
    assert named_options("dog barking", NESTED) == [1]


AIR = ["Dog barking", "Cat meowing", "Car horn", "Rain"]
# (answer_gt, prediction, verdict by hand from score_foundation.py's letter rule)
AIR_ROWS = [
    ("Cat meowing", "B", "correct"),
    ("Cat meowing", "b", "no_option"),  # the script's letters are capitals: "b" reads as no letter
    ("Car horn", "The answer is C.", "correct"),  # second-to-last character
    ("Car horn", "The answer is C", "no_option"),  # ... which here is a space
    ("Cat meowing", "A or B", "several_options"),  # two letters: mowe counts it apart (the script reads "A")
    ("Dog barking", "Dog barking", "wrong"),  # first character "D": the script reads option D
]


def test_airbench_rule_by_hand():
    recs = [
        {"id": f"a{i}", "task": "Sound_AQA", "answer": a, "prediction": p}
        for i, (a, p, _v) in enumerate(AIR_ROWS)
    ]
    scores = score_benchmark(recs, "airbench", choices={f"a{i}": AIR for i in range(len(AIR_ROWS))})
    assert [r["verdict"] for r in recs] == [v for *_, v in AIR_ROWS]
    s = scores["Sound_AQA"]
    assert s.accuracy.value == 2 / 6 and s.answered_accuracy == 2 / 4  # the script's own denominator drops 2
    assert s.counts == {"correct": 2, "wrong": 1, "no_option": 2, "several_options": 1}
    assert airbench_letter("D.") == "D" and airbench_letter("None") is None
    with pytest.raises(ConfigError, match="none of the choices"):
        verdict("airbench", "A", "Thunder", AIR)


DS_ROWS = [  # (label, prediction, verdict by hand); the label space is the task's labels: happy, sad, angry
    ("happy", "Happy.", "correct"),
    ("sad", "The speaker sounds sad", "correct"),
    ("angry", "happy or sad", "several_options"),
    ("sad", "neutral", "no_option"),
    ("happy", "sad", "wrong"),
]


def test_dynamic_superb_rule_by_hand():
    recs = [
        {"id": f"d{i}", "task": "emotion", "answer": a, "prediction": p}
        for i, (a, p, _v) in enumerate(DS_ROWS)
    ]
    s = score_benchmark(recs, "dynamic-superb")["emotion"]
    assert [r["verdict"] for r in recs] == [v for *_, v in DS_ROWS]
    assert s.accuracy.value == 2 / 5 and s.counts == {
        "correct": 2,
        "wrong": 1,
        "no_option": 1,
        "several_options": 1,
    }
    with pytest.raises(ConfigError, match="unknown benchmark format"):
        score_benchmark(recs, "voicebench")

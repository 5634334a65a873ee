"""Bootstrap intervals and paired tests (issue 14) checked on cases whose answer is known."""

import math

import numpy as np
import pytest

from mowe.evaluation.evaluate import EvalResult
from mowe.evaluation.metrics import bleu, evaluate_predictions, word_error_rate
from mowe.evaluation.stats import (
    ClipStatistics,
    MetricInterval,
    PairedComparison,
    bootstrap_interval,
    clip_statistics,
    compare_to_base,
    paired_comparison,
    task_intervals,
)


def _binary(outcomes, metric="accuracy"):
    x = np.asarray(outcomes, dtype=np.float64)
    return ClipStatistics(metric, tuple(f"c{i}" for i in range(len(x))), np.stack([x, np.ones_like(x)], 1))


def _records(task, pairs, prefix="c"):
    return [
        {"id": f"{prefix}{i}", "task": task, "answer": a, "prediction": p} for i, (a, p) in enumerate(pairs)
    ]


# ------------------------------------------------------------------------------------------- intervals
def test_proportion_interval_matches_the_normal_approximation():
    n, k = 400, 280  # p = 0.7
    recs = _records("gender", [("male", "male")] * k + [("male", "female")] * (n - k))
    ci = bootstrap_interval(clip_statistics(recs, "accuracy"), n_boot=2000, seed=3)
    half = 1.96 * math.sqrt(0.7 * 0.3 / n)
    assert isinstance(ci, MetricInterval) and ci.value == pytest.approx(0.7) and ci.n == n
    assert ci.low == pytest.approx(0.7 - half, abs=0.01) and ci.high == pytest.approx(0.7 + half, abs=0.01)
    assert ci.to_dict() == {"value": ci.value, "ci95": [ci.low, ci.high], "n": n}


def test_constant_scores_give_a_zero_width_interval():
    right = bootstrap_interval(clip_statistics(_records("t", [("yes", "yes")] * 30), "accuracy"))
    assert (right.value, right.low, right.high) == (1.0, 1.0, 1.0)
    perfect = bootstrap_interval(clip_statistics(_records("asr", [("one two", "one two")] * 30), "wer"))
    assert (perfect.value, perfect.low, perfect.high) == (0.0, 0.0, 0.0)


def test_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    p, n, repeats = 0.6, 80, 300
    hits = 0
    for r in range(repeats):
        ci = bootstrap_interval(_binary(rng.random(n) < p), n_boot=500, seed=r)
        hits += ci.low <= p <= ci.high
    assert 0.90 <= hits / repeats <= 0.99, hits / repeats


def test_same_seed_same_interval_and_the_interval_narrows_with_more_clips():
    small = _binary([1, 0] * 25)
    assert bootstrap_interval(small, seed=5) == bootstrap_interval(small, seed=5)
    big = bootstrap_interval(_binary([1, 0] * 400))
    assert big.high - big.low < (bootstrap_interval(small).high - bootstrap_interval(small).low) / 2


def test_wer_is_recomputed_from_summed_errors_not_averaged_per_clip():
    # Long clips right, one-word clips wrong: corpus WER 10/210, mean clip WER 1/2.
    pairs = [(" ".join(["word"] * 20), " ".join(["word"] * 20))] * 10 + [("cat", "dog")] * 10
    st = clip_statistics(_records("asr", pairs), "wer")
    assert st.value() == pytest.approx(word_error_rate(*zip(*pairs))) == pytest.approx(10 / 210)
    # Any resample's value is the corpus WER of the clips it drew, repeated as often as drawn.
    rng = np.random.default_rng(1)
    for _ in range(5):
        w = rng.multinomial(len(pairs), [1 / len(pairs)] * len(pairs))
        refs = [r for (r, _), c in zip(pairs, w) for _ in range(c)]
        hyps = [h for (_, h), c in zip(pairs, w) for _ in range(c)]
        assert st.value(w[None].astype(float))[0] == pytest.approx(word_error_rate(refs, hyps))
    ci = bootstrap_interval(st, n_boot=1000)
    assert ci.low < 10 / 210 < ci.high < 0.25  # the mean of clip WERs (0.5) is far outside


def test_wer_counts_insertions_against_empty_references_as_the_metric_does():
    pairs = [("", "uh"), ("a b", "a b c")]
    assert clip_statistics(_records("asr", pairs), "wer").value() == word_error_rate(*zip(*pairs)) == 1.0


def test_bleu_statistics_sum_to_corpus_bleu():
    pairs = [
        ("le chat noir", "le chat noir"),
        ("the cat is on the mat", "the cat sat on the mat"),
        ("hello world", "hello"),
        ("a dog runs in the park", "a dog walks in a park"),
    ]
    st = clip_statistics(_records("translation", pairs), "bleu")
    assert st.value() == pytest.approx(bleu(*zip(*pairs)))
    w = np.array([[2, 0, 1, 1], [0, 3, 0, 1]], dtype=float)
    for row, vals in zip(w, st.value(w)):
        refs = [r for (r, _), c in zip(pairs, row) for _ in range(int(c))]
        hyps = [h for (_, h), c in zip(pairs, row) for _ in range(int(c))]
        assert vals == pytest.approx(bleu(refs, hyps))


# ------------------------------------------------------------------------------------------- paired tests
def test_clear_difference_is_significant_and_in_the_right_direction():
    base = _binary([1] * 50 + [0] * 50)
    system = _binary([1] * 90 + [0] * 10)
    cmp = paired_comparison(system, base)
    assert isinstance(cmp, PairedComparison)
    assert (
        cmp.diff == pytest.approx(0.4) and cmp.p_value < 0.05 and cmp.significant and cmp.better == "system"
    )
    assert 0 < cmp.low < 0.4 < cmp.high


def test_identical_systems_are_not_different():
    st = _binary([1, 0, 1, 1, 0] * 20)
    cmp = paired_comparison(st, st)
    assert (cmp.diff, cmp.low, cmp.high, cmp.p_value, cmp.significant, cmp.better) == (
        0,
        0,
        0,
        1.0,
        False,
        None,
    )


def test_one_clip_of_a_hundred_is_no_evidence():
    base = _binary([1] * 50 + [0] * 50)
    system = _binary([1] * 51 + [0] * 49)
    cmp = paired_comparison(system, base)
    # One discordant clip: every permutation is as extreme (the exact sign test's p is 1 too).
    assert cmp.p_value == 1.0 and not cmp.significant and cmp.low <= 0 < cmp.high


def test_paired_test_is_symmetric_in_the_two_systems():
    rng = np.random.default_rng(2)
    a, b = _binary(rng.random(120) < 0.7), _binary(rng.random(120) < 0.55)
    ab, ba = paired_comparison(a, b, seed=4), paired_comparison(b, a, seed=4)
    assert ab.p_value == ba.p_value and ab.significant == ba.significant
    assert ab.diff == pytest.approx(-ba.diff)
    assert ab.low == pytest.approx(-ba.high) and ab.high == pytest.approx(-ba.low)


def test_permutation_p_value_matches_the_exact_sign_test_for_accuracy():
    # 15 clips only the system gets right, 5 only the base, 80 both or neither: McNemar's exact two-sided p.
    base = [1] * 5 + [0] * 15 + [1] * 40 + [0] * 40
    system = [0] * 5 + [1] * 15 + [1] * 40 + [0] * 40
    exact = 2 * sum(math.comb(20, k) for k in range(15, 21)) / 2**20
    cmp = paired_comparison(_binary(system), _binary(base), n_perm=20000)
    assert cmp.p_value == pytest.approx(exact, abs=0.005) and cmp.significant


def test_paired_wer_uses_per_clip_errors_and_pairs_clips_by_id():
    refs = ["one two three four"] * 40
    base = _records("asr", [(r, "one two three") for r in refs])  # 1 error of 4 words per clip
    system = _records("asr", [(r, r) for r in refs])
    shuffled = list(reversed(system))
    cmp = paired_comparison(clip_statistics(shuffled, "wer"), clip_statistics(base, "wer"))
    assert cmp.diff == pytest.approx(-0.25) and cmp.significant and cmp.better == "system"
    with pytest.raises(ValueError, match="same clips"):
        paired_comparison(clip_statistics(system[:-1], "wer"), clip_statistics(base, "wer"))


# ------------------------------------------------------------------------------------------- whole results
def _result(records):
    return EvalResult(
        records, evaluate_predictions(records, task_metrics={"asr": "wer", "co_reasoning": "parts"})
    )


def test_task_intervals_and_compare_to_base_cover_every_reported_metric():
    base = (
        _records("gender", [("male", "male")] * 20 + [("male", "female")] * 20)
        + _records("asr", [("a b c", "a b")] * 30, prefix="a")
        + _records("co_reasoning", [("siren, seven", "siren, six")] * 10, prefix="r")
    )
    system = (
        _records("gender", [("male", "male")] * 38 + [("male", "female")] * 2)
        + _records("asr", [("a b c", "a b")] * 30, prefix="a")
        + _records("co_reasoning", [("siren, seven", "siren, seven")] * 10, prefix="r")
    )
    res_sys, res_base = _result(system), _result(base)
    ci = task_intervals(res_sys, n_boot=300)
    assert set(ci) == {"gender", "asr", "co_reasoning"} and set(ci["co_reasoning"]) == {
        "part_accuracy",
        "accuracy",
    }
    for task, ms in ci.items():
        for name, iv in ms.items():
            assert iv.value == pytest.approx(res_sys.metrics[task][name]) and iv.low <= iv.value <= iv.high
    cmp = compare_to_base(res_sys, res_base, n_boot=300, n_perm=500)
    assert cmp["gender"]["accuracy"].significant and cmp["gender"]["accuracy"].better == "system"
    assert not cmp["asr"]["wer"].significant and cmp["asr"]["wer"].p_value == 1.0
    # co-reasoning "accuracy" is the exact multi-part match: 0 for the base, 1 for the system.
    assert cmp["co_reasoning"]["accuracy"].diff == pytest.approx(1.0)
    assert cmp["co_reasoning"]["part_accuracy"].diff == pytest.approx(0.5)


def test_a_reported_metric_that_per_clip_scoring_cannot_reproduce_is_refused():
    recs = _records("gender", [("male", "male"), ("male", "female")])
    bad = EvalResult(recs, {"gender": {"n": 2, "accuracy": 0.9}})
    with pytest.raises(ValueError, match="gender.*accuracy"):
        task_intervals(bad)
    with pytest.raises(ValueError, match="metric 'f1'"):
        clip_statistics(recs, "f1")

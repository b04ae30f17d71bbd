"""zhnlp.metrics: accuracy/F1, power means (values, limits, monotonicity, errors), reliability bins, ranks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zhnlp.metrics import (
    accuracy,
    kendall_tau,
    macro_f1,
    mean_name,
    power_mean,
    power_means,
    rank,
    reliability_bins,
    swapped_pairs,
)


def test_accuracy_and_macro_f1():
    y, p = [0, 0, 1, 1, 2], [0, 1, 1, 1, 0]
    assert accuracy(y, p) == pytest.approx(3 / 5)
    # per-class F1: c0 = 2·1/(2+1)·... computed by hand: P0=1/2 R0=1/2 -> .5; c1: P=2/3 R=1 -> .8; c2: 0
    assert macro_f1(y, p) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert macro_f1(y, p, labels=range(4)) == pytest.approx((0.5 + 0.8) / 4)  # an absent class counts as 0
    with pytest.raises(ValueError, match="same length"):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="no rows"):
        macro_f1([], [])


def test_power_mean_values():
    s = [0.5, 0.8, 0.9]
    assert power_mean(s, 1) == pytest.approx(np.mean(s), abs=1e-15)
    assert power_mean(s, 0) == pytest.approx(np.prod(s) ** (1 / 3), abs=1e-15)
    assert power_mean(s, -1) == pytest.approx(3 / sum(1 / x for x in s), abs=1e-15)
    assert power_mean(s, 2) == pytest.approx(math.sqrt(np.mean(np.square(s))), abs=1e-15)
    assert power_mean(s, -2.5) == pytest.approx(np.mean(np.power(s, -2.5)) ** (1 / -2.5), abs=1e-14)
    assert power_mean(s, math.inf) == 0.9 and power_mean(s, -math.inf) == 0.5
    assert power_mean([0.7], -3) == pytest.approx(0.7) and power_mean([0.6, 0.6, 0.6], 0.3) == pytest.approx(0.6)
    assert power_mean([-0.2, 0.4], 1) == pytest.approx(0.1)  # AM is defined for negatives (e.g. MCC)
    assert power_mean([0.0, 0.5], 2) == pytest.approx(math.sqrt(0.125))  # zeros are fine for γ > 0
    assert power_means(s, [1, 0, -1, 2]) == {"am": power_mean(s, 1), "gm": power_mean(s, 0), "hm": power_mean(s, -1), "m_2": power_mean(s, 2)}
    assert [mean_name(g) for g in (1, 0, -1, 2, 0.5, -2, math.inf)] == ["am", "gm", "hm", "m_2", "m_0.5", "m_-2", "m_inf"]


def test_power_mean_limits_at_zero_and_infinity():
    s = [0.2, 0.45, 0.61, 0.93]
    gm = power_mean(s, 0)
    for eps in (1e-3, 1e-8, 1e-14):
        assert power_mean(s, eps) == pytest.approx(gm, rel=1e-3 * eps / 1e-3 + 1e-15)
        assert power_mean(s, -eps) == pytest.approx(gm, rel=1e-3 * eps / 1e-3 + 1e-15)
        assert power_mean(s, -eps) <= gm <= power_mean(s, eps)
    assert power_mean(s, 1e4) == pytest.approx(0.93, rel=1e-3) and power_mean(s, -1e4) == pytest.approx(0.2, rel=1e-3)
    assert power_mean([1e300, 1e-300], 50) == pytest.approx(1e300 * 0.5 ** (1 / 50))  # no overflow


def test_power_mean_is_monotonic_in_gamma():
    rng = np.random.default_rng(0)
    grid = np.concatenate([-np.logspace(3, -12, 120), [0.0], np.logspace(-12, 3, 120)])
    for _ in range(60):
        s = rng.random(rng.integers(2, 12)) * 10 ** rng.uniform(-3, 3) + 1e-9
        values = np.array([power_mean(s, g) for g in grid])
        assert np.all(np.diff(values) >= 0), s  # exactly non-decreasing on the grid, no tolerance
        assert values[0] >= s.min() and values[-1] <= s.max()


@pytest.mark.parametrize(
    "scores, gamma, message",
    [
        ([], 1, "no scores"),
        ([0.5, math.nan], 1, "finite"),
        ([0.5, math.inf], 0, "finite"),
        ([0.5, 0.0], 0, "undefined for scores <= 0"),
        ([0.5, 0.0], -1, "undefined for scores <= 0"),
        ([0.5, -0.1], -2, "undefined for scores <= 0"),
        ([0.5, -0.1], 2, "undefined for negative scores"),
        ([0.5], math.nan, "NaN"),
    ],
)
def test_power_mean_errors(scores, gamma, message):
    with pytest.raises(ValueError, match=message):
        power_mean(scores, gamma)


def test_reliability_bins_counts_and_ece():
    rng = np.random.default_rng(1)
    P = rng.dirichlet(np.full(5, 0.3), size=500)
    y = rng.integers(0, 5, size=500)
    rel = reliability_bins(P, y, n_bins=10)
    assert len(rel["bins"]) == 10 and sum(b["count"] for b in rel["bins"]) == 500 == rel["rows"]
    assert 0.0 <= rel["ece"] <= 1.0
    for b in rel["bins"]:
        if b["count"]:
            assert b["lower"] <= b["confidence"] <= b["upper"] and 0 <= b["accuracy"] <= 1
        else:
            assert b["confidence"] is None and b["accuracy"] is None
    # hand-checked: two rows at confidence 1.0 (last bin), one right; one at 0.55, wrong
    P2 = np.array([[1.0, 0.0], [0.0, 1.0], [0.55, 0.45]])
    rel2 = reliability_bins(P2, [0, 0, 1], n_bins=2)
    assert [b["count"] for b in rel2["bins"]] == [0, 3]
    assert rel2["bins"][1]["confidence"] == pytest.approx(2.55 / 3) and rel2["bins"][1]["accuracy"] == pytest.approx(1 / 3)
    assert rel2["ece"] == pytest.approx(abs(1 / 3 - 2.55 / 3))
    perfect = reliability_bins(np.eye(3), [0, 1, 2])
    assert perfect["ece"] == 0.0 and reliability_bins(np.eye(3), [1, 2, 0])["ece"] == 1.0
    with pytest.raises(ValueError, match="N labels"):
        reliability_bins(P, y[:-1])


def test_rank_kendall_and_swaps():
    assert rank({"a": 0.9, "b": 0.7, "c": 0.9, "d": None}) == {"a": 1, "b": 3, "c": 1, "d": None}
    assert rank({"a": 2.0, "b": 1.0}, higher_is_better=False) == {"a": 2, "b": 1}
    x = {"a": 3, "b": 2, "c": 1}
    assert kendall_tau(x, x) == 1.0 and kendall_tau(x, {"a": 1, "b": 2, "c": 3}) == -1.0
    assert kendall_tau(x, {"a": 3, "b": 1, "c": 2}) == pytest.approx(1 / 3)
    assert kendall_tau({"a": 1}, {"a": 1}) is None
    assert swapped_pairs(rank(x), rank({"a": 3, "b": 1, "c": 2})) == [("b", "c")]
    assert swapped_pairs(rank(x), rank(x)) == []


def test_corpus_bleu_is_sacrebleu_character_bleu():
    from sacrebleu.metrics import BLEU

    from zhnlp.metrics import corpus_bleu, distinct_n

    hyps, refs = ["今天天气很好", "我们去吃饭吧", "好的"], ["今天天气不错", "我们一起去吃火锅吧", "好的，没问题"]
    for n in (2, 4):
        char_bleu = BLEU(tokenize="char", max_ngram_order=n, smooth_method="floor", smooth_value=0.1)
        assert corpus_bleu([list(h) for h in hyps], [list(r) for r in refs], max_n=n) == pytest.approx(char_bleu.corpus_score(hyps, [refs]).score)
    # p1 = 3/4, p2 = 2/3 and no brevity penalty: BLEU-2 = 100 sqrt(1/2); no shared character at all: 0 (as NLTK)
    assert corpus_bleu([list("abcf")], [list("abcd")], max_n=2) == pytest.approx(100 * math.sqrt(0.5))
    assert corpus_bleu([list("xyz")], [list("abc")], max_n=2) == 0.0
    with pytest.raises(ValueError, match="one reference per hypothesis"):
        corpus_bleu([list("a")], [])
    assert distinct_n([list("好的好的"), list("好的")], 2) == pytest.approx(2 / 4)

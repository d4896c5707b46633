"""Confidence intervals and paired tests against hand-computed values and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from kernelized.eval.stats import bootstrap_ci, mean_ci, paired_comparison, sign_flip_pvalue


def test_mean_ci_by_hand():
    ci = mean_ci([1.0, 2.0, 3.0, 4.0])
    # s = sqrt(5/3) = 1.290994, t_{0.975, 3} = 3.182446 -> half width 3.182446 * 1.290994 / 2
    assert ci.mean == 2.5 and ci.n == 4
    assert ci.half_width == pytest.approx(3.182446 * 1.290994 / 2, rel=1e-6)
    assert (ci.low, ci.high) == pytest.approx((2.5 - ci.half_width, 2.5 + ci.half_width))
    assert (ci.low, ci.high) == pytest.approx(sps.t.interval(0.95, 3, loc=2.5, scale=sps.sem([1, 2, 3, 4])))
    assert mean_ci([1.0, 2.0, 3.0, 4.0], confidence=0.9).half_width < ci.half_width


def test_mean_ci_of_one_value_has_no_width():
    ci = mean_ci([0.7])
    assert ci.mean == 0.7 and ci.n == 1 and math.isnan(ci.half_width) and math.isnan(ci.low)
    assert ci.format() == "0.700 (n=1)"
    assert mean_ci([0.5, 0.7]).format(digits=2, scale=100) == f"60.00 ± {mean_ci([0.5, 0.7]).half_width * 100:.2f}"


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="values"):
        mean_ci([])
    with pytest.raises(ValueError, match="finite"):
        mean_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=95)
    with pytest.raises(ValueError, match="same seeds"):
        paired_comparison([1.0, 2.0], [1.0])


def test_bootstrap_ci_is_reproducible_and_close_to_t_for_many_values():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=400)
    boot, t = bootstrap_ci(x, seed=1), mean_ci(x)
    assert boot == bootstrap_ci(x, seed=1)
    assert boot.mean == pytest.approx(x.mean())
    assert boot.low < x.mean() < boot.high
    assert boot.half_width == pytest.approx(t.half_width, rel=0.1)
    constant = bootstrap_ci([2.0, 2.0, 2.0])
    assert (constant.low, constant.high) == (2.0, 2.0)
    median = bootstrap_ci([1.0, 2.0, 100.0], statistic=np.median)
    assert median.mean == 2.0 and median.low >= 1.0 and median.high <= 100.0


def test_paired_comparison_agrees_with_scipy_and_counts_sign_flips():
    a = [0.91, 0.95, 0.93, 0.97, 0.90]
    b = [0.85, 0.96, 0.86, 0.90, 0.88]
    out = paired_comparison(a, b)
    ref = sps.ttest_rel(a, b)
    assert out["t_stat"] == pytest.approx(ref.statistic) and out["p_ttest"] == pytest.approx(ref.pvalue)
    diffs = np.subtract(a, b)
    assert out["mean_diff"] == pytest.approx(diffs.mean()) and out["n"] == 5
    assert out["ci_low"] < out["mean_diff"] < out["ci_high"]
    assert out["t_ci_low"] == pytest.approx(mean_ci(diffs).low)
    # diffs = [.06, -.01, .07, .07, .02]: only the observed pattern and its mirror image reach |mean| =
    # 0.042, plus flipping the -0.01 (|mean| 0.046)  and its mirror -> 4 of 32 patterns
    assert out["exact"] and out["p_permutation"] == pytest.approx(4 / 32)
    assert out["min_p"] == pytest.approx(1 / 16)


def test_three_seeds_cannot_go_below_a_quarter():
    out = paired_comparison([0.99, 0.98, 0.99], [0.10, 0.12, 0.11])
    assert out["p_permutation"] == pytest.approx(0.25) == out["min_p"]
    assert out["p_ttest"] < 1e-3  # the t-test, assuming normality, calls it significant


def test_no_difference_and_constant_difference():
    same = paired_comparison([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert same["mean_diff"] == 0 and same["p_permutation"] == 1.0 and math.isnan(same["p_ttest"])
    shift = paired_comparison([1.5, 1.6, 1.7, 1.8], [1.0, 1.1, 1.2, 1.3])
    assert shift["mean_diff"] == pytest.approx(0.5) and math.isnan(shift["p_ttest"])
    assert shift["ci_low"] == pytest.approx(0.5) and shift["ci_high"] == pytest.approx(0.5)


def test_sign_flip_monte_carlo_matches_exact_for_many_values():
    d = np.random.default_rng(3).normal(0.3, 1.0, size=14)
    exact, is_exact = sign_flip_pvalue(d)
    approx, is_approx = sign_flip_pvalue(d, max_exact=10, num_resamples=50_000)
    assert is_exact and not is_approx
    assert approx == pytest.approx(exact, abs=0.01)


def test_holm_adjusts_step_down_and_keeps_order_and_nan():
    from kernelized.eval.stats import holm

    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # 3p, max(2p, prev), max(p, prev)
    out = holm([0.2, float("nan"), 0.6])
    assert out[0] == pytest.approx(0.4) and math.isnan(out[1]) and out[2] == pytest.approx(0.6)
    assert holm([0.9, 0.8]) == [1.0, 1.0]  # capped at 1

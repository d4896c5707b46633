"""Statistics across seeds: confidence intervals and paired comparisons of two methods.

The papers report one number per cell (best over epochs, mean over seeds, best learning rate) without
intervals. These helpers put a 95% interval on such means and test whether two kernels differ on the same
seeds (a paired design: seed s of kernel A and seed s of kernel B share data and initialisation).

>>> mean_ci([0.91, 0.95, 0.93])            # CI(mean=0.93, low=..., high=..., half_width=..., n=3)
>>> paired_comparison([0.91, 0.95, 0.93], [0.85, 0.90, 0.86])["p_permutation"]   # 0.25: see below
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats as sps


class CI(NamedTuple):
    """A point estimate with a two-sided confidence interval ``[low, high]``."""

    mean: float
    low: float
    high: float
    half_width: float
    n: int

    def format(self, digits: int = 3, scale: float = 1.0) -> str:
        """``"0.930 ± 0.050"`` (``± nan`` is written as ``(n=1)``)."""
        if math.isnan(self.half_width):
            return f"{self.mean * scale:.{digits}f} (n={self.n})"
        return f"{self.mean * scale:.{digits}f} ± {self.half_width * scale:.{digits}f}"


def _as_array(name: str, values) -> np.ndarray:
    x = np.asarray(values, dtype=float).reshape(-1)
    if x.size == 0:
        raise ValueError(f"{name} must hold at least one value, got none")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite, got {x.tolist()}")
    return x


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> CI:
    """Mean and Student-t interval ``mean ± t_{(1+c)/2, n-1} * s / sqrt(n)`` (s: sample std, ddof 1).

    With one value there is no spread to estimate: half_width, low and high are NaN.
    """
    _check_confidence(confidence)
    x = _as_array("values", values)
    n, mean = x.size, float(x.mean())
    if n < 2:
        return CI(mean, math.nan, math.nan, math.nan, n)
    half = float(sps.t.ppf((1 + confidence) / 2, df=n - 1) * x.std(ddof=1) / math.sqrt(n))
    return CI(mean, mean - half, mean + half, half, n)


def bootstrap_ci(
    values: Sequence[float],
    statistic: Callable[[np.ndarray], np.ndarray] = np.mean,
    confidence: float = 0.95,
    num_resamples: int = 10_000,
    seed: int = 0,
) -> CI:
    """Percentile bootstrap interval of ``statistic`` (called as ``statistic(samples, axis=-1)``).

    Resamples the values with replacement ``num_resamples`` times (seeded, so reproducible). With few
    values (3-5 seeds) the percentile bootstrap is too narrow; prefer :func:`mean_ci` for means then.
    ``half_width`` is half the interval's width (the interval need not be symmetric).
    """
    _check_confidence(confidence)
    x = _as_array("values", values)
    point = float(statistic(x, axis=-1))
    if x.size < 2:
        return CI(point, math.nan, math.nan, math.nan, x.size)
    rng = np.random.default_rng(seed)
    samples = x[rng.integers(0, x.size, size=(num_resamples, x.size))]
    boots = statistic(samples, axis=-1)
    alpha = (1 - confidence) / 2
    low, high = (float(v) for v in np.quantile(boots, [alpha, 1 - alpha]))
    return CI(point, low, high, (high - low) / 2, x.size)


def sign_flip_pvalue(
    diffs: Sequence[float], max_exact: int = 16, num_resamples: int = 100_000, seed: int = 0
) -> tuple[float, bool]:
    """Two-sided sign-flip permutation test of ``mean(diffs) == 0``; returns ``(p, exact)``.

    Under the null each paired difference is as likely to be +d as -d, so the p-value is the fraction of
    the ``2^n`` sign patterns whose |mean| is at least the observed |mean| (the observed pattern included).
    Exact for n <= ``max_exact``, else estimated from ``num_resamples`` random patterns (add-one
    estimator). The smallest attainable p is ``2 / 2^n``: 0.25 with 3 seeds, 0.0625 with 5, so with
    3 seeds no difference can be "significant at 0.05" by this test however large it is.
    """
    d = _as_array("diffs", diffs)
    n = d.size
    observed = abs(d.mean())
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    if n <= max_exact:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        means = np.abs(signs @ d) / n
        return float(np.mean(means >= observed - tol)), True
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(num_resamples, n))
    hits = int(np.sum(np.abs(signs @ d) / n >= observed - tol))
    return (hits + 1) / (num_resamples + 1), False


def paired_comparison(
    a: Sequence[float],
    b: Sequence[float],
    confidence: float = 0.95,
    num_resamples: int = 10_000,
    seed: int = 0,
) -> dict:
    """Compare two methods measured on the same seeds: ``a[i]`` and ``b[i]`` share seed i.

    Returns a dict:
        n, mean_a, mean_b, mean_diff (mean of a - b);
        ci_low, ci_high: paired bootstrap interval of the mean difference (the pairs are resampled
            together), seeded; NaN when n < 2;
        t_ci_low, t_ci_high: Student-t interval of the mean difference (:func:`mean_ci` of a - b);
        t_stat, p_ttest: paired t-test (``scipy.stats.ttest_rel``), two-sided; NaN when n < 2 or when all
            differences are equal (no spread);
        p_permutation, exact: the sign-flip permutation test (:func:`sign_flip_pvalue`), two-sided, exact
            over all ``2^n`` flips for n <= 16; it assumes no normality, but its smallest attainable p is
            ``2 / 2^n`` (``min_p``): **0.25 with 3 seeds**, 0.0625 with 5 seeds;
        min_p: that smallest attainable permutation p-value.
    """
    x, y = _as_array("a", a), _as_array("b", b)
    if x.size != y.size:
        raise ValueError(f"a and b must pair up (same seeds), got {x.size} and {y.size} values")
    d = x - y
    n = d.size
    boot = bootstrap_ci(d, confidence=confidence, num_resamples=num_resamples, seed=seed)
    t_ci = mean_ci(d, confidence)
    if n >= 2 and np.ptp(d) > 0:
        result = sps.ttest_rel(x, y)
        t_stat, p_t = float(result.statistic), float(result.pvalue)
    else:
        t_stat = p_t = math.nan
    p_perm, exact = sign_flip_pvalue(d, seed=seed)
    return {
        "n": n,
        "mean_a": float(x.mean()),
        "mean_b": float(y.mean()),
        "mean_diff": float(d.mean()),
        "ci_low": boot.low,
        "ci_high": boot.high,
        "t_ci_low": t_ci.low,
        "t_ci_high": t_ci.high,
        "t_stat": t_stat,
        "p_ttest": p_t,
        "p_permutation": p_perm,
        "exact": exact,
        "min_p": 2.0 / 2**n if n <= 1023 else 0.0,
    }


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input order; NaN stays NaN
    and does not count as a test. Controls the family-wise error rate of the whole list at the chosen alpha."""
    p = [float(x) for x in pvalues]
    valid = sorted((x, i) for i, x in enumerate(p) if not math.isnan(x))
    m, out, running = len(valid), [math.nan] * len(p), 0.0
    for rank, (x, i) in enumerate(valid):
        running = max(running, min(1.0, (m - rank) * x))
        out[i] = running
    return out

"""Reduction and statistics: the papers' protocol (best over epochs, mean over seeds at the best lr) and paired
comparisons of every two methods across the seeds they share, with a verdict per pair."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence

from kernelized.eval.stats import mean_ci, paired_comparison
from kernelized.experiments.framework.presets import get_key


def mean_of(values) -> float:
    """The mean of the values that are not None; NaN when none is left (a report cell without a number)."""
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else math.nan


def reduce_runs(
    records: Sequence[dict],
    cell_keys: Sequence[str],
    metric: str = "best.accuracy",
    lr_key: str | None = "train.lr",
    seed_key: str = "seed",
    mode: str = "max",
    confidence: float = 0.95,
) -> list[dict]:
    """The papers' reduction: best metric over epochs per run, mean over seeds, best lr per cell.

    Args:
        records: from :func:`run_sweep` (``config``, ``status`` and ``summary`` of each run); failed and missing
            runs and runs without the metric are left out (counted in ``missing``; a cell with none is a row
            with ``n = 0``).
        cell_keys: dotted config keys that define a cell of the table (e.g. kernel, seq_len, d_model).
        metric: dotted key in each run's summary; ``best.accuracy`` is the best accuracy over the run's
            evaluations (the Trainer's summary), i.e. "best over epochs".
        lr_key: dotted config key of the learning rate; the lr with the best mean over seeds is chosen per
            cell (the ReBased protocol). None = no lr selection (all runs of a cell are seeds).
        seed_key: dotted config key of the seed; values are paired across cells by it.
        mode: "max" or "min" (for losses).

    Returns one row per cell, sorted by cell values: ``{<cell keys>: value, "lr": best lr, "mean", "low",
    "high", "half_width" (Student-t 95% CI over seeds at that lr), "n", "values", "seeds" (per-seed metric
    at the best lr, by seed), "lr_means" ({lr: mean}), "missing"}``.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    cells: dict[tuple, dict] = {}
    missing: dict[tuple, int] = {}
    for rec in records:
        config = rec["config"]
        cell = tuple(_hashable(get_key(config, k)) for k in cell_keys)
        lr = get_key(config, lr_key) if lr_key else None
        value = get_key(rec.get("summary") or {}, metric) if rec.get("status", "finished") == "finished" else None
        if value is None or (isinstance(value, float) and math.isnan(value)):
            missing[cell] = missing.get(cell, 0) + 1
            cells.setdefault(cell, {})
            continue
        cells.setdefault(cell, {}).setdefault(lr, []).append((get_key(config, seed_key), float(value)))
    rows = []
    for cell in sorted(cells, key=lambda c: tuple(_sort_key(v) for v in c)):
        by_lr = cells[cell]
        row = dict(zip(cell_keys, cell))
        if not by_lr:  # every run of the cell failed or lacks the metric
            empty = {"lr": None, "mean": math.nan, "low": math.nan, "high": math.nan, "half_width": math.nan}
            rows.append({**row, **empty, "n": 0, "values": [], "seeds": [], "lr_means": {}, "missing": missing[cell]})
            continue
        means = {lr: sum(v for _, v in vals) / len(vals) for lr, vals in by_lr.items()}
        best_lr = None
        for lr in sorted(means, key=_sort_key):  # ties go to the smallest lr
            if best_lr is None or (means[lr] > means[best_lr] if mode == "max" else means[lr] < means[best_lr]):
                best_lr = lr
        pairs = sorted(by_lr[best_lr], key=lambda p: _sort_key(p[0]))
        ci = mean_ci([v for _, v in pairs], confidence)
        rows.append(
            {
                **row,
                "lr": best_lr,
                "mean": ci.mean,
                "low": ci.low,
                "high": ci.high,
                "half_width": ci.half_width,
                "n": ci.n,
                "values": [v for _, v in pairs],
                "seeds": [s for s, _ in pairs],
                "lr_means": means,
                "missing": missing.get(cell, 0),
            }
        )
    return rows


def _hashable(value):
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def _sort_key(value):
    """Numbers before strings, each in their own order; None first."""
    if value is None:
        return (0, 0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, value, "")
    return (2, 0, str(value))


def pairwise_comparisons(
    rows: Sequence[dict], method_key: str, confidence: float = 0.95, num_resamples: int = 10_000, seed: int = 0
) -> list[dict]:
    """Paired comparisons of every two methods in every cell, from :func:`reduce_runs` rows.

    Cells are the rows' cell keys other than ``method_key``; two methods are compared on the seeds they
    share (each at its own best lr) with :func:`kernelized.eval.stats.paired_comparison`. Returns rows
    ``{<other cell keys>, "a", "b", "n", "mean_a", "mean_b", "mean_diff", "ci_low", "ci_high", "p_ttest",
    "p_permutation", "min_p", ...}``; pairs sharing fewer than 2 seeds are left out.
    """
    reserved = {"lr", "mean", "low", "high", "half_width", "n", "values", "seeds", "lr_means", "missing"}
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if method_key not in row:
            raise ValueError(f"method_key {method_key!r} is not a cell key of the rows; keys: {sorted(row)}")
        other = tuple((k, row[k]) for k in row if k not in reserved and k != method_key)
        groups.setdefault(other, []).append(row)
    out = []
    for other, group in groups.items():
        for ra, rb in itertools.combinations(group, 2):
            va, vb = dict(zip(ra["seeds"], ra["values"])), dict(zip(rb["seeds"], rb["values"]))
            shared = [s for s in ra["seeds"] if s in vb]
            if len(shared) < 2:
                continue
            result = paired_comparison(
                [va[s] for s in shared], [vb[s] for s in shared], confidence, num_resamples, seed
            )
            out.append({**dict(other), "a": ra[method_key], "b": rb[method_key], **result})
    return out


def oriented(c: dict, order: Sequence) -> dict:
    """A comparison with ``a`` the method listed first in ``order`` (differences and intervals negated)."""
    if order.index(c["a"]) < order.index(c["b"]):
        return c
    c = dict(c)
    c["a"], c["b"], c["mean_a"], c["mean_b"] = c["b"], c["a"], c["mean_b"], c["mean_a"]
    c["mean_diff"] = -c["mean_diff"]
    c["ci_low"], c["ci_high"] = -c["ci_high"], -c["ci_low"]
    c["t_ci_low"], c["t_ci_high"] = -c["t_ci_high"], -c["t_ci_low"]
    c["t_stat"] = -c["t_stat"]
    return c


def verdict(c: dict, alpha: float = 0.05) -> str:
    """``a > b`` / ``a < b`` when the bootstrap interval excludes 0 and p (paired t) < alpha; ``tie`` when every
    seed agrees exactly; else ``n.s.``."""
    if c["mean_diff"] == 0 and c["ci_low"] == c["ci_high"]:
        return "tie"
    p = c["p_ttest"]
    separated = c["ci_low"] > 0 or c["ci_high"] < 0
    if separated and (math.isnan(p) or p < alpha):  # NaN p: every seed differs by the same amount
        return "a > b" if c["mean_diff"] > 0 else "a < b"
    return "n.s."


def comparisons(rows: Sequence[dict], method_key: str, order: Sequence) -> list[dict]:
    """:func:`pairwise_comparisons` oriented by ``order``, with a text interval and a verdict per pair."""
    out = [oriented(c, list(order)) for c in pairwise_comparisons(rows, method_key=method_key)]
    for c in out:
        c["diff (95% bootstrap CI)"] = f"{c['mean_diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
        c["verdict"] = verdict(c)
    return out

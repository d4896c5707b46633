"""GLUE's official metrics and the GLUE average.

``metric(name, predictions, targets)`` for ``accuracy``, ``f1`` (binary, positive class 1), ``matthews``
(Matthews correlation), ``pearson``, ``spearman``; :func:`task_score` averages a task's metrics (MRPC and QQP: F1
and accuracy; STS-B: Pearson and Spearman; MNLI: its matched and mismatched accuracies), and :func:`glue_average`
averages the task scores, the usual single GLUE number (WNLI included only when it is in the dict).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats


def _arrays(predictions, targets) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(predictions, dtype=float), np.asarray(targets, dtype=float)
    if p.shape != t.shape or p.ndim != 1 or p.size == 0:
        raise ValueError(f"predictions and targets must be equal-length 1-D, got {p.shape} and {t.shape}")
    return p, t


def matthews(predictions, targets) -> float:
    """Matthews correlation of binary labels; 0 when a row or column of the confusion matrix is empty."""
    p, t = _arrays(predictions, targets)
    tp, tn = float(((p == 1) & (t == 1)).sum()), float(((p == 0) & (t == 0)).sum())
    fp, fn = float(((p == 1) & (t == 0)).sum()), float(((p == 0) & (t == 1)).sum())
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denom if denom else 0.0


def f1(predictions, targets) -> float:
    p, t = _arrays(predictions, targets)
    tp = float(((p == 1) & (t == 1)).sum())
    denom = float((p == 1).sum() + (t == 1).sum())
    return 2 * tp / denom if denom else 0.0


def metric(name: str, predictions, targets) -> float:
    p, t = _arrays(predictions, targets)
    if name == "accuracy":
        return float((p == t).mean())
    if name == "f1":
        return f1(p, t)
    if name == "matthews":
        return matthews(p, t)
    if name in ("pearson", "spearman"):
        if np.ptp(p) == 0 or np.ptp(t) == 0:
            return 0.0  # a constant prediction has no correlation
        fn = stats.pearsonr if name == "pearson" else stats.spearmanr
        return float(fn(p, t)[0])
    raise ValueError(f"metric must be one of accuracy, f1, matthews, pearson, spearman; got {name!r}")


def task_score(scores: Mapping[str, float]) -> float:
    """The mean of one task's metric values (e.g. ``{"f1": .., "accuracy": ..}``)."""
    if not scores:
        raise ValueError("task_score needs at least one metric value")
    return float(np.mean(list(scores.values())))


def glue_average(task_scores: Mapping[str, float], exclude: Sequence[str] = ()) -> float:
    """The mean over tasks of their :func:`task_score` values (``exclude``: e.g. ``("wnli",)``, as BERT's table)."""
    kept = [v for k, v in task_scores.items() if k not in exclude]
    if not kept:
        raise ValueError("glue_average needs at least one task score")
    return float(np.mean(kept))

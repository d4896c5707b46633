"""Perplexity of a language model, overall and sliced into AR-hit and other tokens (Zoology).

The AR-hit context is the evaluation window itself: a target token is a hit when its bigram occurred
earlier in the same window (see :func:`kernelized.eval.ar_hit.ar_hit_mask`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kernelized.eval.ar_hit import BigramCounts, ar_hit_distance, ar_hit_mask

#: AR hits split by how often their bigram occurs in the training stream: [lo, hi) count ranges.
FREQUENCY_BUCKETS = ((0, 1), (1, 10), (10, 100), (100, None))
#: AR hits split by how far back (in tokens) their bigram last occurred in the window: [lo, hi) ranges.
DISTANCE_BUCKETS = ((1, 4), (4, 16), (16, 64), (64, 256), (256, None))


def bucket_name(lo: int, hi: int | None, prefix: str = "train") -> str:
    """``train0``, ``train1-9``, ``train10-99``, ``train100+`` (``prefix="dist"``: ``dist1-3``, ..., ``dist256+``)."""
    if hi is None:
        return f"{prefix}{lo}+"
    return f"{prefix}{lo}" if hi == lo + 1 else f"{prefix}{lo}-{hi - 1}"


def make_lm_eval_fn(bigrams: BigramCounts | None = None, buckets=FREQUENCY_BUCKETS):
    """:func:`lm_eval_fn`, plus, given the training stream's bigram counts, the AR-hit loss per frequency bucket
    (``ar_hit_loss_train0``, ``ar_hit_loss_train1-9``, ...) and each bucket's share of the targets
    (``ar_hit_share_train0``, ...)."""

    def eval_fn(model: nn.Module, batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return lm_eval_fn(model, batch, bigrams=bigrams, buckets=buckets)

    return eval_fn


def lm_eval_fn(
    model: nn.Module, batch, bigrams: BigramCounts | None = None, buckets=FREQUENCY_BUCKETS
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Trainer eval_fn for ``(x [B, T], y [B, T])`` batches with ``y`` the next tokens of ``x``.

    Returns ``{name: (sum, count)}``: ``loss`` (mean next-token NLL, nats), ``ar_hit_loss`` and ``other_loss``
    (the same over AR-hit and other targets), ``ar_hit_fraction`` and ``accuracy``. Targets equal to -100
    are ignored. :func:`perplexities` turns the aggregated losses into perplexities.
    """
    x, y = batch[0], batch[-1]
    out = model(x)
    logits = out[0] if isinstance(out, (tuple, list)) else out
    B, T, V = logits.shape
    valid = y != -100
    nll = F.cross_entropy(logits.float().reshape(-1, V), y.reshape(-1), ignore_index=-100, reduction="none")
    nll = nll.view(B, T)
    # the window's token stream is x followed by the last target; its AR-hit mask over targets is [:, 1:]
    stream = torch.cat([x, y[:, -1:].clamp_min(0)], dim=1)
    hit = ar_hit_mask(stream, padding_mask=torch.cat([torch.zeros_like(valid[:, :1]), ~valid], 1))[:, 1:] & valid
    other = valid & ~hit
    correct = (logits.argmax(-1) == y) & valid
    out = {
        "loss": (nll[valid].sum(), valid.sum()),
        "ar_hit_loss": (nll[hit].sum(), hit.sum()),
        "other_loss": (nll[other].sum(), other.sum()),
        "ar_hit_fraction": (hit.sum(), valid.sum()),
        "accuracy": (correct.sum(), valid.sum()),
    }
    distance = ar_hit_distance(stream, padding_mask=torch.cat([torch.zeros_like(valid[:, :1]), ~valid], 1))[:, 1:]
    for lo, hi in DISTANCE_BUCKETS:  # AR hits by how far back their bigram occurred last (ReBased's recall slices)
        sel = hit & (distance >= lo) & (distance < hi if hi is not None else True)
        name = bucket_name(lo, hi, "dist")
        out[f"ar_hit_loss_{name}"] = (nll[sel].sum(), sel.sum())
        out[f"ar_hit_share_{name}"] = (sel.sum(), valid.sum())
    if bigrams is not None:
        seen = bigrams(stream)[:, 1:]  # training-set count of each target's bigram
        for lo, hi in buckets:
            sel = hit & (seen >= lo) & (seen < hi if hi is not None else True)
            name = bucket_name(lo, hi)
            out[f"ar_hit_loss_{name}"] = (nll[sel].sum(), sel.sum())
            out[f"ar_hit_share_{name}"] = (sel.sum(), valid.sum())
    return out


def perplexities(metrics: dict[str, float]) -> dict[str, float]:
    """Add ``ppl``, ``ar_hit_ppl``, ``other_ppl`` (and ``ar_hit_ppl_<bucket>``): exp of the mean NLLs."""
    out = dict(metrics)
    for loss, value in metrics.items():
        if loss == "loss" or (loss.endswith("_loss") or "_loss_" in loss) and loss != "train_loss":
            ppl = "ppl" if loss == "loss" else loss.replace("loss", "ppl")
            if math.isnan(value):  # an empty slice (no such targets): no perplexity, not an infinite one
                out[ppl] = math.nan
            else:
                out[ppl] = math.exp(value) if math.isfinite(value) and value < 700 else float("inf")
    return out


@torch.no_grad()
def evaluate_perplexity(
    model: nn.Module,
    data,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    bigrams: BigramCounts | None = None,
) -> dict:
    """Perplexity metrics of ``model`` over a dataset of ``(x, y)`` windows (e.g. ``TokenWindows``), one process;
    with ``bigrams`` (the training stream's counts) also the AR-hit perplexity per frequency bucket."""
    was_training = model.training
    model.eval()
    sums: dict[str, list[float]] = {}
    for start in range(0, len(data), batch_size):
        items = [data[i] for i in range(start, min(start + batch_size, len(data)))]
        batch = tuple(torch.stack(parts).to(device) for parts in zip(*items))
        for name, (s, c) in lm_eval_fn(model, batch, bigrams=bigrams).items():
            acc = sums.setdefault(name, [0.0, 0.0])
            acc[0] += float(s)
            acc[1] += float(c)
    model.train(was_training)
    metrics = {k: (s / c if c > 0 else float("nan")) for k, (s, c) in sums.items()}
    metrics["tokens"] = sums["loss"][1] if sums else 0
    metrics["ar_hit_tokens"] = sums["ar_hit_loss"][1] if sums else 0
    return perplexities(metrics)

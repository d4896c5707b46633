"""AdamW with nanoGPT's weight-decay rule, and the learning-rate schedules as pure functions of the step."""

from __future__ import annotations

import math

import torch
from torch import nn

from kernelized.train.config import TrainConfig


def parameter_groups(model: nn.Module, weight_decay: float, decay_feature_maps: bool = False) -> list[dict]:
    """Split parameters into a decayed and a non-decayed AdamW group.

    Decayed: tensors with >= 2 dims (linear weights, embeddings, convolution kernels). Not decayed: biases,
    norm weights, other 1-dim/scalar parameters, and everything inside a
    :class:`kernelized.kernels.FeatureMap` unless ``decay_feature_maps``: ReBased's gamma and beta are
    [H, d] (2 dims) but act as a norm's affine weights, and learned spectral frequencies would be pulled
    towards 0 (a wider kernel), so the dim rule alone would decay them wrongly.
    Shared (tied) parameters are counted once.
    """
    from kernelized.kernels.base import FeatureMap  # a lower layer; imported lazily to keep train light

    in_feature_map: set[int] = set()
    for module in model.modules():
        if isinstance(module, FeatureMap):
            in_feature_map.update(id(p) for p in module.parameters())
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = id(p) in in_feature_map and not decay_feature_maps
        (decay if p.dim() >= 2 and not skip else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups`; the learning rate is set every step by the Trainer."""
    groups = parameter_groups(model, cfg.weight_decay, cfg.decay_feature_maps)
    if not groups:
        raise ValueError("model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def learning_rate(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based; the step about to be taken).

    With ``t = step + 1`` (so the first step never has lr 0):
    - warmup (all but rsqrt): ``lr * t / warmup_steps`` while ``t <= warmup_steps``;
    - "constant": ``lr``;
    - "cosine": ``lr * (m + (1 - m) * (1 + cos(pi * p)) / 2)``, p = the fraction of post-warmup steps done;
    - "linear": ``lr * (1 - (1 - m) * p)`` (m = min_lr_ratio);
    - "rsqrt": LRA's ``constant * linear_warmup * rsqrt_decay``: ``lr * min(1, t/w) / sqrt(max(t, w))``,
      w = max(warmup_steps, 1); peak ``lr / sqrt(w)`` at t = w (LRA ListOps: 0.05, 1000 -> 1.58e-3).
    """
    t = step + 1
    if cfg.schedule == "rsqrt":
        w = max(cfg.warmup_steps, 1)
        return cfg.lr * min(1.0, t / w) / math.sqrt(max(t, w))
    if t <= cfg.warmup_steps:
        return cfg.lr * t / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    p = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    p = min(max(p, 0.0), 1.0)
    m = cfg.min_lr_ratio
    if cfg.schedule == "cosine":
        return cfg.lr * (m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * p)))
    return cfg.lr * (1.0 - (1.0 - m) * p)  # linear

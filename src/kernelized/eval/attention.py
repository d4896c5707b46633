"""Attention maps of trained models, their overlap with softmax attention, and ReBased's learned gamma/beta.

Protocol for the overlap (the ReBased paper compares where linear attention puts its mass with a softmax
Transformer trained on the same MQAR task; its exact procedure is not published, so this one is ours):

1. Both models see the same inputs. Each attention layer's normalised weights ``[B, H, T, T]`` are averaged
   over heads (the average of row-stochastic maps is row-stochastic; heads of the two models do not
   correspond one to one, and the models may have different head counts).
2. For each query row, the *top-mass set* is the smallest set of keys whose weights sum to at least
   ``mass`` (0.9 by default) of the row's total, taking keys from the largest weight down.
3. The IoU of two rows is ``|A ∩ B| / |A ∪ B|`` of their top-mass sets; rows are averaged over the query
   positions that carry a label (in MQAR: the positions where a key is queried and its value must be
   recalled), then over examples.
4. Layer ``i`` of one model is compared with layer ``i`` of the other (attention layers counted in order).
5. Because the head mean blurs a retrieving head with heads that do other work, :func:`best_head_iou` also
   reports the single head whose map overlaps most with the other model's head mean.

A map compared with itself gives 1; maps whose top-mass sets never meet give 0.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from kernelized._checks import check_float_tensor


@torch.no_grad()
def attention_maps(model: nn.Module, *inputs, **kwargs) -> dict[str, torch.Tensor]:
    """Normalised attention weights ``{layer name: [B, H, T, T]}`` of every layer that has ``attention_weights``.

    Runs ``model(*inputs, **kwargs)`` once in eval mode; each attention layer's input is caught by a hook and
    passed to its ``attention_weights(x)``, so the maps are the ones the model applied on this forward.
    """
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in model.named_modules():
        if callable(getattr(module, "attention_weights", None)):

            def hook(mod, args, kw, name=name):
                x = args[0] if args else kw["x"]
                mask = kw.get("key_padding_mask", args[1] if len(args) > 1 else None)
                captured[name] = mod.attention_weights(x, key_padding_mask=mask).float().cpu()

            hooks.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        model(*inputs, **kwargs)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return captured


def top_mass_sets(weights: torch.Tensor, mass: float = 0.9) -> torch.Tensor:
    """Boolean ``[..., T, S]``: per row, the smallest set of keys holding ``>= mass`` of the row's total weight.

    Keys enter from the largest weight down; ties are broken by key position. A row of zeros gives an empty set.
    """
    check_float_tensor("weights", weights)
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass!r}")
    w = weights.double().clamp_min(0)
    total = w.sum(-1, keepdim=True)
    sorted_w, order = torch.sort(w, dim=-1, descending=True, stable=True)
    before = sorted_w.cumsum(-1) - sorted_w  # mass of the keys taken before this one
    # take a key while the mass before it is still short of the target; 1e-12 absorbs rounding at mass = 1
    take = (before < mass * total * (1 - 1e-12)) & (sorted_w > 0)
    return torch.zeros_like(take).scatter(-1, order, take)


def set_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boolean sets along the last axis: ``[..., S] x [..., S] -> [...]`` (NaN where both are empty)."""
    inter = (a & b).sum(-1).double()
    union = (a | b).sum(-1).double()
    return inter / union  # 0 / 0 = NaN marks rows with nothing to compare


def map_iou(
    a: torch.Tensor, b: torch.Tensor, mass: float = 0.9, query_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-example IoU of the top-mass sets of two maps, averaged over the selected query rows.

    Args:
        a, b: attention maps ``[B, H, T, T]`` (averaged over heads here) or ``[B, T, T]``.
        mass: the share of each row's weight that its top-mass set must hold.
        query_mask: bool ``[B, T]``, the rows to average (e.g. ``labels != -100``); None = every row.

    Returns: ``[B]`` float64, the mean IoU of each example's selected rows.
    """
    check_float_tensor("a", a)
    check_float_tensor("b", b)
    a, b = (x.mean(1) if x.dim() == 4 else x for x in (a, b))
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(
            f"a and b must be maps [B, (H,) T, T] of the same B and T, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    iou = set_iou(top_mass_sets(a, mass), top_mass_sets(b, mass))  # [B, T]
    rows = torch.ones_like(iou, dtype=torch.bool) if query_mask is None else query_mask.to(iou.device).bool()
    rows = rows & ~iou.isnan()
    return (iou.nan_to_num(0.0) * rows).sum(-1) / rows.sum(-1).clamp_min(1)


def best_head_iou(
    a: torch.Tensor, b: torch.Tensor, mass: float = 0.9, query_mask: torch.Tensor | None = None
) -> tuple[int, float]:
    """The head of ``a [B, H, T, T]`` whose map overlaps most with ``b``'s head mean: ``(head, mean IoU)``.

    Linear attention often spreads retrieval over a few heads while the others do something else; the head
    mean then blurs the retrieving head, and this score shows whether any single head attends like ``b``.
    """
    check_float_tensor("a", a, ndim=4, shape_hint="[B, H, T, T]")
    ref = b.mean(1) if b.dim() == 4 else b
    scores = [map_iou(a[:, h], ref, mass, query_mask).mean().item() for h in range(a.shape[1])]
    head = max(range(len(scores)), key=scores.__getitem__)
    return head, scores[head]


def gamma_beta_stats(model: nn.Module) -> list[dict]:
    """Mean and std of every learned ``gamma_*`` / ``beta_*`` of the model's feature maps (ReBased's affine).

    Returns one row per parameter: ``{"layer", "param" (gamma_q, beta_k, ...), "mean", "std", "abs_mean"}``.
    """
    rows = []
    for name, param in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf.startswith(("gamma_", "beta_")):
            p = param.detach().double()
            layer = name[: -len(leaf) - 1]
            rows.append(
                {
                    "layer": layer,
                    "param": leaf,
                    "mean": p.mean().item(),
                    "std": p.std().item() if p.numel() > 1 else 0.0,
                    "abs_mean": p.abs().mean().item(),
                }
            )
    return rows


def draw_maps(
    maps: dict[str, torch.Tensor], path: str | Path, title: str = "", marks: torch.Tensor | None = None
) -> Path:
    """Save a PNG grid of attention maps ``{name: [T, T]}`` (one panel each, row = query, column = key).

    ``marks``: optional bool ``[T]``, query rows to tick on the y axis (e.g. labelled positions).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(maps)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        m = maps[name].float().cpu()
        ax.imshow(m.numpy(), cmap="viridis", vmin=0.0, vmax=max(float(m.max()), 1e-12), interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("key position", fontsize=7)
        ax.set_ylabel("query position", fontsize=7)
        ax.tick_params(labelsize=6)
        if marks is not None:
            ax.set_yticks(torch.nonzero(marks).flatten().tolist())
            ax.tick_params(axis="y", labelsize=4)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

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

Models: :func:`model_maps` reads the maps of a language model (causal), of a classifier
(:class:`~kernelized.models.classifier.EncoderClassifier`, bidirectional) and of a two-tower
:class:`~kernelized.models.classifier.DualEncoderClassifier` (its shared tower on one input). A classifier with
[CLS] pooling prepends [CLS] inside the model and cuts the columns that are padding in every row of the batch,
so its maps are ``[B, H, 1 + T', 1 + T']`` for inputs ``[B, L]`` (``T' <= L``): :func:`query_rows` puts a
mask over the inputs onto the maps' positions. Layers with maps: softmax and kernel attention
(``attention_weights``) and sliding-window attention (:func:`sliding_window_weights`); convolutions have none.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from kernelized._checks import check_float_tensor
from kernelized.layers.rotary import apply_rotary
from kernelized.layers.sliding_window import SlidingWindowAttention


@torch.no_grad()
def sliding_window_weights(
    layer: SlidingWindowAttention, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The softmax weights ``[B, H, T, T]`` a :class:`SlidingWindowAttention` applies to ``x [B, T, D]`` (no state):
    zero outside the window band and at padded keys; a row with no key left is all zero, as the layer's output."""
    B, T, _ = x.shape
    q, k, _ = layer.qkv(x).view(B, T, 3, layer.num_heads, layer.head_dim).unbind(dim=2)
    pos = torch.arange(T, device=x.device)
    if layer.rotary:
        q, k = apply_rotary(q, pos, layer.rotary_base), apply_rotary(k, pos, layer.rotary_base)
    dist = pos[:, None] - pos[None, :]
    allowed = ((dist >= 0) & (dist < layer.window) if layer.causal else dist.abs() < layer.window)[None, None]
    if key_padding_mask is not None:
        allowed = allowed & ~key_padding_mask.bool()[:, None, None, :]
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    logits = torch.einsum("bthd,bshd->bhts", q.to(acc), k.to(acc)) * layer.head_dim**-0.5
    return torch.softmax(logits.masked_fill(~allowed, float("-inf")), -1).nan_to_num(0.0)


def _weights_fn(module: nn.Module) -> Callable | None:
    """How to read a module's attention weights: its ``attention_weights``, a known layer's reader, or None."""
    if callable(getattr(module, "attention_weights", None)):
        return module.attention_weights
    if isinstance(module, SlidingWindowAttention):
        return lambda x, key_padding_mask=None: sliding_window_weights(module, x, key_padding_mask)
    return None


@torch.no_grad()
def attention_maps(model: nn.Module, *inputs, forward: Callable | None = None, **kwargs) -> dict[str, torch.Tensor]:
    """Normalised attention weights ``{layer name: [B, H, T, T]}`` of every attention layer of ``model``.

    Runs ``model(*inputs, **kwargs)`` (or ``forward(*inputs, **kwargs)``, e.g. a tower's ``encode``) once in eval
    mode; each attention layer's input is caught by a hook and passed to its ``attention_weights(x)`` (sliding
    window: :func:`sliding_window_weights`), so the maps are the ones the model applied on this forward.
    """
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in model.named_modules():
        weights = _weights_fn(module)
        if weights is not None:

            def hook(mod, args, kw, name=name, weights=weights):
                x = args[0] if args else kw["x"]
                mask = kw.get("key_padding_mask", args[1] if len(args) > 1 else None)
                captured[name] = weights(x, key_padding_mask=mask).float().cpu()

            hooks.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        (forward or model)(*inputs, **kwargs)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return captured


def has_cls_token(model: nn.Module) -> bool:
    """Whether the model prepends a [CLS] token to its inputs (a classifier with [CLS] pooling, or its tower)."""
    encoder = getattr(model, "tower", model)  # a two-tower model's shared tower
    return getattr(encoder, "pooling", None) == "cls"


def model_maps(model: nn.Module, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`attention_maps` of a model on token ids ``tokens [B, L]``: a language model's or a classifier's
    forward, a two-tower model's shared tower on ``tokens`` as its one input. Positions: see :func:`query_rows`."""
    tower = getattr(model, "tower", None)
    if tower is not None and callable(getattr(tower, "encode", None)):
        return attention_maps(model, tokens, forward=tower.encode)
    return attention_maps(model, tokens)


def query_rows(model: nn.Module, query_mask: torch.Tensor, length: int) -> torch.Tensor:
    """A mask over a model's inputs ``[B, L]`` as a mask over the positions of its maps ``[B, length]``.

    A [CLS]-pooling classifier's map position 0 is its [CLS] token (a real query: True) and position ``i > 0``
    is input token ``i - 1``; its maps end at the batch's last non-padding column (``length - 1 <= L``).
    Other models' positions are the inputs' (``length <= L``: cut the same way by a classifier).
    """
    offset = 1 if has_cls_token(model) else 0
    body = query_mask.bool()[:, : length - offset]
    if body.shape[1] != length - offset:
        raise ValueError(f"maps of {length} positions do not fit inputs of {query_mask.shape[1]} (+ {offset} [CLS])")
    if offset:
        body = torch.cat([torch.ones_like(body[:, :1]), body], dim=1)
    return body


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
    maps: dict[str, torch.Tensor | None],
    path: str | Path,
    title: str = "",
    marks: torch.Tensor | None = None,
    cols: int | None = None,
) -> Path:
    """Save a PNG grid of attention maps ``{name: [T, T]}`` (one panel each, row = query, column = key).

    Every panel has its own colour scale, 0 to its largest weight, and its own colour bar (softmax maps peak
    near 1 while linear attention spreads ~1/T over many keys: one shared scale would leave the latter blank).
    ``marks``: optional bool ``[T]``, query rows ticked in red on the y axis (e.g. labelled positions).
    ``cols``: panels per row (default up to 4); a ``None`` value leaves its cell empty (to start a new row).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(maps)
    cols = cols or min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        if maps[name] is not None:
            _draw_panel(fig, ax, name, maps[name].float().cpu(), marks)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _draw_panel(fig, ax, name: str, m: torch.Tensor, marks: torch.Tensor | None) -> None:
    ax.axis("on")
    image = ax.imshow(m.numpy(), cmap="viridis", vmin=0.0, vmax=max(float(m.max()), 1e-12), interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=5)
    ax.set_title(name, fontsize=7)
    ax.set_xlabel("key position", fontsize=6)
    ax.set_ylabel("query position", fontsize=6)
    ax.tick_params(labelsize=5)
    if marks is not None:
        rows = torch.nonzero(marks.bool()[: m.shape[0]]).flatten().tolist()
        step = math.ceil(len(rows) / 12) or 1  # every row ticked, about 12 of them labelled
        ax.set_yticks(rows, [str(r) if i % step == 0 else "" for i, r in enumerate(rows)])
        ax.tick_params(axis="y", colors="tab:red", length=3, labelsize=4)

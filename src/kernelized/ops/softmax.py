"""Softmax attention in the same ``[B, T, H, D]`` layout, on torch's scaled_dot_product_attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernelized.ops._validate import check_padding_mask, check_qkv


def softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    scale: float | None = None,
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """``softmax(scale q k^T + mask) v`` with q, k, v ``[B, T, H, D]``; returns ``[B, T, H, D]``.

    key_padding_mask: bool ``[B, T]``, True at padding. A query that sees no real key (e.g. a left-padding
    position under the causal mask) gets a zero output instead of NaN.
    """
    B, T, H = check_qkv(q, k, v)
    check_padding_mask(key_padding_mask, B, T)
    qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))  # [B, H, T, D]
    if key_padding_mask is None:
        o = F.scaled_dot_product_attention(qh, kh, vh, is_causal=causal, scale=scale, dropout_p=dropout_p)
        return o.transpose(1, 2)
    allowed = ~key_padding_mask[:, None, None, :]  # [B, 1, 1, T]
    if causal:
        allowed = allowed & torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    empty = ~allowed.any(-1, keepdim=True)  # rows with no key to attend to
    o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=allowed | empty, scale=scale, dropout_p=dropout_p)
    return o.masked_fill(empty, 0.0).transpose(1, 2)

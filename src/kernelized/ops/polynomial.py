"""Implicit polynomial attention: ``sum_p c_p (scale q.k)^p`` computed from q, k directly, never from features.

This is how the ReBased and Based authors train (``parallel_rebased``, ``parallel_based``): O(T^2 d) instead of
materialising C(d+p-1, p) features. Equal to linear attention on the polynomial feature maps.
"""

from __future__ import annotations

import torch

from kernelized.ops import triton as _triton
from kernelized.ops._validate import check_padding_mask, check_qkv


def polynomial_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    degree: int = 2,
    terms: dict[int, float] | None = None,
    scale: float | None = None,
    causal: bool = True,
    normalize: bool = True,
    eps: float = 1e-6,
    key_padding_mask: torch.Tensor | None = None,
    block_size: int = 1024,
) -> torch.Tensor:
    """``o_t = sum_s A_ts v_s / (sum_s A_ts + eps)`` with ``A_ts = sum_p terms[p] * (scale * q_t . k_s)**p``.

    Args:
        q, k: ``[B, T, H, d]`` (ReBased: the normalised, affine-transformed q~, k~); v ``[B, T, H, Dv]``.
        degree: shorthand for ``terms={degree: 1.0}`` (ReBased: 2).
        terms: polynomial coefficients by power; Based's Taylor kernel is ``{0: 1, 1: 1, 2: 0.5}``.
        scale: multiplies q.k; default ``d ** -0.5``.
        causal, normalize, eps, key_padding_mask: as in :func:`kernelized.ops.linear_attention`.
        block_size: queries per block, bounding the ``[B, H, block, T]`` temporaries.

    Returns: ``o [B, T, H, Dv]`` in v's dtype (float32 accumulation).
    """
    B, T, H = check_qkv(q, k, v)
    check_padding_mask(key_padding_mask, B, T)
    if terms is None:
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
            raise ValueError(f"degree must be a non-negative integer, got {degree!r}")
        terms = {degree: 1.0}
    if not terms or any(not isinstance(p, int) or p < 0 for p in terms):
        raise ValueError(f"terms must map non-negative integer powers to coefficients, got {terms!r}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if _triton.usable(q, k, v) and _triton.supports_polynomial(terms, q.shape[-1], v.shape[-1]):  # GPU kernel
        out = _triton.call("polynomial", lambda: _triton.polynomial_attention(
            q, k, v, terms=terms, scale=scale, causal=causal, normalize=normalize, eps=eps,
            key_padding_mask=key_padding_mask,
        ), q.device, q.dtype)  # fmt: skip
        if out is not None:  # None: the kernel cannot run here (it warned once); the PyTorch path below serves
            return out

    out_dtype = v.dtype
    acc = torch.float64 if torch.float64 in (q.dtype, k.dtype, v.dtype) else torch.float32
    qh, kh, vh = (x.to(acc).transpose(1, 2) for x in (q, k, v))  # [B, H, T, .]
    keep = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]  # [B, 1, 1, T]
    outs = []
    for start in range(0, T, block_size):
        stop = min(start + block_size, T)
        s = scale * (qh[:, :, start:stop] @ kh.transpose(-1, -2))  # [B, H, b, T]
        A = sum(c * (s**p if p else torch.ones_like(s)) for p, c in sorted(terms.items()))
        if causal:
            rows = torch.arange(start, stop, device=q.device)[:, None]
            A = A.masked_fill(torch.arange(T, device=q.device)[None, :] > rows, 0.0)
        if keep is not None:
            A = A.masked_fill(~keep, 0.0)
        o = A @ vh
        outs.append(o / (A.sum(-1, keepdim=True) + eps) if normalize else o)
    return torch.cat(outs, dim=2).transpose(1, 2).to(out_dtype)

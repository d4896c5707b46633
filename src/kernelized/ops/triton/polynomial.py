"""Implicit polynomial attention in Triton, flash-attention style: ``sum_p c_p (scale q.k)^p`` never materialised.

One program owns a block of BT queries and walks the key blocks (up to the diagonal when causal), keeping
the numerator ``[BT, Dv]`` and the normaliser ``[BT]`` in registers; scores live only as ``[BT, BS]``
tiles. The backward pass recomputes the tiles: one kernel for dq (per query block), one for dk and dv
(per key block). This module defines ``@triton.jit`` kernels at import, so import it only where Triton
runs (CUDA, or ``TRITON_INTERPRET=1`` for the CPU tests); ``kernelized.ops.triton`` imports it lazily.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_DEGREE = 4


@triton.jit
def _poly(s, c0, c1, c2, c3, c4, DEG: tl.constexpr):
    """``sum_{p <= DEG} c_p s^p`` (Horner)."""
    a = tl.zeros_like(s) + c4
    if DEG < 4:
        a = tl.zeros_like(s) + c3
    if DEG < 3:
        a = tl.zeros_like(s) + c2
    if DEG < 2:
        a = tl.zeros_like(s) + c1
    if DEG >= 4:
        a = a * s + c3
    if DEG >= 3:
        a = a * s + c2
    if DEG >= 2:
        a = a * s + c1
    return a * s + c0


@triton.jit
def _dpoly(s, c1, c2, c3, c4, DEG: tl.constexpr):
    """``d/ds sum_p c_p s^p = sum_p p c_p s^(p-1)``."""
    a = tl.zeros_like(s) + 4.0 * c4
    if DEG < 4:
        a = tl.zeros_like(s) + 3.0 * c3
    if DEG < 3:
        a = tl.zeros_like(s) + 2.0 * c2
    if DEG < 2:
        a = tl.zeros_like(s) + c1
    if DEG >= 4:
        a = a * s + 3.0 * c3
    if DEG >= 3:
        a = a * s + 2.0 * c2
    if DEG >= 2:
        a = a * s + c1
    return a


@triton.jit
def _poly_fwd_kernel(
    q, k, v, o, z, kmask,
    stride_qb, stride_qt, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    stride_ob, stride_ot, stride_oh,
    T, H, D, DV, scale, eps, c0, c1, c2, c3, c4,
    DEG: tl.constexpr, CAUSAL: tl.constexpr, NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr,
    BT: tl.constexpr, BS: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid_t, pid_bh = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    offs_t = pid_t * BT + tl.arange(0, BT)
    offs_d, offs_v = tl.arange(0, BD), tl.arange(0, BV)
    q_ptr = q + b * stride_qb + h * stride_qh + offs_t[:, None] * stride_qt + offs_d[None, :]
    bq = tl.load(q_ptr, mask=(offs_t[:, None] < T) & (offs_d[None, :] < D), other=0.0)
    acc = tl.zeros([BT, BV], dtype=tl.float32)
    den = tl.zeros([BT], dtype=tl.float32)
    hi = T
    if CAUSAL:
        hi = tl.minimum((pid_t + 1) * BT, T)
    for start in range(0, hi, BS):
        offs_s = start + tl.arange(0, BS)
        k_ptr = k + b * stride_kb + h * stride_kh + offs_s[:, None] * stride_kt + offs_d[None, :]
        v_ptr = v + b * stride_vb + h * stride_vh + offs_s[:, None] * stride_vt + offs_v[None, :]
        bk = tl.load(k_ptr, mask=(offs_s[:, None] < T) & (offs_d[None, :] < D), other=0.0)
        bv = tl.load(v_ptr, mask=(offs_s[:, None] < T) & (offs_v[None, :] < DV), other=0.0)
        s = tl.dot(bq, tl.trans(bk), input_precision=PRECISION) * scale  # [BT, BS]
        a = _poly(s, c0, c1, c2, c3, c4, DEG)
        keep = offs_s[None, :] < T
        if CAUSAL:
            keep = keep & (offs_t[:, None] >= offs_s[None, :])
        if HAS_MASK:
            valid = tl.load(kmask + b * T + offs_s, mask=offs_s < T, other=0)
            keep = keep & (valid[None, :] != 0)
        a = tl.where(keep, a, 0.0)
        acc += tl.dot(a.to(bv.dtype), bv, input_precision=PRECISION)
        den += tl.sum(a, axis=1)
    if NORMALIZE:
        acc = acc / (den[:, None] + eps)
    o_ptr = o + b * stride_ob + h * stride_oh + offs_t[:, None] * stride_ot + offs_v[None, :]
    tl.store(o_ptr, acc.to(o.dtype.element_ty), mask=(offs_t[:, None] < T) & (offs_v[None, :] < DV))
    tl.store(z + pid_bh * T + offs_t, den, mask=offs_t < T)


@triton.jit
def _poly_bwd_dq_kernel(
    q, k, v, dn, dd, dq, kmask,
    stride_qb, stride_qt, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    T, H, D, DV, scale, c0, c1, c2, c3, c4,
    DEG: tl.constexpr, CAUSAL: tl.constexpr, NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr,
    BT: tl.constexpr, BS: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    # dn (gradient of the numerator) has v's layout in fp32, dd (of the normaliser) is [B*H, T]; dq has q's.
    pid_t, pid_bh = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    offs_t = pid_t * BT + tl.arange(0, BT)
    offs_d, offs_v = tl.arange(0, BD), tl.arange(0, BV)
    row_ok = offs_t < T
    bq = tl.load(
        q + b * stride_qb + h * stride_qh + offs_t[:, None] * stride_qt + offs_d[None, :],
        mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0,
    )  # fmt: skip
    bdn = tl.load(
        dn + b * stride_vb + h * stride_vh + offs_t[:, None] * stride_vt + offs_v[None, :],
        mask=row_ok[:, None] & (offs_v[None, :] < DV), other=0.0,
    )  # fmt: skip
    if NORMALIZE:
        bdd = tl.load(dd + pid_bh * T + offs_t, mask=row_ok, other=0.0)
    acc = tl.zeros([BT, BD], dtype=tl.float32)
    hi = T
    if CAUSAL:
        hi = tl.minimum((pid_t + 1) * BT, T)
    for start in range(0, hi, BS):
        offs_s = start + tl.arange(0, BS)
        bk = tl.load(
            k + b * stride_kb + h * stride_kh + offs_s[:, None] * stride_kt + offs_d[None, :],
            mask=(offs_s[:, None] < T) & (offs_d[None, :] < D), other=0.0,
        )  # fmt: skip
        bv = tl.load(
            v + b * stride_vb + h * stride_vh + offs_s[:, None] * stride_vt + offs_v[None, :],
            mask=(offs_s[:, None] < T) & (offs_v[None, :] < DV), other=0.0,
        )  # fmt: skip
        s = tl.dot(bq, tl.trans(bk), input_precision=PRECISION) * scale
        da = tl.dot(bdn, tl.trans(bv.to(tl.float32)), input_precision=PRECISION)  # [BT, BS]
        if NORMALIZE:
            da += bdd[:, None]
        ds = da * _dpoly(s, c1, c2, c3, c4, DEG)
        keep = offs_s[None, :] < T
        if CAUSAL:
            keep = keep & (offs_t[:, None] >= offs_s[None, :])
        if HAS_MASK:
            valid = tl.load(kmask + b * T + offs_s, mask=offs_s < T, other=0)
            keep = keep & (valid[None, :] != 0)
        ds = tl.where(keep, ds, 0.0)
        acc += tl.dot(ds, bk.to(tl.float32), input_precision=PRECISION)
    tl.store(
        dq + b * stride_qb + h * stride_qh + offs_t[:, None] * stride_qt + offs_d[None, :],
        (acc * scale).to(dq.dtype.element_ty), mask=row_ok[:, None] & (offs_d[None, :] < D),
    )  # fmt: skip


@triton.jit
def _poly_bwd_dkv_kernel(
    q, k, v, dn, dd, dk, dv, kmask,
    stride_qb, stride_qt, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    T, H, D, DV, scale, c0, c1, c2, c3, c4,
    DEG: tl.constexpr, CAUSAL: tl.constexpr, NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr,
    BT: tl.constexpr, BS: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    # One program per block of BS keys; walks the query blocks that can see them. dk has k's layout, dv v's.
    pid_s, pid_bh = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    offs_s = pid_s * BS + tl.arange(0, BS)
    offs_d, offs_v = tl.arange(0, BD), tl.arange(0, BV)
    col_ok = offs_s < T
    bk = tl.load(
        k + b * stride_kb + h * stride_kh + offs_s[:, None] * stride_kt + offs_d[None, :],
        mask=col_ok[:, None] & (offs_d[None, :] < D), other=0.0,
    )  # fmt: skip
    bv = tl.load(
        v + b * stride_vb + h * stride_vh + offs_s[:, None] * stride_vt + offs_v[None, :],
        mask=col_ok[:, None] & (offs_v[None, :] < DV), other=0.0,
    )  # fmt: skip
    keep_col = col_ok
    if HAS_MASK:
        valid = tl.load(kmask + b * T + offs_s, mask=col_ok, other=0)
        keep_col = keep_col & (valid != 0)
    acc_k = tl.zeros([BS, BD], dtype=tl.float32)
    acc_v = tl.zeros([BS, BV], dtype=tl.float32)
    lo = 0
    if CAUSAL:
        lo = (pid_s * BS // BT) * BT
    for start in range(lo, T, BT):
        offs_t = start + tl.arange(0, BT)
        row_ok = offs_t < T
        bq = tl.load(
            q + b * stride_qb + h * stride_qh + offs_t[:, None] * stride_qt + offs_d[None, :],
            mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0,
        )  # fmt: skip
        bdn = tl.load(
            dn + b * stride_vb + h * stride_vh + offs_t[:, None] * stride_vt + offs_v[None, :],
            mask=row_ok[:, None] & (offs_v[None, :] < DV), other=0.0,
        )  # fmt: skip
        s = tl.dot(bq, tl.trans(bk), input_precision=PRECISION) * scale  # [BT, BS]
        keep = row_ok[:, None] & keep_col[None, :]
        if CAUSAL:
            keep = keep & (offs_t[:, None] >= offs_s[None, :])
        a = tl.where(keep, _poly(s, c0, c1, c2, c3, c4, DEG), 0.0)
        acc_v += tl.dot(tl.trans(a), bdn, input_precision=PRECISION)
        da = tl.dot(bdn, tl.trans(bv.to(tl.float32)), input_precision=PRECISION)
        if NORMALIZE:
            bdd = tl.load(dd + pid_bh * T + offs_t, mask=row_ok, other=0.0)
            da += bdd[:, None]
        ds = tl.where(keep, da * _dpoly(s, c1, c2, c3, c4, DEG), 0.0)
        acc_k += tl.dot(tl.trans(ds), bq.to(tl.float32), input_precision=PRECISION)
    tl.store(
        dk + b * stride_kb + h * stride_kh + offs_s[:, None] * stride_kt + offs_d[None, :],
        (acc_k * scale).to(dk.dtype.element_ty), mask=col_ok[:, None] & (offs_d[None, :] < D),
    )  # fmt: skip
    tl.store(
        dv + b * stride_vb + h * stride_vh + offs_s[:, None] * stride_vt + offs_v[None, :],
        acc_v.to(dv.dtype.element_ty), mask=col_ok[:, None] & (offs_v[None, :] < DV),
    )  # fmt: skip


def _block(n: int) -> int:
    """Power-of-two tile width >= 16 (tl.dot's minimum)."""
    return max(16, triton.next_power_of_2(n))


def _precision(dtype: torch.dtype) -> str | None:
    # fp32 inputs get full-precision dots (matches the PyTorch reference); half types use tensor cores as is.
    return "ieee" if dtype == torch.float32 else None


class _PolynomialAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, coeffs, degree, scale, causal, normalize, eps, kmask):
        B, T, H, D = q.shape
        DV = v.shape[-1]
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        o = torch.empty_like(v)
        z = torch.empty(B * H, T, device=q.device, dtype=torch.float32)
        BD, BV = _block(D), _block(DV)
        BT = BS = 64 if max(BD, BV) <= 64 else 32
        meta = dict(
            DEG=degree, CAUSAL=causal, NORMALIZE=normalize, HAS_MASK=kmask is not None,
            BT=BT, BS=BS, BD=BD, BV=BV, PRECISION=_precision(q.dtype),
        )  # fmt: skip
        mask_arg = kmask if kmask is not None else z  # any pointer; unused when HAS_MASK is False
        _poly_fwd_kernel[(triton.cdiv(T, BT), B * H)](
            q, k, v, o, z, mask_arg,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1), o.stride(2),
            T, H, D, DV, scale, eps, *coeffs, **meta,
        )  # fmt: skip
        ctx.save_for_backward(q, k, v, o, z, kmask)
        ctx.coeffs, ctx.scale, ctx.eps, ctx.meta = coeffs, scale, eps, meta
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, z, kmask = ctx.saved_tensors
        B, T, H, D = q.shape
        DV = v.shape[-1]
        meta = ctx.meta
        do = do.float()
        if meta["NORMALIZE"]:
            zt = z.view(B, H, T).transpose(1, 2).unsqueeze(-1) + ctx.eps  # [B, T, H, 1]
            dn = (do / zt).contiguous()
            dd = (-(do * o.float()).sum(-1, keepdim=True) / zt).squeeze(-1).permute(0, 2, 1).contiguous()
        else:
            dn, dd = do.contiguous(), z  # dd unused
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        mask_arg = kmask if kmask is not None else z
        strides = (
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2),
        )  # fmt: skip
        args = (T, H, D, DV, ctx.scale, *ctx.coeffs)
        _poly_bwd_dq_kernel[(triton.cdiv(T, meta["BT"]), B * H)](q, k, v, dn, dd, dq, mask_arg, *strides, *args, **meta)
        _poly_bwd_dkv_kernel[(triton.cdiv(T, meta["BS"]), B * H)](
            q, k, v, dn, dd, dk, dv, mask_arg, *strides, *args, **meta
        )
        return dq, dk, dv, None, None, None, None, None, None, None


def polynomial_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    terms: dict[int, float],
    scale: float | None = None,
    causal: bool = True,
    normalize: bool = True,
    eps: float = 1e-6,
    key_padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``o_i = sum_j A_ij v_j / (sum_j A_ij + eps)``, ``A_ij = sum_p c_p (scale q_i.k_j)^p``, masked.

    Args:
        q, k: ``[B, T, H, D]`` (D <= 256); v: ``[B, T, H, Dv]`` (Dv <= 256), same dtype.
        terms: ``{p: c_p}`` with integer ``0 <= p <= 4``.
        scale: defaults to ``D ** -0.5``.
        key_padding_mask: bool ``[B, T]``, True = padding (never attended).
    Returns:
        o: ``[B, T, H, Dv]`` in v's dtype.
    """
    if not terms or any(int(p) != p or not 0 <= p <= MAX_DEGREE for p in terms):
        raise ValueError(f"terms must map degrees in 0..{MAX_DEGREE} to coefficients, got {terms!r}")
    coeffs = [0.0] * (MAX_DEGREE + 1)
    for p, c in terms.items():
        coeffs[int(p)] = float(c)
    degree = max(int(p) for p in terms)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    kmask = None
    if key_padding_mask is not None:
        kmask = (~key_padding_mask.bool()).to(torch.int8).contiguous()
    return _PolynomialAttention.apply(q, k, v, coeffs, degree, scale, bool(causal), bool(normalize), float(eps), kmask)

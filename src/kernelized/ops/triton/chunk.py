"""Chunked causal linear attention on materialised features in Triton, with the normaliser and states.

The sequence is cut into chunks of BC tokens. Forward: one kernel walks the chunks of each (batch, head)
in order and writes the state *before* every chunk (``S_n [F, Dv]`` and ``z_n [F]``, fp32); a second,
parallel over chunks, computes ``o = (q S_n + tril(q k^T) v) / (q z_n + rowsum(tril(q k^T)) + eps)``.
Backward mirrors it: a reverse walk accumulates ``dS_n = sum_{m > n} q_m^T dnum_m`` (plus the final
state's gradient), then two chunk-parallel kernels give dq, dk and dv. Like fla's ``chunk`` kernels, the
per-chunk states are materialised (``[B*H, N, F, Dv]`` fp32). Import only where Triton runs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _tile(ptr, rows, cols, stride_r, n_rows, n_cols):
    """Load ``ptr[rows, cols]`` with zero fill outside ``[n_rows, n_cols]`` (last dim contiguous)."""
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    return tl.load(ptr + rows[:, None] * stride_r + cols[None, :], mask=mask, other=0.0)


@triton.jit
def _state_fwd_kernel(
    k, v, s0, z0, hs, zs, sT, zT,
    stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
    T, H, F, DV, NT,
    HAS_INIT: tl.constexpr, STORE_FINAL: tl.constexpr,
    BC: tl.constexpr, BF: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    pid_f, pid_v, pid_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = pid_bh // H, pid_bh % H
    offs_f, offs_v = pid_f * BF + tl.arange(0, BF), pid_v * BV + tl.arange(0, BV)
    fv_mask = (offs_f[:, None] < F) & (offs_v[None, :] < DV)
    fv = offs_f[:, None] * DV + offs_v[None, :]
    state = tl.zeros([BF, BV], dtype=tl.float32)
    zstate = tl.zeros([BF], dtype=tl.float32)
    if HAS_INIT:
        state += tl.load(s0 + pid_bh * F * DV + fv, mask=fv_mask, other=0.0)
        zstate += tl.load(z0 + pid_bh * F + offs_f, mask=offs_f < F, other=0.0)
    for n in range(NT):
        tl.store(hs + (pid_bh * NT + n) * F * DV + fv, state, mask=fv_mask)
        if pid_v == 0:
            tl.store(zs + (pid_bh * NT + n) * F + offs_f, zstate, mask=offs_f < F)
        rows = n * BC + tl.arange(0, BC)
        bk = _tile(k + b * stride_kb + h * stride_kh, rows, offs_f, stride_kt, T, F)  # [BC, BF]
        bv = _tile(v + b * stride_vb + h * stride_vh, rows, offs_v, stride_vt, T, DV)  # [BC, BV]
        state += tl.dot(tl.trans(bk), bv, input_precision=PREC)
        zstate += tl.sum(bk.to(tl.float32), axis=0)
    if STORE_FINAL:
        tl.store(sT + pid_bh * F * DV + fv, state, mask=fv_mask)
        if pid_v == 0:
            tl.store(zT + pid_bh * F + offs_f, zstate, mask=offs_f < F)


@triton.jit
def _out_fwd_kernel(
    q, k, v, hs, zs, o, den,
    stride_qb, stride_qt, stride_qh, stride_vb, stride_vt, stride_vh,
    T, H, F, DV, NT, eps,
    NORMALIZE: tl.constexpr, BC: tl.constexpr, BF: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    # q and k share strides; o has v's.
    n, pid_v, pid_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = pid_bh // H, pid_bh % H
    rows = n * BC + tl.arange(0, BC)
    offs_v = pid_v * BV + tl.arange(0, BV)
    acc = tl.zeros([BC, BV], dtype=tl.float32)
    att = tl.zeros([BC, BC], dtype=tl.float32)
    d = tl.zeros([BC], dtype=tl.float32)
    for f0 in range(0, F, BF):
        offs_f = f0 + tl.arange(0, BF)
        bq = _tile(q + b * stride_qb + h * stride_qh, rows, offs_f, stride_qt, T, F)
        bk = _tile(k + b * stride_qb + h * stride_qh, rows, offs_f, stride_qt, T, F)
        bh = _tile(hs + (pid_bh * NT + n) * F * DV, offs_f, offs_v, DV, F, DV)  # [BF, BV]
        acc += tl.dot(bq, bh.to(bq.dtype), input_precision=PREC)
        att += tl.dot(bq, tl.trans(bk), input_precision=PREC)
        if NORMALIZE:
            bz = tl.load(zs + (pid_bh * NT + n) * F + offs_f, mask=offs_f < F, other=0.0)
            d += tl.sum(bq.to(tl.float32) * bz[None, :], axis=1)
    att = tl.where(rows[:, None] >= rows[None, :], att, 0.0)
    bv = _tile(v + b * stride_vb + h * stride_vh, rows, offs_v, stride_vt, T, DV)
    acc += tl.dot(att.to(bv.dtype), bv, input_precision=PREC)
    if NORMALIZE:
        d += tl.sum(att, axis=1)
        acc = acc / (d[:, None] + eps)
        if pid_v == 0:
            tl.store(den + pid_bh * T + rows, d, mask=rows < T)
    o_ptr = o + b * stride_vb + h * stride_vh + rows[:, None] * stride_vt + offs_v[None, :]
    tl.store(o_ptr, acc.to(o.dtype.element_ty), mask=(rows[:, None] < T) & (offs_v[None, :] < DV))


@triton.jit
def _state_bwd_kernel(
    q, dn, dd, dsT, dzT, dhs, dzs, ds0, dz0,
    stride_qb, stride_qt, stride_qh, stride_vb, stride_vt, stride_vh,
    T, H, F, DV, NT,
    NORMALIZE: tl.constexpr, HAS_FINAL_GRAD: tl.constexpr,
    BC: tl.constexpr, BF: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    # dn: gradient of the numerator, fp32 in v's layout; dd: of the normaliser, fp32 [B*H, T].
    pid_f, pid_v, pid_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = pid_bh // H, pid_bh % H
    offs_f, offs_v = pid_f * BF + tl.arange(0, BF), pid_v * BV + tl.arange(0, BV)
    fv_mask = (offs_f[:, None] < F) & (offs_v[None, :] < DV)
    fv = offs_f[:, None] * DV + offs_v[None, :]
    g = tl.zeros([BF, BV], dtype=tl.float32)
    gz = tl.zeros([BF], dtype=tl.float32)
    if HAS_FINAL_GRAD:
        g += tl.load(dsT + pid_bh * F * DV + fv, mask=fv_mask, other=0.0)
        gz += tl.load(dzT + pid_bh * F + offs_f, mask=offs_f < F, other=0.0)
    for i in range(NT):
        n = NT - 1 - i
        tl.store(dhs + (pid_bh * NT + n) * F * DV + fv, g, mask=fv_mask)
        if pid_v == 0:
            tl.store(dzs + (pid_bh * NT + n) * F + offs_f, gz, mask=offs_f < F)
        rows = n * BC + tl.arange(0, BC)
        bq = _tile(q + b * stride_qb + h * stride_qh, rows, offs_f, stride_qt, T, F).to(tl.float32)
        bdn = _tile(dn + b * stride_vb + h * stride_vh, rows, offs_v, stride_vt, T, DV)
        g += tl.dot(tl.trans(bq), bdn, input_precision=PREC)
        if NORMALIZE:
            bdd = tl.load(dd + pid_bh * T + rows, mask=rows < T, other=0.0)
            gz += tl.sum(bq * bdd[:, None], axis=0)
    tl.store(ds0 + pid_bh * F * DV + fv, g, mask=fv_mask)
    if pid_v == 0:
        tl.store(dz0 + pid_bh * F + offs_f, gz, mask=offs_f < F)


@triton.jit
def _dqk_bwd_kernel(
    q, k, v, dn, dd, hs, zs, dhs, dzs, dq, dk,
    stride_qb, stride_qt, stride_qh, stride_vb, stride_vt, stride_vh,
    T, H, F, DV, NT,
    NORMALIZE: tl.constexpr, BC: tl.constexpr, BF: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    n, pid_f, pid_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = pid_bh // H, pid_bh % H
    rows = n * BC + tl.arange(0, BC)
    offs_f = pid_f * BF + tl.arange(0, BF)
    bq = _tile(q + b * stride_qb + h * stride_qh, rows, offs_f, stride_qt, T, F).to(tl.float32)
    bk = _tile(k + b * stride_qb + h * stride_qh, rows, offs_f, stride_qt, T, F).to(tl.float32)
    p = tl.zeros([BC, BC], dtype=tl.float32)  # p[i, j] = dnum_i . v_j (+ dden_i)
    acc_q = tl.zeros([BC, BF], dtype=tl.float32)
    acc_k = tl.zeros([BC, BF], dtype=tl.float32)
    for v0 in range(0, DV, BV):
        offs_v = v0 + tl.arange(0, BV)
        bdn = _tile(dn + b * stride_vb + h * stride_vh, rows, offs_v, stride_vt, T, DV)
        bv = _tile(v + b * stride_vb + h * stride_vh, rows, offs_v, stride_vt, T, DV).to(tl.float32)
        bh = _tile(hs + (pid_bh * NT + n) * F * DV, offs_f, offs_v, DV, F, DV)  # [BF, BV]
        bdh = _tile(dhs + (pid_bh * NT + n) * F * DV, offs_f, offs_v, DV, F, DV)
        p += tl.dot(bdn, tl.trans(bv), input_precision=PREC)
        acc_q += tl.dot(bdn, tl.trans(bh), input_precision=PREC)
        acc_k += tl.dot(bv, tl.trans(bdh), input_precision=PREC)
    # the normaliser state z_n = sum of earlier keys: its gradient (later chunks and the final state) reaches dk
    bdz = tl.load(dzs + (pid_bh * NT + n) * F + offs_f, mask=offs_f < F, other=0.0)
    acc_k += bdz[None, :]
    if NORMALIZE:
        bdd = tl.load(dd + pid_bh * T + rows, mask=rows < T, other=0.0)
        bz = tl.load(zs + (pid_bh * NT + n) * F + offs_f, mask=offs_f < F, other=0.0)
        p += bdd[:, None]
        acc_q += bdd[:, None] * bz[None, :]
    p = tl.where(rows[:, None] >= rows[None, :], p, 0.0)
    acc_q += tl.dot(p, bk, input_precision=PREC)
    acc_k += tl.dot(tl.trans(p), bq, input_precision=PREC)
    out_mask = (rows[:, None] < T) & (offs_f[None, :] < F)
    out = b * stride_qb + h * stride_qh + rows[:, None] * stride_qt + offs_f[None, :]
    tl.store(dq + out, acc_q.to(dq.dtype.element_ty), mask=out_mask)
    tl.store(dk + out, acc_k.to(dk.dtype.element_ty), mask=out_mask)


@triton.jit
def _dv_bwd_kernel(
    q, k, dn, dhs, dv,
    stride_qb, stride_qt, stride_qh, stride_vb, stride_vt, stride_vh,
    T, H, F, DV, NT,
    BC: tl.constexpr, BF: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    n, pid_v, pid_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = pid_bh // H, pid_bh % H
    rows = n * BC + tl.arange(0, BC)
    offs_v = pid_v * BV + tl.arange(0, BV)
    att = tl.zeros([BC, BC], dtype=tl.float32)
    acc = tl.zeros([BC, BV], dtype=tl.float32)
    for f0 in range(0, F, BF):
        offs_f = f0 + tl.arange(0, BF)
        bq = _tile(q + b * stride_qb + h * stride_qh, rows, offs_f, stride_qt, T, F).to(tl.float32)
        bk = _tile(k + b * stride_qb + h * stride_qh, rows, offs_f, stride_qt, T, F).to(tl.float32)
        bdh = _tile(dhs + (pid_bh * NT + n) * F * DV, offs_f, offs_v, DV, F, DV)
        att += tl.dot(bq, tl.trans(bk), input_precision=PREC)
        acc += tl.dot(bk, bdh, input_precision=PREC)
    att = tl.where(rows[:, None] >= rows[None, :], att, 0.0)
    bdn = _tile(dn + b * stride_vb + h * stride_vh, rows, offs_v, stride_vt, T, DV)
    acc += tl.dot(tl.trans(att), bdn, input_precision=PREC)
    out = dv + b * stride_vb + h * stride_vh + rows[:, None] * stride_vt + offs_v[None, :]
    tl.store(out, acc.to(dv.dtype.element_ty), mask=(rows[:, None] < T) & (offs_v[None, :] < DV))


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs: exact fp32 dots (matches the PyTorch path); half inputs: their own dots are on tensor cores,
    # and the fp32 ones (states, gradients) may use tf32
    return "ieee" if dtype == torch.float32 else "tf32"


def _blocks(F: int, DV: int, chunk_size: int) -> tuple[int, int, int]:
    bc = chunk_size if chunk_size >= 16 and chunk_size & (chunk_size - 1) == 0 else 64
    bf = min(64, max(16, triton.next_power_of_2(F)))
    bv = min(64, max(16, triton.next_power_of_2(DV)))
    return min(bc, 64), bf, bv


class _ChunkLinearAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, s0, z0, normalize, eps, chunk_size):
        B, T, H, F = q.shape
        DV = v.shape[-1]
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        BC, BF, BV = _blocks(F, DV, chunk_size)
        NT = triton.cdiv(T, BC)
        prec = _precision(q.dtype)
        f32 = dict(device=q.device, dtype=torch.float32)
        hs, zs = torch.empty(B * H, NT, F, DV, **f32), torch.empty(B * H, NT, F, **f32)
        sT, zT = torch.empty(B, H, F, DV, **f32), torch.empty(B, H, F, **f32)
        has_init = s0 is not None
        s0c = s0.float().contiguous() if has_init else sT
        z0c = z0.float().contiguous() if has_init else zT
        qs = (q.stride(0), q.stride(1), q.stride(2))
        vs = (v.stride(0), v.stride(1), v.stride(2))
        _state_fwd_kernel[(triton.cdiv(F, BF), triton.cdiv(DV, BV), B * H)](
            k, v, s0c, z0c, hs, zs, sT, zT, *qs, *vs, T, H, F, DV, NT,
            HAS_INIT=has_init, STORE_FINAL=True, BC=BC, BF=BF, BV=BV, PREC=prec,
        )  # fmt: skip
        o = torch.empty_like(v)
        den = torch.empty(B * H, T, **f32)
        _out_fwd_kernel[(NT, triton.cdiv(DV, BV), B * H)](
            q, k, v, hs, zs, o, den, *qs, *vs, T, H, F, DV, NT, eps,
            NORMALIZE=normalize, BC=BC, BF=BF, BV=BV, PREC=prec,
        )  # fmt: skip
        ctx.save_for_backward(q, k, v, o, den, hs, zs)
        ctx.meta = (normalize, eps, BC, BF, BV, NT, has_init)
        return o, sT, zT

    @staticmethod
    def backward(ctx, do, dsT, dzT):
        q, k, v, o, den, hs, zs = ctx.saved_tensors
        normalize, eps, BC, BF, BV, NT, has_init = ctx.meta
        prec = _precision(q.dtype)
        B, T, H, F = q.shape
        DV = v.shape[-1]
        do = do.float()
        if normalize:
            dt = den.view(B, H, T).transpose(1, 2).unsqueeze(-1) + eps  # [B, T, H, 1]
            dn = (do / dt).contiguous()
            dd = (-(do * o.float()).sum(-1, keepdim=True) / dt).squeeze(-1).permute(0, 2, 1).contiguous()
        else:
            dn, dd = do.contiguous(), den
        has_final = dsT is not None or dzT is not None
        f32 = dict(device=q.device, dtype=torch.float32)
        dsT = torch.zeros(B, H, F, DV, **f32) if dsT is None else dsT.float().contiguous()
        dzT = torch.zeros(B, H, F, **f32) if dzT is None else dzT.float().contiguous()
        dhs, dzs = torch.empty_like(hs), torch.empty_like(zs)
        ds0, dz0 = torch.empty(B, H, F, DV, **f32), torch.empty(B, H, F, **f32)
        qs = (q.stride(0), q.stride(1), q.stride(2))
        vs = (v.stride(0), v.stride(1), v.stride(2))
        _state_bwd_kernel[(triton.cdiv(F, BF), triton.cdiv(DV, BV), B * H)](
            q, dn, dd, dsT, dzT, dhs, dzs, ds0, dz0, *qs, *vs, T, H, F, DV, NT,
            NORMALIZE=normalize, HAS_FINAL_GRAD=has_final, BC=BC, BF=BF, BV=BV, PREC=prec,
        )  # fmt: skip
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        _dqk_bwd_kernel[(NT, triton.cdiv(F, BF), B * H)](
            q, k, v, dn, dd, hs, zs, dhs, dzs, dq, dk, *qs, *vs, T, H, F, DV, NT,
            NORMALIZE=normalize, BC=BC, BF=BF, BV=BV, PREC=prec,
        )  # fmt: skip
        _dv_bwd_kernel[(NT, triton.cdiv(DV, BV), B * H)](
            q, k, dn, dhs, dv, *qs, *vs, T, H, F, DV, NT, BC=BC, BF=BF, BV=BV, PREC=prec
        )
        if not has_init:
            ds0 = dz0 = None
        return dq, dk, dv, ds0, dz0, None, None, None


def chunk_linear_attention(
    q_feat: torch.Tensor,
    k_feat: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    normalize: bool = True,
    eps: float = 1e-6,
    chunk_size: int = 64,
    key_padding_mask: torch.Tensor | None = None,
    initial_state: tuple[torch.Tensor, torch.Tensor] | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Linear attention on features, chunked, in Triton (causal) or two matmuls (bidirectional).

    Args:
        q_feat, k_feat: ``[B, T, H, F]``; v: ``[B, T, H, Dv]``.
        key_padding_mask: bool ``[B, T]``, True = padding: those keys (after the feature map) and values
            are zeroed, so they reach neither the numerator nor the normaliser.
        initial_state: ``(S [B, H, F, Dv], z [B, H, F])`` float32, the state before the first token.
    Returns:
        ``(o [B, T, H, Dv], (S, z) or None)``; the state is the one after the last token, float32.
    """
    if key_padding_mask is not None:
        keep = (~key_padding_mask.bool()).to(k_feat.dtype)[:, :, None, None]
        k_feat, v = k_feat * keep, v * keep.to(v.dtype)
    s0, z0 = initial_state if initial_state is not None else (None, None)
    if not causal:
        kv = torch.einsum("bthf,bthd->bhfd", k_feat.float(), v.float())
        z = k_feat.float().sum(1)
        if s0 is not None:
            kv, z = kv + s0, z + z0
        num = torch.einsum("bthf,bhfd->bthd", q_feat.float(), kv)
        o = num / (torch.einsum("bthf,bhf->bth", q_feat.float(), z)[..., None] + eps) if normalize else num
        return o.to(v.dtype), ((kv, z) if output_final_state else None)
    o, sT, zT = _ChunkLinearAttention.apply(q_feat, k_feat, v, s0, z0, bool(normalize), float(eps), int(chunk_size))
    return o, ((sT, zT) if output_final_state else None)

"""Implicit polynomial attention: ``sum_p c_p (scale q.k)^p`` computed from q, k directly, never from features.

This is how the ReBased and Based authors train (``parallel_rebased``, ``parallel_based``): O(T^2 d) instead of
materialising C(d+p-1, p) features. Equal to linear attention on the polynomial feature maps.

On CUDA the Triton kernel runs; on the CPU, float32/float64 inputs go to the compiled kernel
(``kernelized/cpu/polynomial.cpp``: blocks of queries whose scores stay in cache, never a T x T tensor, causal blocks
stopping at their last key, backward recomputing the scores); :func:`reference` (torch ops) is the fallback.
"""

from __future__ import annotations

import torch

from kernelized import cpu as _cpu
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

    if _cpu.usable(q, k, v) and max(terms) <= MAX_COMPILED_DEGREE:  # the fused CPU kernel
        return _compiled(q, k, v, terms, scale, causal, eps if normalize else None, key_padding_mask)
    return reference(q, k, v, terms, scale, causal, normalize, eps, key_padding_mask, block_size)


def reference(q, k, v, terms: dict, scale: float, causal: bool, normalize: bool, eps: float, key_padding_mask,
              block_size: int = 1024) -> torch.Tensor:  # fmt: skip
    """The torch-op form (autograd), in blocks of ``block_size`` queries: what the kernels must equal."""
    B, T = q.shape[:2]
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


MAX_COMPILED_DEGREE = 4  # polynomial.cpp's coefficient array


def _compiled(q, k, v, terms: dict, scale: float, causal: bool, eps: float | None, key_padding_mask) -> torch.Tensor:
    coef = torch.zeros(MAX_COMPILED_DEGREE + 1, dtype=v.dtype)
    for p, c in terms.items():
        coef[p] = c
    keep = None if key_padding_mask is None else (~key_padding_mask).to(v.dtype).contiguous()
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        return _CompiledPolynomial.apply(q, k, v, keep, coef, scale, causal, eps)
    return _compiled_forward(q, k, v, keep, coef, scale, causal, eps, save=False)[0]


class _CompiledPolynomial(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, keep, coef, scale, causal, eps):
        o, norm = _compiled_forward(q, k, v, keep, coef, scale, causal, eps, save=True)
        ctx.save_for_backward(q, k, v, keep, coef, o, norm)
        ctx.scale, ctx.causal, ctx.eps = scale, causal, eps
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, keep, coef, o, norm = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: differentiate the torch-op reference
            terms = {p: float(c) for p, c in enumerate(coef.tolist()) if c}
            mask = None if keep is None else keep == 0
            ref = reference(q, k, v, terms, ctx.scale, ctx.causal, ctx.eps is not None, ctx.eps or 0.0, mask)
            return (*torch.autograd.grad(ref, (q, k, v), do, create_graph=True), None, None, None, None, None)
        dq, dk, dv = _compiled_backward(q, k, v, keep, coef, ctx.scale, ctx.causal, ctx.eps, do, o, norm)
        return dq, dk, dv, None, None, None, None, None


def _compiled_forward(q, k, v, keep, coef, scale, causal, eps, save: bool):
    """``o [B, T, H, Dv]`` and (``save`` and normalising) the normaliser + eps ``[B, H, T]``: one kernel call for
    every (batch, head) sequence, which it spreads over torch's OpenMP threads."""
    B, T, H, d = q.shape
    Dv = v.shape[-1]
    fn, gemm = _cpu.kernel("polynomial_forward", v.dtype)
    o = v.new_empty(B, T, H, Dv)
    norm = v.new_empty(B, H, T) if save and eps is not None else None
    q, k, v = (_cpu.unit_rows(x) for x in (q, k, v))
    args = [*_cpu.heads(q), *_cpu.heads(k), *_cpu.heads(v), _cpu.pointer(keep), *_cpu.heads(o), _cpu.pointer(norm)]
    normalize, eps_ = int(eps is not None), 0.0 if eps is None else eps
    fn(gemm, *args, B, H, T, d, Dv, int(causal), coef.data_ptr(), scale, normalize, eps_)
    return o, norm


def _compiled_backward(q, k, v, keep, coef, scale, causal, eps, do, o, norm):
    B, T, H, d = q.shape
    Dv = v.shape[-1]
    fn, gemm = _cpu.kernel("polynomial_backward", v.dtype)
    dq, dk, dv = q.new_empty(B, T, H, d), k.new_empty(B, T, H, d), v.new_empty(B, T, H, Dv)
    q, k, v, do, o = (_cpu.unit_rows(x) for x in (q, k, v, do, o))
    args = [*_cpu.heads(q), *_cpu.heads(k), *_cpu.heads(v), _cpu.pointer(keep), *_cpu.heads(do), *_cpu.heads(o),
            _cpu.pointer(norm), *_cpu.heads(dq), *_cpu.heads(dk), *_cpu.heads(dv)]  # fmt: skip
    fn(gemm, *args, B, H, T, d, Dv, int(causal), coef.data_ptr(), scale, int(eps is not None))
    return dq, dk, dv

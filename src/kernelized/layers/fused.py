"""Random features and the bidirectional op with one backward: the encoder layers' fast path on the CPU.

Unfused, a bidirectional layer with RKS or PRF features runs two autograd nodes. The feature kernel
(``kernels.feature_ops``) writes ``phi_q, phi_k [B, T, H, F]``; the op's backward writes their gradients, the same
size, and the features' backward reads both back. With hundreds of features that is four passes over
``[B, T, H, F]`` more than the arithmetic needs.

:func:`features_bidirectional_attention` runs the same two forward kernels, then one backward kernel
(``bidirectional.cpp``'s ``backward_features``). It works 128 rows at a time: each tile's feature gradient goes
from the op's product straight into the features' backward while in cache. The results are the unfused pair's
(tests/layers/test_fused.py). ``KernelAttention`` takes this path for bidirectional ``chunk`` calls without a state
when the compiled kernels take the inputs. :data:`ENABLED` set to False keeps the two nodes.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from kernelized import cpu as _cpu
from kernelized.kernels import feature_ops
from kernelized.ops._validate import check_padding_mask
from kernelized.ops.linear import bidirectional

ENABLED = True  # False: the unfused pair of autograd nodes (for side-by-side timings and tests)
KINDS = {"rks": 1, "prf": 2}


def usable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether the fused path can take a layer's q, k ``[B, T, H, d]`` and v (CPU, one float32/float64 dtype, the
    compiled kernels built, :data:`ENABLED`); the feature map must give operands too (``query_key_operands``)."""
    return ENABLED and _cpu.usable(q, k, v)


def features_bidirectional_attention(
    operands: tuple[str, tuple, tuple], v: torch.Tensor, key_padding_mask: torch.Tensor | None, eps: float | None
) -> torch.Tensor:
    """``o [B, T, H, Dv]``: bidirectional linear attention on the random features that ``operands`` (a feature
    map's ``query_key_operands(q, k)``: estimator, then the query's and the key's ``feature_ops.rks``/``prf``
    arguments, the inputs ``[B, T, H, d]`` first) describe; v ``[B, T, H, Dv]``; key_padding_mask bool ``[B, T]``
    (True at padding) or None; eps: the normaliser's, or None for the numerator only. Gradients reach the inputs,
    v, the frequencies and the amplitudes."""
    kind, q_args, k_args = operands
    check_padding_mask(key_padding_mask, v.shape[0], v.shape[1])
    keep = None if key_padding_mask is None else (~key_padding_mask).to(v.dtype).contiguous()
    xq, w, amp = q_args[:3]
    return _FeaturesBidirectional.apply(xq, k_args[0], v, w, amp, keep, eps, kind, q_args[3:], k_args[3:])


class _FeaturesBidirectional(torch.autograd.Function):
    """Forward: the two roles' compiled features, then the compiled op. Backward: one fused kernel call."""

    @staticmethod
    def forward(ctx, xq, xk, v, w, amp, keep, eps, kind, q_rest, k_rest):
        features = feature_ops.ESTIMATORS[kind]
        q, k = features(xq, w, amp, *q_rest), features(xk, w, amp, *k_rest)
        o, S, norm = bidirectional._compiled_forward(q, k, v, keep, None, eps, save=True)
        ctx.save_for_backward(xq, xk, v, w, amp, keep, q, k, o, S, norm)
        ctx.eps, ctx.kind, ctx.offset_hyperbolic = eps, kind, (q_rest[:2] if kind == "prf" else (0.0, False))
        return o

    @staticmethod
    @once_differentiable
    def backward(ctx, do):
        xq, xk, v, w, amp, keep, q, k, o, S, norm = ctx.saved_tensors
        B, T, H, F = q.shape
        M, d, Dv = w.shape[1], w.shape[2], v.shape[-1]
        fn, gemm = _cpu.kernel("bidirectional_features_backward", v.dtype)
        w = w.contiguous()
        dxq, dxk, dv = xq.new_empty(xq.shape), xk.new_empty(xk.shape), v.new_empty(v.shape)
        dw, sums = v.new_empty(B, H, M, d), v.new_empty(B, H, M)
        xq_, xk_, v_, do_, o_, q_, k_ = (_cpu.unit_rows(x) for x in (xq, xk, v, do, o, q, k))
        offset, hyperbolic = ctx.offset_hyperbolic
        flags = (int(ctx.eps is not None), int(bidirectional.TILES))
        fn(gemm, *_cpu.heads(q_), *_cpu.heads(k_), *_cpu.heads(v_), _cpu.pointer(keep), *_cpu.heads(do_),
           *_cpu.heads(o_), S.data_ptr(), _cpu.pointer(norm), *_cpu.heads(xq_), *_cpu.heads(xk_), w.data_ptr(), M, d,
           KINDS[ctx.kind], float(offset), int(hyperbolic), *_cpu.heads(dxq), *_cpu.heads(dxk), *_cpu.heads(dv),
           dw.data_ptr(), sums.data_ptr(), B, H, T, F, Dv, *flags)  # fmt: skip
        total = sums.sum(0)
        d_amp = feature_ops.rks_amp_grad(amp, total) if ctx.kind == "rks" else total
        return dxq, dxk, dv, dw.sum(0), d_amp, None, None, None, None, None

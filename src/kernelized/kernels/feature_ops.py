"""The elementwise part of random features as two autograd functions that write the features once and keep only
them for backward: ``trig_features`` (RKS: ``[a cos u, a sin u, s]``) and ``exp_features`` (PRF: ``exp(u - c|x|^2 +
log a)``, the hyperbolic pair, the stabiliser's shifts).

Written with torch ops the same features cost a cos, a sin, two products and a concatenation forward (five
``[..., H, M]``-sized tensors written, three kept for backward) and as many again backward. Here each part is
computed into its slice of the output in place, and the gradients come from the output alone: ``d(a cos u)/du =
-(a sin u)``, ``d(exp(.))/d(.) = exp(.)``. Shapes: ``u [..., H, M]``, per-frequency ``a, log a [H, M]``, ``|x|^2
[..., H, 1]``; float inputs of any dtype (the maps call them in float32 or float64).
"""

from __future__ import annotations

import torch


def _over_heads(x: torch.Tensor, H: int, M: int) -> torch.Tensor:
    """Sum of ``x [..., H, M]`` over its leading axes: ``[H, M]`` (the gradient of a per-frequency parameter)."""
    return x.reshape(-1, H, M).sum(0)


class _TrigFeatures(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, amp, smoothing):
        M = u.shape[-1]
        out = u.new_empty(*u.shape[:-1], 2 * M + (smoothing is not None))
        # cos/sin into fresh tensors, then the products into the slices: 35 against 52 ms for cos/sin written into
        # the slices themselves (out=) at the LRA shape on the CPU (docs/bench/features/strided_out.py)
        torch.mul(torch.cos(u), amp, out=out[..., :M])
        torch.mul(torch.sin(u), amp, out=out[..., M : 2 * M])
        if smoothing is not None:
            out[..., 2 * M].fill_(smoothing)
        ctx.save_for_backward(out, amp)
        return out

    @staticmethod
    def backward(ctx, g):
        out, amp = ctx.saved_tensors
        H, M = amp.shape
        cos, sin, g_cos, g_sin = out[..., :M], out[..., M : 2 * M], g[..., :M], g[..., M : 2 * M]
        du = torch.addcmul(cos * g_sin, sin, g_cos, value=-1.0)  # a cos u * g_sin - a sin u * g_cos
        d_amp = None
        if ctx.needs_input_grad[1]:  # d(a cos u)/da = cos u = (a cos u) / a, where a > 0
            total = _over_heads(torch.addcmul(cos * g_cos, sin, g_sin), H, M)
            d_amp = torch.where(amp > 0, total / amp.clamp_min(torch.finfo(amp.dtype).tiny), 0.0)
        return du, d_amp, None


def trig_features(u: torch.Tensor, amp: torch.Tensor, smoothing: float | None) -> torch.Tensor:
    """``[a cos u, a sin u] (+ [s])``: ``u [..., H, M]``, ``amp [H, M]`` (a, positive) -> ``[..., H, 2M (+1)]``."""
    return _TrigFeatures.apply(u, amp.to(u.dtype), smoothing)


class _ExpFeatures(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, sq_norm, log_amp, offset, hyperbolic, key_shift, query_max):
        M = u.shape[-1]
        out = u.new_empty(*u.shape[:-1], 2 * M if hyperbolic else M)
        torch.sub(u, sq_norm, alpha=offset, out=out[..., :M]).add_(log_amp)
        if hyperbolic:  # the pair exp(-u - c|x|^2 + log a)
            torch.sub(log_amp, u, out=out[..., M:]).sub_(sq_norm, alpha=offset)
        if query_max:  # each query's own largest log-feature (detached: it cancels in normalised attention)
            out.sub_(out.amax(-1, keepdim=True))
        elif key_shift is not None:
            out.sub_(key_shift[:, None])
        out.exp_()
        ctx.save_for_backward(out)
        ctx.offset, ctx.hyperbolic, ctx.M = offset, hyperbolic, M
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        M, H = ctx.M, out.shape[-2]
        g_exp = g * out  # the gradient of every log-feature
        if ctx.hyperbolic:
            du, d_log = g_exp[..., :M] - g_exp[..., M:], g_exp[..., :M] + g_exp[..., M:]
        else:
            du = d_log = g_exp
        d_sq = g_exp.sum(-1, keepdim=True).mul_(-ctx.offset) if ctx.needs_input_grad[1] else None
        d_log_amp = _over_heads(d_log, H, M) if ctx.needs_input_grad[2] else None
        return du, d_sq, d_log_amp, None, None, None, None


def exp_features(
    u: torch.Tensor,
    sq_norm: torch.Tensor,
    log_amp: torch.Tensor,
    offset: float,
    hyperbolic: bool,
    key_shift: torch.Tensor | None = None,
    query_max: bool = False,
) -> torch.Tensor:
    """``exp(u - c|x|^2 + log a)`` (and, ``hyperbolic``, ``exp(-u - c|x|^2 + log a)`` after it): ``u [..., H, M]``,
    ``sq_norm [..., H, 1]``, ``log_amp [H, M]`` -> ``[..., H, M or 2M]``. Stabiliser: ``query_max`` divides each
    token's features by their largest; ``key_shift [H]`` (detached) divides every key's by ``exp(b_h)``."""
    shift = None if key_shift is None else key_shift.detach().to(u.dtype)
    return _ExpFeatures.apply(u, sq_norm, log_amp.to(u.dtype), float(offset), bool(hyperbolic), shift, query_max)

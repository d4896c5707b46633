"""Random features from the inputs: ``rks`` (``[a cos u, a sin u (, s)]``) and ``prf`` (``exp(u - c|x|^2 + log a)``,
the hyperbolic pair, the stabiliser's shifts), with ``u = x W^T`` per head.

Where the compiled CPU kernels build (``kernelized.cpu``), float32/float64 CPU inputs go to ``random_features.cpp``:
the projection and the cos/sin or exp run a tile of rows at a time, so ``u`` never reaches memory and each feature
row is written once forward and read once backward; float32 uses vectorised cos/sin/exp (``vmath.h``, within 1e-7
of libm). Elsewhere (CUDA, a broadcast head axis) ``head_matmul`` and two autograd functions that write the features
once and keep only them for backward: ``trig_features`` and ``exp_features``. Written with torch ops the same
features cost a cos, a sin, two products and a concatenation forward (five ``[..., H, M]``-sized tensors written,
three kept for backward) and as many again backward; here each part is computed into its slice of the output in
place, and the gradients come from the output alone: ``d(a cos u)/du = -(a sin u)``, ``d(exp(.))/d(.) = exp(.)``.

Shapes: ``x [..., H, d]``, frequencies ``w [H, M, d]``, ``u [..., H, M]``, per-frequency ``a, log a [H, M]``,
``|x|^2 [..., H, 1]``; float inputs of any dtype (the maps call them in float32 or float64).
"""

from __future__ import annotations

import torch

from kernelized import cpu as _cpu


def head_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x [..., H, d]`` against per-head rows ``w [H, M, d]`` -> ``[..., H, M]``.

    One head-major ``bmm`` (``[H, N, d] @ [H, d, M]``): the broadcast ``[..., H, 1, d] @ [H, d, M]`` form is 30-60x
    slower forward + backward for [B, T, H, d] inputs, and einsum is slow when threads are contended.
    """
    H, M, d = w.shape
    w = w.to(x.dtype)
    if x.dim() < 2 or x.shape[-2] != H:  # e.g. a broadcast head axis of size 1
        return (x.unsqueeze(-2) @ w.transpose(-1, -2)).squeeze(-2)
    lead = x.shape[:-2]
    xh = x.reshape(-1, H, d).transpose(0, 1)  # [H, N, d]
    return torch.bmm(xh, w.transpose(-1, -2)).transpose(0, 1).reshape(*lead, H, M)


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


def rks(x: torch.Tensor, w: torch.Tensor, amp: torch.Tensor, smoothing: float | None) -> torch.Tensor:
    """RKS features ``[a cos u, a sin u] (+ [s])`` of ``u = x w^T``: ``x [..., H, d]``, ``w [H, M, d]``, ``amp [H, M]``
    (a, positive) -> ``[..., H, 2M (+1)]``; gradients reach x, w and amp."""
    amp = amp.to(x.dtype)
    if compiled(x, w):
        return _CompiledRKS.apply(x, w.to(x.dtype), amp, smoothing)
    return trig_features(head_matmul(x, w), amp, smoothing)


def prf(
    x: torch.Tensor,
    w: torch.Tensor,
    log_amp: torch.Tensor,
    offset: float,
    hyperbolic: bool,
    key_shift: torch.Tensor | None = None,
    query_max: bool = False,
) -> torch.Tensor:
    """PRF features ``exp(u - c|x|^2 + log a)`` (and the hyperbolic pair) of ``u = x w^T``: ``x [..., H, d]``,
    ``w [H, M, d]``, ``log_amp [H, M]``, ``offset`` c -> ``[..., H, M or 2M]``; the stabilisers as in
    :func:`exp_features`. Gradients reach x, w and log_amp."""
    log_amp = log_amp.to(x.dtype)
    if compiled(x, w):
        shift = None if key_shift is None else key_shift.detach().to(torch.float64).tolist()
        return _CompiledPRF.apply(x, w.to(x.dtype), log_amp, float(offset), bool(hyperbolic), shift, query_max)
    sq_norm = (x * x).sum(-1, keepdim=True)
    return exp_features(head_matmul(x, w), sq_norm, log_amp, offset, hyperbolic, key_shift, query_max)


ESTIMATORS = {"rks": rks, "prf": prf}  # a random map's estimator name -> the function forming its features


def compiled(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether ``random_features.cpp`` takes x ``[..., H, d]`` with w ``[H, M, d]`` (CPU, float32/64, H heads)."""
    return x.dim() >= 2 and x.shape[-2] == w.shape[0] and x.numel() > 0 and _cpu.usable(x, w)


def _heads(t: torch.Tensor, H: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """``t [..., H, X]`` as ``[N, H, X]`` rows with unit stride (a copy only for odd layouts) and the kernels'
    ``(pointer, head stride, row stride)`` of it; keep the tensor alive during the call."""
    rows = t.reshape(-1, H, t.shape[-1])
    rows = rows if rows.stride(-1) == 1 else rows.contiguous()
    return rows, (rows.data_ptr(), rows.stride(1), rows.stride(0))


def _chunks(N: int, H: int) -> int:
    """Row ranges per head: enough work items to keep torch's threads busy, each of a tile of rows at least."""
    return max(1, min(-(-N // 128), -(-4 * torch.get_num_threads() // H)))


def _forward(name: str, x: torch.Tensor, w: torch.Tensor, F: int, args: tuple) -> torch.Tensor:
    """Features ``[N, H, F]`` of every head's rows, one kernel call; ``args`` come between M and the output."""
    H, M, d = w.shape
    fn, gemm = _cpu.kernel(name, x.dtype)
    rows, xs = _heads(x, H)
    N = rows.shape[0]
    out = x.new_empty(N, H, F)
    fn(gemm, *xs, N, d, w.data_ptr(), M, *args, out.data_ptr(), F, H * F, H, _chunks(N, H))
    return out


def _backward(name: str, x, w, out, g, args: tuple):
    """``dx [..., H, d]``, ``dw [H, M, d]`` and the per-frequency sums ``[H, M]`` the kernel accumulates, one call;
    ``args`` come between the gradient's rows and dx's."""
    H, M, d = w.shape
    fn, gemm = _cpu.kernel(name, x.dtype)
    (rows, xs), (_g_alive, gs) = _heads(x, H), _heads(g, H)  # the rows (maybe a copy) live through the call
    N, F, chunks = rows.shape[0], out.shape[-1], _chunks(rows.shape[0], H)
    dx = x.new_empty(N, H, d)
    dw, sums = x.new_zeros(H * chunks, M, d), x.new_zeros(H * chunks, M)  # one partial sum per work item
    fn(gemm, *xs, N, d, w.data_ptr(), M, out.data_ptr(), F, H * F, *gs, *args, dx.data_ptr(), d, H * d,
       dw.data_ptr(), sums.data_ptr(), H, chunks)  # fmt: skip
    return dx.view(x.shape), dw.view(H, chunks, M, d).sum(1), sums.view(H, chunks, M).sum(1)


def rks_statement(u: torch.Tensor, amp: torch.Tensor, smoothing: float | None) -> torch.Tensor:
    """``[a cos u, a sin u] (+ [s])`` in plain torch ops: ``u [..., H, M]``, ``amp [H, M]`` -> ``[..., H, 2M(+1)]``
    (the statement :func:`trig_features` and the compiled kernel are tested against)."""
    parts = [amp * torch.cos(u), amp * torch.sin(u)]
    if smoothing is not None:
        parts.append(u.new_full((*u.shape[:-1], 1), float(smoothing)))
    return torch.cat(parts, dim=-1)


def prf_log_features(
    u: torch.Tensor, sq_norm: torch.Tensor, log_amp: torch.Tensor, offset: float, hyperbolic: bool
) -> torch.Tensor:
    """Log-features ``[u, -u if hyperbolic] - c|x|^2 + log a`` in plain torch ops: ``u [..., H, M]``, ``sq_norm
    [..., H, 1]``, ``log_amp [H, M]`` (shared by the pair) -> ``[..., H, M or 2M]``."""
    if hyperbolic:
        u, log_amp = torch.cat([u, -u], dim=-1), log_amp.repeat(1, 2)
    return u - offset * sq_norm + log_amp


def reference_rks(x, w, amp, smoothing):
    """The torch-op statement of :func:`rks` (double backward differentiates it)."""
    return rks_statement(head_matmul(x, w), amp, smoothing)


def reference_prf(x, w, log_amp, offset, hyperbolic, key_shift, query_max):
    """The torch-op statement of :func:`prf`; ``key_shift`` a list of per-head floats or None."""
    a = prf_log_features(head_matmul(x, w), (x * x).sum(-1, keepdim=True), log_amp, offset, hyperbolic)
    if query_max:
        a = a - a.amax(-1, keepdim=True).detach()
    elif key_shift is not None:
        a = a - torch.tensor(key_shift, dtype=a.dtype)[:, None]
    return torch.exp(a)


def _statement_grads(ref: torch.Tensor, inputs: tuple, g: torch.Tensor) -> list:
    """Gradients of the torch statement ``ref`` for the inputs that require them (None for the others, e.g. a map's
    constant weights), with a graph for double backward."""
    wanted = [t for t in inputs if t.requires_grad]
    grads = iter(torch.autograd.grad(ref, wanted, g, create_graph=True, allow_unused=True) if wanted else ())
    return [next(grads) if t.requires_grad else None for t in inputs]


def rks_amp_grad(amp: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """The amplitudes' gradient ``[H, M]`` from the compiled backward's per-frequency sums of ``(a cos u) g_cos +
    (a sin u) g_sin``: cos u = (a cos u) / a (0 where a is 0)."""
    return torch.where(amp > 0, total / amp.clamp_min(torch.finfo(amp.dtype).tiny), 0.0)


class _CompiledRKS(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, amp, smoothing):
        M = w.shape[1]
        F = 2 * M + (smoothing is not None)
        smooth = (int(smoothing is not None), 0.0 if smoothing is None else float(smoothing))
        a, w = amp.contiguous(), w.contiguous()
        out = _forward("rks_forward", x, w, F, (a.data_ptr(), *smooth))
        ctx.save_for_backward(x, w, amp, out)
        ctx.smoothing = smoothing
        return out.view(*x.shape[:-1], F)

    @staticmethod
    def backward(ctx, g):
        x, w, amp, out = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: differentiate the torch-op statement
            return (*_statement_grads(reference_rks(x, w, amp, ctx.smoothing), (x, w, amp), g), None)
        dx, dw, total = _backward("rks_backward", x, w, out, g, ())
        return dx, dw, rks_amp_grad(amp, total), None


class _CompiledPRF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, log_amp, offset, hyperbolic, key_shift, query_max):
        M = w.shape[1]
        mode = 2 if query_max else 0 if key_shift is None else 1
        la, w = log_amp.contiguous(), w.contiguous()
        shift = torch.tensor(key_shift, dtype=torch.float64) if mode == 1 else None  # [H], alive for the call
        args = (la.data_ptr(), offset, int(hyperbolic), mode, None if shift is None else shift.data_ptr())
        out = _forward("prf_forward", x, w, 2 * M if hyperbolic else M, args)
        ctx.save_for_backward(x, w, log_amp, out)
        ctx.args = offset, hyperbolic, key_shift, query_max
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, g):
        x, w, log_amp, out = ctx.saved_tensors
        offset, hyperbolic, key_shift, query_max = ctx.args
        if torch.is_grad_enabled():  # double backward: differentiate the torch-op statement
            return (*_statement_grads(reference_prf(x, w, log_amp, *ctx.args), (x, w, log_amp), g), *[None] * 4)
        dx, dw, d_log_amp = _backward("prf_backward", x, w, out, g, (offset, int(hyperbolic)))
        return dx, dw, d_log_amp, None, None, None, None

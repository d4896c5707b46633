"""Chunked linear attention: linear in T, the training form.

The sequence is cut into chunks of C tokens. Within a chunk the causal product is a small masked matmul;
across chunks each chunk reads the state (sum of k v^T) of all chunks before it. The normaliser rides along
as an extra value column of ones, so numerator and denominator come out of the same products.

The causal path is one autograd Function tuned for CPUs (2-core measurements in docs/benchmarks.md):

- heads are processed one at a time on strided views of ``[B, T, H, F]``, so the inputs are never permuted
  or copied;
- each head runs through the sequence in blocks of chunks small enough (``BLOCK_BYTES``) that a block's
  inputs, states and products stay in cache from one product to the next: on this CPU the same matmuls ran
  about a third faster on cache-resident blocks than as whole-sequence batches;
- the prefix sums over chunks are one triangular matmul per block (``_scan``), continued from a carry;
- normalisation happens inside, so the output is written once, in the natural ``[B, T, H, Dv]`` layout;
- backward keeps the state before each chunk and the in-chunk scores (linear in T, about as much memory as
  q); a forward without autograd keeps neither;
- with several torch threads, heads run on as many Python threads with single-threaded ops (no OpenMP
  barrier per small op, which stalls on a busy machine).

Where the compiled CPU kernels build (``kernelized.cpu``, plain C++ on torch's BLAS), float32/float64 CPU
inputs go to them instead: the same algorithm per (batch, head) sequence with the state updated in place in
cache, each product one gemm on the caller's rows, and masks, normalisation and the normaliser's rank-one terms
fused; the state is kept (and saved) transposed, stacked under the chunk's keys, so that in-chunk scores and
the read of earlier chunks are one product (see chunk.cpp). The PyTorch path below stays as the fallback and
the readable statement of the algorithm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernelized import cpu as _cpu

BLOCK_BYTES = 2.5 * 2**20  # working set of one block of chunks (see the module docstring)


def chunk_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    initial_state: tuple | None,
    chunk_size: int = 64,
    eps: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Causal linear attention in chunks: ``o [B, T, H, Dv]`` (divided by normaliser + eps, or the plain numerator
    when ``eps`` is None) and the final state ``S [B, H, F, Dv]``, ``z [B, H, F]``. (The non-causal chunk form has
    one state for every query: ``bidirectional.bidirectional_linear_attention``.)

    Inputs as in ``naive.parallel_linear_attention``: q, k ``[B, T, H, F]``, v ``[B, T, H, Dv]`` (validated,
    masked, float32 or float64), initial_state ``(S, z)`` or None.
    """
    T, Dv = q.shape[1], v.shape[-1]
    S0 = None
    if initial_state is not None:
        S0 = torch.cat([initial_state[0], initial_state[1][..., None]], dim=-1)  # [B, H, F, Dv + 1]

    C = min(chunk_size, T)
    pad = -T % C
    if pad:  # zero keys add nothing to any state; padded queries are dropped below
        q, k, v = (F.pad(x, (0, 0, 0, 0, 0, pad)) for x in (q, k, v))
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (q, k, v, S0)):
        o, S_final = _CausalChunk.apply(q, k, v, S0, C, eps, _cpu.usable(q, k, v))
    else:  # inference: nothing kept for backward
        o, S_final = _causal_forward(q, k, v, S0, C, eps, save=False, compiled=_cpu.usable(q, k, v))[:2]
    return o[:, :T], S_final[..., :Dv], S_final[..., Dv]


# ---------------------------------------------------------------------------------------------- blocks


def _blocks(B: int, N: int, rows: int) -> list[tuple[int, int, int, int]]:
    """``(b0, b1, n0, n1)`` ranges covering B sequences x N chunks, sequence-major, each about ``rows`` chunks:
    chunks n0:n1 of one sequence, or whole sequences b0:b1 when a sequence is shorter than a block (so every
    block is a single strided view ``[(b1-b0)(n1-n0), C, .]``)."""
    if N >= rows:
        return [(b, b + 1, n0, min(n0 + rows, N)) for b in range(B) for n0 in range(0, N, rows)]
    per = max(1, rows // N)
    return [(b0, min(b0 + per, B), 0, N) for b0 in range(0, B, per)]


def _plan(B: int, N: int, C: int, Fd: int, Dv: int, v: torch.Tensor) -> tuple[list, int, torch.Tensor]:
    """The blocks of chunks (about ``BLOCK_BYTES`` of q, k, v, output, scores and state each), the most chunks
    in one block, and the ``[C, C]`` mask of future positions within a chunk."""
    per_chunk = (C * (2 * Fd + 2 * (Dv + 1) + C) + Fd * (Dv + 1)) * v.element_size()
    blocks = _blocks(B, N, max(1, int(BLOCK_BYTES // per_chunk)))
    rows = max((b1 - b0) * (n1 - n0) for b0, b1, n0, n1 in blocks)
    return blocks, rows, torch.ones(C, C, dtype=torch.bool, device=v.device).triu_(1)


_TRIANGLES: dict = {}


def _scan(x: torch.Tensor, out: torch.Tensor, carry: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """Exclusive prefix sums over chunks: ``out[:, n] = carry + sum of x[:, m]`` over m < n (m > n if reverse).

    x, out ``[b, n, M]``; carry ``[b, M]``. One matmul with a strictly triangular matrix of ones (a Python loop
    of row additions costs a dispatch per chunk). Returns the carry for the next block.
    """
    n = x.shape[1]
    key = (n, reverse, x.dtype, x.device)
    if key not in _TRIANGLES:
        ones = torch.ones(n, n, dtype=x.dtype, device=x.device)
        _TRIANGLES[key] = ones.triu(1) if reverse else ones.tril(-1)
    if x.shape[0] == 1:
        torch.mm(_TRIANGLES[key], x[0], out=out[0])
    else:
        torch.matmul(_TRIANGLES[key], x, out=out)
    out.add_(carry[:, None])
    last = 0 if reverse else n - 1
    return out[:, last] + x[:, last]


def _causal_forward(q, k, v, S0, C: int, eps: float | None, save: bool, compiled: bool = False):
    """``y_t = sum_{s<=t} (q_t . k_s) [v_s, 1]`` chunk by chunk; ``o = y[:Dv] / (y[Dv] + eps)``.

    q, k ``[B, N*C, H, F]``, v ``[B, N*C, H, Dv]`` (any strides with a contiguous last axis), S0
    ``[B, H, F, Dv+1]`` or None. Returns ``o [B, N*C, H, Dv]``, ``S_final [B, H, F, Dv+1]`` and, if ``save``,
    what backward needs: the state before each chunk ``[H, B, N, F*(Dv+1)]`` (``[H, B, N, (Dv+1)*F]``, transposed,
    when ``compiled``), the masked in-chunk scores ``[H, B, N*C, C]`` and the normaliser plus eps ``[H, B, N*C]``
    (None when eps is None).
    """
    B, T, H, Fd = q.shape
    Dv = v.shape[-1]
    N, D1 = T // C, Dv + 1
    M = Fd * D1
    o = v.new_empty(B, T, H, Dv)
    S_final = v.new_empty(B, H, Fd, D1)
    states = v.new_empty(H, B, N, M) if save else None
    scores = v.new_empty(H, B, T, C) if save else None
    norm = v.new_empty(H, B, T) if save and eps is not None else None
    if compiled:
        _compiled_forward(q, k, v, S0, C, eps, o, S_final, states, scores, norm)
        return o, S_final, states, scores, norm
    blocks, R, upper = _plan(B, N, C, Fd, Dv, v)

    def heads_fn(heads: range) -> None:
        v1_ = v.new_ones(R, C, D1)  # values with the normaliser's column of ones
        kv_ = v.new_empty(R, Fd, D1)
        y_ = v.new_empty(R, C, D1)
        st_ = None if save else v.new_empty(R, M)
        A_ = None if save else v.new_empty(R, C, C)
        for h in heads:
            for b0, b1, n0, n1 in blocks:
                bb, n, t0, t1 = b1 - b0, n1 - n0, n0 * C, n1 * C
                r = bb * n
                qh, kh = q[b0:b1, t0:t1, h].reshape(r, C, Fd), k[b0:b1, t0:t1, h].reshape(r, C, Fd)
                v1, kv, y = v1_[:r], kv_[:r], y_[:r]
                v1[..., :Dv] = v[b0:b1, t0:t1, h].reshape(r, C, Dv)
                torch.bmm(kh.transpose(1, 2), v1, out=kv)  # each chunk's addition to the state
                if n0 == 0:
                    carry = v.new_zeros(bb, M) if S0 is None else S0[b0:b1, h].reshape(bb, M)
                st = states[h, b0:b1, n0:n1] if save else st_[:r].view(bb, n, M)
                carry = _scan(kv.view(bb, n, M), st, carry)
                if n1 == N:
                    S_final[b0:b1, h] = carry.view(bb, Fd, D1)
                A = scores[h, b0:b1, t0:t1].view(r, C, C) if save else A_[:r]
                torch.bmm(qh, kh.transpose(1, 2), out=A).masked_fill_(upper, 0.0)
                torch.bmm(A, v1, out=y).baddbmm_(qh, st.reshape(r, Fd, D1))
                oh = o[b0:b1, t0:t1, h].view(r, C, Dv)
                if eps is None:
                    oh.copy_(y[..., :Dv])
                else:
                    den = y[..., Dv:].add_(eps)
                    torch.div(y[..., :Dv], den, out=oh)
                    if save:
                        norm[h, b0:b1, t0:t1].view(r, C).copy_(den[..., 0])

    _cpu.run_parallel(heads_fn, H)
    return o, S_final, states, scores, norm


class _CausalChunk(torch.autograd.Function):
    """Causal chunked linear attention, normalised (``eps`` a number) or not (``eps`` None): see
    ``_causal_forward``. Gradients reach q, k, v and the initial state."""

    @staticmethod
    def forward(ctx, q, k, v, S0, C, eps, compiled):
        o, S_final, states, scores, norm = _causal_forward(q, k, v, S0, C, eps, save=True, compiled=compiled)
        ctx.save_for_backward(q, k, v, states, scores, norm, o)
        ctx.C, ctx.eps, ctx.has_init, ctx.compiled = C, eps, S0 is not None, compiled
        return o, S_final

    @staticmethod
    def backward(ctx, do, dS_final):
        q, k, v, states, scores, norm, o = ctx.saved_tensors
        C, eps = ctx.C, ctx.eps
        B, T, H, Fd = q.shape
        Dv = v.shape[-1]
        N, D1 = T // C, Dv + 1
        M = Fd * D1
        dq, dk = q.new_empty(H, B, T, Fd), k.new_empty(H, B, T, Fd)
        dv = v.new_empty(H, B, T, Dv)
        dS0 = v.new_empty(B, H, Fd, D1) if ctx.has_init else None
        if do is None:
            do = v.new_zeros(B, T, H, Dv)
        if ctx.compiled:  # the compiled forward saved its states transposed
            dq, dk, dv, dS0 = _compiled_backward(q, k, v, do, o, states, scores, norm, dS_final, C, eps, dS0)
            return dq, dk, dv, dS0, None, None, None
        blocks, R, upper = _plan(B, N, C, Fd, Dv, v)
        blocks = blocks[::-1]  # last chunks first

        def heads_fn(heads: range) -> None:
            v1_ = v.new_ones(R, C, D1)
            dy_ = v.new_empty(R, C, D1)  # gradient of [numerator, normaliser]
            qdy_ = v.new_empty(R, Fd, D1)
            after_ = v.new_empty(R, Fd, D1)  # gradient reaching each chunk's state from the chunks after it
            P_ = v.new_empty(R, C, C)
            for h in heads:
                for b0, b1, n0, n1 in blocks:
                    bb, n, t0, t1 = b1 - b0, n1 - n0, n0 * C, n1 * C
                    r = bb * n
                    qh, kh = q[b0:b1, t0:t1, h].reshape(r, C, Fd), k[b0:b1, t0:t1, h].reshape(r, C, Fd)
                    doh = do[b0:b1, t0:t1, h].reshape(r, C, Dv)
                    v1, dy, qdy, after, P = v1_[:r], dy_[:r], qdy_[:r], after_[:r], P_[:r]
                    if eps is None:
                        dy[..., :Dv] = doh
                        dy[..., Dv].zero_()
                    else:  # o = num / den: dnum = do / den, dden = -(do . o) / den
                        inv = norm[h, b0:b1, t0:t1].reshape(r, C, 1).reciprocal()
                        torch.mul(doh, o[b0:b1, t0:t1, h].reshape(r, C, Dv), out=dy[..., :Dv])
                        torch.sum(dy[..., :Dv], -1, out=dy[..., Dv]).mul_(inv[..., 0]).neg_()
                        torch.mul(doh, inv, out=dy[..., :Dv])
                    torch.bmm(qh.transpose(1, 2), dy, out=qdy)
                    if n1 == N:
                        carry = v.new_zeros(bb, M) if dS_final is None else dS_final[b0:b1, h].reshape(bb, M)
                    carry = _scan(qdy.view(bb, n, M), after.view(bb, n, M), carry, reverse=True)
                    if n0 == 0 and dS0 is not None:
                        dS0[b0:b1, h] = carry.view(bb, Fd, D1)
                    v1[..., :Dv] = v[b0:b1, t0:t1, h].reshape(r, C, Dv)
                    torch.bmm(dy, v1.transpose(1, 2), out=P).masked_fill_(upper, 0.0)  # dL/dA within the chunk
                    before = states[h, b0:b1, n0:n1].reshape(r, Fd, D1)
                    A = scores[h, b0:b1, t0:t1].view(r, C, C)
                    dqh, dkh = dq[h, b0:b1, t0:t1].view(r, C, Fd), dk[h, b0:b1, t0:t1].view(r, C, Fd)
                    torch.bmm(P, kh, out=dqh).baddbmm_(dy, before.transpose(1, 2))
                    torch.bmm(P.transpose(1, 2), qh, out=dkh).baddbmm_(v1, after.transpose(1, 2))
                    dvh = dv[h, b0:b1, t0:t1].view(r, C, Dv)
                    torch.bmm(A.transpose(1, 2), dy[..., :Dv], out=dvh).baddbmm_(kh, after[..., :Dv])

        _cpu.run_parallel(heads_fn, H)

        def natural(x: torch.Tensor) -> torch.Tensor:  # [H, B, T, X] -> [B, T, H, X] view
            return x.permute(1, 2, 0, 3)

        return natural(dq), natural(dk), natural(dv), dS0, None, None, None


# ---------------------------------------------------------------------------------------------- compiled path


def _compiled_forward(q, k, v, S0, C: int, eps: float | None, o, S_final, states, scores, norm) -> None:
    """``_causal_forward`` by the compiled kernel into the given outputs: one call, which spreads the (batch, head)
    sequences over torch's OpenMP threads."""
    B, T, H, Fd = q.shape
    Dv = v.shape[-1]
    fn, gemm = _cpu.kernel("chunk_forward", v.dtype)
    q, k, v = (_cpu.unit_rows(x) for x in (q, k, v))
    saved = (*_cpu.blocks(states, True), *_cpu.blocks(scores, True), *_cpu.blocks(norm, True))
    fn(gemm, *_cpu.heads(q), *_cpu.heads(k), *_cpu.heads(v), *_cpu.blocks(S0), *_cpu.heads(o), *_cpu.blocks(S_final),
       *saved, B, H, T, Fd, Dv, C, int(eps is not None), 0.0 if eps is None else eps)  # fmt: skip


def _compiled_backward(q, k, v, do, o, states, scores, norm, dS_final, C: int, eps: float | None, dS0):
    """``_CausalChunk.backward`` by the compiled kernel: ``dq, dk [B, T, H, F]``, ``dv [B, T, H, Dv]`` and dS0
    (filled in if given) ``[B, H, F, Dv+1]``."""
    B, T, H, Fd = q.shape
    Dv = v.shape[-1]
    fn, gemm = _cpu.kernel("chunk_backward", v.dtype)
    dS_final = None if dS_final is None else dS_final.contiguous()
    dq, dk, dv = q.new_empty(B, T, H, Fd), k.new_empty(B, T, H, Fd), v.new_empty(B, T, H, Dv)
    q, k, v, do, o = (_cpu.unit_rows(x) for x in (q, k, v, do, o))
    inputs = (*_cpu.heads(q), *_cpu.heads(k), *_cpu.heads(v), *_cpu.heads(do), *_cpu.heads(o))
    saved = (*_cpu.blocks(states, True), *_cpu.blocks(scores, True), *_cpu.blocks(norm, True))
    grads = (*_cpu.heads(dq), *_cpu.heads(dk), *_cpu.heads(dv), *_cpu.blocks(dS0))
    fn(gemm, *inputs, *saved, *_cpu.blocks(dS_final), *grads, B, H, T, Fd, Dv, C, int(eps is not None))
    return dq, dk, dv, dS0

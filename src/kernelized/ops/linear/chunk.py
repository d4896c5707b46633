"""Chunked linear attention: linear in T, the training form.

The sequence is cut into chunks of C tokens. Within a chunk the causal product is a small masked matmul;
across chunks each chunk reads the state (sum of k v^T) of all chunks before it. The normaliser rides along
as an extra value column of ones, so numerator and denominator come out of the same products.

The causal path is one autograd Function tuned for CPUs (2-core measurements in docs/benchmarks.md):

- heads are processed one at a time on strided views of ``[B, T, H, F]``, so the inputs are never permuted
  or copied, and each head's per-chunk states ``[B*N, F, Dv+1]`` stay small enough for the cache;
- the prefix sums over chunks are in-place row additions (``torch.cumsum`` over that axis is 3x slower);
- backward keeps the inputs and the state before each chunk (``[H, B*N, F, Dv+1]``, T/C states of F x (Dv+1)
  per head: about as much memory as q), so memory stays linear in T; recomputing them instead cost ~10% time;
- outputs and gradients are written head-major ``[H, B, T, .]`` and handed back as permuted views;
- with several torch threads, heads run on as many Python threads with single-threaded ops (no OpenMP
  barrier per small op, which stalls on a busy machine).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F


def chunk_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    initial_state: tuple | None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same contract as ``naive.parallel_linear_attention``."""
    B, T, H, Fd = q.shape
    Dv = v.shape[-1]
    S0 = None
    if initial_state is not None:
        S0 = torch.cat([initial_state[0], initial_state[1][..., None]], dim=-1)  # [B, H, F, Dv + 1]

    if not causal:
        v1 = torch.cat([v, v.new_ones(B, T, H, 1)], dim=-1)  # [B, T, H, Dv + 1]: last column gives the normaliser
        S = torch.einsum("bthf,bthd->bhfd", k, v1)
        if S0 is not None:
            S = S + S0
        out = torch.einsum("bthf,bhfd->bthd", q, S)
        return out[..., :Dv], out[..., Dv], S[..., :Dv], S[..., Dv]

    C = min(chunk_size, T)
    N = -(-T // C)
    pad = N * C - T
    if pad:  # zero keys add nothing to any state; padded queries are dropped below
        q, k, v = (F.pad(x, (0, 0, 0, 0, 0, pad)) for x in (q, k, v))
    num, den, S_final = _CausalChunk.apply(q, k, v, S0, C)  # [H, B*N, C, Dv], [H, B*N, C], [B, H, F, Dv+1]
    num = num.reshape(H, B, N * C, Dv).permute(1, 2, 0, 3)[:, :T]  # [B, T, H, Dv], views
    den = den.reshape(H, B, N * C).permute(1, 2, 0)[:, :T]
    return num, den, S_final[..., :Dv], S_final[..., Dv]


def _scan(x: torch.Tensor, init: torch.Tensor | None, reverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Exclusive prefix sums of ``x [B, N, M]`` over N (suffix sums if reverse), starting from ``init [B, M]``.

    Returns ``(before [B, N, M], total [B, M])``: ``before[:, n]`` is init plus the rows before n (after n if
    reverse), ``total`` is init plus all rows.
    """
    N = x.shape[1]
    order = list(range(N - 1, -1, -1)) if reverse else list(range(N))
    out = torch.empty_like(x)
    if init is None:
        out[:, order[0]].zero_()
    else:
        out[:, order[0]].copy_(init)
    for prev, n in zip(order[:-1], order[1:]):
        torch.add(out[:, prev], x[:, prev], out=out[:, n])
    return out, out[:, order[-1]] + x[:, order[-1]]


def _per_head(fn, H: int) -> None:
    """Run ``fn(h)`` for every head. With several torch threads, heads are split over as many Python threads,
    each running its ops single-threaded: the ~100 small ops per call then need no OpenMP barrier, which on a
    busy (oversubscribed) machine stalled each op on a descheduled thread."""
    n = torch.get_num_threads()
    if n <= 1 or H <= 1:
        with torch.no_grad():
            for h in range(H):
                fn(h)
        return

    def work(heads: list[int]) -> None:
        torch.set_num_threads(1)  # this worker's ops: single-threaded
        with torch.no_grad():
            for h in heads:
                fn(h)

    try:
        with ThreadPoolExecutor(max_workers=min(n, H)) as pool:
            list(pool.map(work, [list(range(H))[i :: min(n, H)] for i in range(min(n, H))]))
    finally:
        torch.set_num_threads(n)


def _ones_column(v: torch.Tensor) -> torch.Tensor:
    """``[..., C, Dv] -> [..., C, Dv + 1]`` with a column of ones (the normaliser's value)."""
    return torch.cat([v, v.new_ones(*v.shape[:-1], 1)], dim=-1)


class _CausalChunk(torch.autograd.Function):
    """Unnormalised causal linear attention with a ones column: ``y_t = sum_{s<=t} (q_t.k_s) [v_s, 1]``.

    q, k ``[B, N*C, H, F]`` and v ``[B, N*C, H, Dv]`` (any strides with a contiguous last axis), S0
    ``[B, H, F, Dv+1]`` or None. Returns the numerator ``[H, B*N, C, Dv]``, the normaliser ``[H, B*N, C]``
    (views of one buffer) and the final state ``[B, H, F, Dv+1]``.
    """

    @staticmethod
    def forward(ctx, q, k, v, S0, C):
        B, T, H, Fd = q.shape
        Dv = v.shape[-1]
        N, D1 = T // C, Dv + 1
        y = v.new_empty(H, B * N, C, D1)
        S_final = v.new_empty(B, H, Fd, D1)
        states = v.new_empty(H, B * N, Fd, D1)  # the state before each chunk, kept for backward
        scores = v.new_empty(H, B * N, C, C)  # masked q k^T within each chunk, kept for backward
        upper = torch.ones(C, C, dtype=torch.bool, device=q.device).triu_(1)

        def head(h: int) -> None:
            qh, kh = q[:, :, h].reshape(B * N, C, Fd), k[:, :, h].reshape(B * N, C, Fd)
            v1 = _ones_column(v[:, :, h].reshape(B * N, C, Dv))
            kv = torch.bmm(kh.transpose(1, 2), v1).view(B, N, Fd * D1)  # each chunk's addition to the state
            init = None if S0 is None else S0[:, h].reshape(B, Fd * D1)
            before, total = _scan(kv, init)
            states[h] = before.view(B * N, Fd, D1)
            S_final[:, h] = total.view(B, Fd, D1)
            A = torch.bmm(qh, kh.transpose(1, 2), out=scores[h]).masked_fill_(upper, 0.0)  # [B*N, C, C]
            torch.baddbmm(torch.bmm(A, v1), qh, before.view(B * N, Fd, D1), out=y[h])

        _per_head(head, H)
        ctx.save_for_backward(q, k, v, states, scores)
        ctx.C, ctx.has_init = C, S0 is not None
        return y[..., :Dv], y[..., Dv], S_final

    @staticmethod
    def backward(ctx, dnum, dden, dS_final):
        q, k, v, states, scores = ctx.saved_tensors
        C = ctx.C
        B, T, H, Fd = q.shape
        Dv = v.shape[-1]
        N, D1 = T // C, Dv + 1
        dq, dk = q.new_empty(H, B * N, C, Fd), k.new_empty(H, B * N, C, Fd)
        dv = v.new_empty(H, B * N, C, Dv)
        dS0 = states.new_empty(B, H, Fd, D1) if ctx.has_init else None
        if dnum is None:
            dnum = v.new_zeros(H, B * N, C, Dv)
        if dden is None:
            dden = v.new_zeros(H, B * N, C)
        upper = torch.ones(C, C, dtype=torch.bool, device=q.device).triu_(1)

        def head(h: int) -> None:
            qh, kh = q[:, :, h].reshape(B * N, C, Fd), k[:, :, h].reshape(B * N, C, Fd)
            v1 = _ones_column(v[:, :, h].reshape(B * N, C, Dv))
            dyh = torch.cat([dnum[h], dden[h][..., None]], dim=-1)  # [B*N, C, Dv+1]
            before = states[h]
            # gradient reaching each chunk's state from the chunks after it (and from the final state)
            qdy = torch.bmm(qh.transpose(1, 2), dyh).view(B, N, Fd * D1)
            init = None if dS_final is None else dS_final[:, h].reshape(B, Fd * D1)
            after, total = _scan(qdy, init, reverse=True)
            after = after.view(B * N, Fd, D1)
            if dS0 is not None:
                dS0[:, h] = total.view(B, Fd, D1)
            A = scores[h]
            P = torch.bmm(dyh, v1.transpose(1, 2)).masked_fill_(upper, 0.0)  # dL/dA within the chunk
            torch.baddbmm(torch.bmm(P, kh), dyh, before.transpose(1, 2), out=dq[h])
            torch.baddbmm(torch.bmm(P.transpose(1, 2), qh), v1, after.transpose(1, 2), out=dk[h])
            torch.baddbmm(torch.bmm(A.transpose(1, 2), dyh[..., :Dv]), kh, after[..., :Dv], out=dv[h])

        _per_head(head, H)

        def head_major(x: torch.Tensor) -> torch.Tensor:  # [H, B*N, C, X] -> [B, T, H, X] view
            return x.view(H, B, T, x.shape[-1]).permute(1, 2, 0, 3)

        return head_major(dq), head_major(dk), head_major(dv), dS0, None

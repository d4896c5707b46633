"""Bidirectional (non-causal) linear attention: one state for every query, the form of LRA and GLUE encoders.

``S = S0 + sum_s k_s [v_s, 1]^T`` (``[F, Dv+1]``, the last column the normaliser's z) and ``[num | den]_t = q_t S``:
useful work ``4 T F (Dv+1)`` forward and twice that backward, whatever the chunk size.

Where the compiled CPU kernels build (``kernelized.cpu``), float32/float64 CPU inputs go to ``bidirectional.cpp``:
per (batch, head) sequence each product is one gemm on the caller's strided rows of ``[B, T, H, F]`` (no permuted
copies of features that may be hundreds wide), key padding is fused into the ``[v, 1]`` rows, and normalisation is
one pass over the output. In float32, where the build targets AVX-512, the products are ``tiles.h``'s register
tiles rather than BLAS gemms (MKL runs these skinny shapes well below its square-matrix rate); :data:`TILES` set to
False keeps BLAS (for side-by-side timings and tests). :func:`reference` (two einsums, autograd) stays as the readable
statement and the fallback.
"""

from __future__ import annotations

import torch

from kernelized import cpu as _cpu

TILES = True  # float32: tiles.h's register tiles where built (kernelized.cpu.library().tiles), else BLAS


def bidirectional_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    initial_state: tuple | None,
    eps: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``o [B, T, H, Dv]`` (numerator / (normaliser + eps), or the numerator when ``eps`` is None) and the state
    ``S [B, H, F, Dv]``, ``z [B, H, F]``.

    q, k ``[B, T, H, F]``, v ``[B, T, H, Dv]``: validated, one float dtype (float32 or float64), keys not yet
    masked; key_padding_mask bool ``[B, T]`` (True at padding) or None; initial_state ``(S, z)`` or None.
    """
    Dv = v.shape[-1]
    S0 = None if initial_state is None else torch.cat([initial_state[0], initial_state[1][..., None]], dim=-1)
    keep = None if key_padding_mask is None else (~key_padding_mask).to(v.dtype).contiguous()  # [B, T]
    if not _cpu.usable(q, k, v, *([] if S0 is None else [S0])):
        o, S = reference(q, k, v, keep, S0, eps)
    elif torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (q, k, v, S0)):
        o, S = _Bidirectional.apply(q, k, v, keep, S0, eps)
    else:  # inference: nothing kept for backward
        o, S, _ = _compiled_forward(q, k, v, keep, S0, eps, save=False)
    return o, S[..., :Dv], S[..., Dv]


def reference(q, k, v, keep, S0, eps: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The PyTorch form: ``o [B, T, H, Dv]`` and the state ``[B, H, F, Dv+1]``; ``keep [B, T]`` (1 = key) or None."""
    Dv = v.shape[-1]
    v1 = torch.cat([v, v.new_ones(*v.shape[:-1], 1)], dim=-1)  # [B, T, H, Dv + 1]: last column gives the normaliser
    if keep is not None:  # padded keys contribute nothing (zeroing their [v, 1] rows = zeroing their features)
        v1 = v1 * keep[:, :, None, None]
    S = torch.einsum("bthf,bthd->bhfd", k, v1)
    if S0 is not None:
        S = S + S0
    out = torch.einsum("bthf,bhfd->bthd", q, S)
    o = out[..., :Dv] if eps is None else out[..., :Dv] / (out[..., Dv:] + eps)
    return o, S


class _Bidirectional(torch.autograd.Function):
    """The compiled forward and backward; gradients reach q, k, v and the initial state."""

    @staticmethod
    def forward(ctx, q, k, v, keep, S0, eps):
        o, S, norm = _compiled_forward(q, k, v, keep, S0, eps, save=True)
        ctx.save_for_backward(q, k, v, keep, o, S, norm)
        ctx.eps, ctx.has_init = eps, S0 is not None
        return o, S

    @staticmethod
    def backward(ctx, do, dS):
        q, k, v, keep, o, S, norm = ctx.saved_tensors
        if do is None:
            do = torch.zeros_like(o)
        dq, dk, dv, dS0 = _compiled_backward(q, k, v, keep, do, o, S, norm, dS, ctx.eps, ctx.has_init)
        return dq, dk, dv, None, dS0, None


def _compiled_forward(q, k, v, keep, S0, eps: float | None, save: bool):
    """``o [B, T, H, Dv]``, ``S [B, H, F, Dv+1]`` and, if ``save`` and normalising, the normaliser + eps
    ``[B, H, T]`` (else None): one kernel call, which spreads the (batch, head) sequences over torch's OpenMP
    threads."""
    B, T, H, Fd = q.shape
    Dv = v.shape[-1]
    fn, gemm = _cpu.kernel("bidirectional_forward", v.dtype)
    o, S = v.new_empty(B, T, H, Dv), v.new_empty(B, H, Fd, Dv + 1)
    norm = v.new_empty(B, H, T) if save and eps is not None else None
    q, k, v = (_cpu.unit_rows(x) for x in (q, k, v))
    S0 = None if S0 is None else S0.contiguous()
    qkv = (*_cpu.heads(q), *_cpu.heads(k), *_cpu.heads(v), _cpu.pointer(keep))
    fn(gemm, *qkv, _cpu.pointer(S0), *_cpu.heads(o), S.data_ptr(), _cpu.pointer(norm), B, H, T, Fd, Dv,
       int(eps is not None), 0.0 if eps is None else eps, int(TILES))  # fmt: skip
    return o, S, norm


def _compiled_backward(q, k, v, keep, do, o, S, norm, dS, eps: float | None, has_init: bool):
    """Gradients ``dq, dk [B, T, H, F]``, ``dv [B, T, H, Dv]`` and (if ``has_init``) ``dS0 [B, H, F, Dv+1]``."""
    B, T, H, Fd = q.shape
    Dv = v.shape[-1]
    fn, gemm = _cpu.kernel("bidirectional_backward", v.dtype)
    dq, dk, dv = q.new_empty(B, T, H, Fd), k.new_empty(B, T, H, Fd), v.new_empty(B, T, H, Dv)
    dS0 = v.new_empty(B, H, Fd, Dv + 1) if has_init else None
    q, k, v, do, o = (_cpu.unit_rows(x) for x in (q, k, v, do, o))
    dS = None if dS is None else dS.contiguous()
    qkv = (*_cpu.heads(q), *_cpu.heads(k), *_cpu.heads(v), _cpu.pointer(keep))
    grads = (*_cpu.heads(dq), *_cpu.heads(dk), *_cpu.heads(dv), _cpu.pointer(dS0))
    fn(gemm, *qkv, *_cpu.heads(do), *_cpu.heads(o), S.data_ptr(), _cpu.pointer(norm), _cpu.pointer(dS), *grads,
       B, H, T, Fd, Dv, int(eps is not None), int(TILES))  # fmt: skip
    return dq, dk, dv, dS0

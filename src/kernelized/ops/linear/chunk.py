"""Chunked linear attention: linear in T, the training form.

The sequence is cut into chunks of C tokens. Within a chunk the causal product is a small masked matmul;
across chunks each chunk reads the state (sum of k v^T) of all chunks before it. The normaliser rides along
as an extra value column of ones, so numerator and denominator come out of the same products.
"""

from __future__ import annotations

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
    v1 = torch.cat([v, v.new_ones(B, T, H, 1)], dim=-1)  # [B, T, H, Dv + 1]: last column gives the normaliser
    S0 = None
    if initial_state is not None:
        S0 = torch.cat([initial_state[0], initial_state[1][..., None]], dim=-1)  # [B, H, F, Dv + 1]

    if not causal:
        S = torch.einsum("bthf,bthd->bhfd", k, v1)
        if S0 is not None:
            S = S + S0
        out = torch.einsum("bthf,bhfd->bthd", q, S)
        return out[..., :Dv], out[..., Dv], S[..., :Dv], S[..., Dv]

    C = min(chunk_size, T)
    N = -(-T // C)
    pad = N * C - T
    if pad:  # zero keys add nothing to any state; padded queries are dropped below
        q, k, v1 = (F.pad(x, (0, 0, 0, 0, 0, pad)) for x in (q, k, v1))
    qc = q.reshape(B, N, C, H, Fd).permute(0, 3, 1, 2, 4)  # [B, H, N, C, F]
    kc = k.reshape(B, N, C, H, Fd).permute(0, 3, 1, 2, 4)
    vc = v1.reshape(B, N, C, H, Dv + 1).permute(0, 3, 1, 2, 4)  # [B, H, N, C, Dv+1]

    kv = kc.transpose(-1, -2) @ vc  # [B, H, N, F, Dv+1]: each chunk's contribution to the state
    prefix = kv.cumsum(dim=2)
    S_final = prefix[:, :, -1]
    before = torch.cat([torch.zeros_like(kv[:, :, :1]), prefix[:, :, :-1]], dim=2)  # exclusive prefix
    if S0 is not None:
        before = before + S0[:, :, None]
        S_final = S_final + S0
    mask = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    A = (qc @ kc.transpose(-1, -2)).masked_fill(~mask, 0.0)  # [B, H, N, C, C]
    out = A @ vc + qc @ before  # [B, H, N, C, Dv+1]
    out = out.permute(0, 2, 3, 1, 4).reshape(B, N * C, H, Dv + 1)[:, :T]
    return out[..., :Dv], out[..., Dv], S_final[..., :Dv], S_final[..., Dv]

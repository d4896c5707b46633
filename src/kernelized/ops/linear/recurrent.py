"""Token-by-token linear attention: the decoding form. O(T) steps of O(F * Dv) each."""

from __future__ import annotations

import torch


def recurrent_linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, initial_state: tuple | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same contract as ``naive.parallel_linear_attention``; the state is updated one token at a time.

    Bidirectional attention has no token order, so it first accumulates the state over all keys, then reads it.
    """
    B, T, H, F = q.shape
    Dv = v.shape[-1]
    if initial_state is None:
        S = q.new_zeros(B, H, F, Dv)
        z = q.new_zeros(B, H, F)
    else:
        S, z = initial_state
    if not causal:
        for t in range(T):
            S = S + k[:, t, :, :, None] * v[:, t, :, None, :]
            z = z + k[:, t]
        num = torch.einsum("bthf,bhfd->bthd", q, S)
        den = torch.einsum("bthf,bhf->bth", q, z)
        return num, den, S, z
    nums, dens = [], []
    for t in range(T):
        S = S + k[:, t, :, :, None] * v[:, t, :, None, :]  # S += k_t v_t^T
        z = z + k[:, t]
        nums.append(torch.einsum("bhf,bhfd->bhd", q[:, t], S))
        dens.append(torch.einsum("bhf,bhf->bh", q[:, t], z))
    return torch.stack(nums, 1), torch.stack(dens, 1), S, z

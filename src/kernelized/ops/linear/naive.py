"""The ground truth: linear attention as a masked quadratic product of features (O(T^2)).

Inputs are already validated, masked and in float32; see ``kernelized.ops.linear_attention``.
"""

from __future__ import annotations

import torch


def parallel_linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, initial_state: tuple | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Numerator, normaliser and final state, the obvious way.

    Args: q, k ``[B, T, H, F]``; v ``[B, T, H, Dv]``; initial_state ``(S [B,H,F,Dv], z [B,H,F])`` or None.
    Returns: num ``[B, T, H, Dv]``, den ``[B, T, H]``, S ``[B, H, F, Dv]``, z ``[B, H, F]``.
    """
    A = torch.einsum("bthf,bshf->bhts", q, k)  # [B, H, T, T]: A[t, s] = <phi(q_t), phi(k_s)>
    if causal:
        T = q.shape[1]
        A = A.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=q.device).tril(), 0.0)
    num = torch.einsum("bhts,bshd->bthd", A, v)
    den = A.sum(-1).transpose(1, 2)  # [B, T, H]
    S = torch.einsum("bshf,bshd->bhfd", k, v)
    z = k.sum(1)  # [B, H, F]
    if initial_state is not None:
        S0, z0 = initial_state
        num = num + torch.einsum("bthf,bhfd->bthd", q, S0)
        den = den + torch.einsum("bthf,bhf->bth", q, z0)
        S, z = S + S0, z + z0
    return num, den, S, z

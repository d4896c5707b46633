"""Rotary position embeddings (Su et al. 2021; GPT-NeoX "rotate half" layout).

Each pair of channels ``(x[i], x[i + D/2])`` of a query or key at absolute position p is rotated by the angle
``p * base**(-2i/D)``, so ``<rot(q, m), rot(k, n)>`` depends on ``m - n`` only. The positions are absolute:
a decoding step passes its offset (the number of tokens already in the state), so cached keys never need
re-rotating.
"""

from __future__ import annotations

import torch
from torch import nn

from kernelized._checks import check_positive_int


def rotary_angles(positions: torch.Tensor, dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles, ``[T] -> ([T, dim/2], [T, dim/2])`` in float32."""
    inv_freq = base ** (-torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate ``x [B, T, H, D]`` (D even) by the absolute ``positions [T]``; float32 inside, x's dtype out."""
    D = x.shape[-1]
    if D % 2:
        raise ValueError(f"rotary positions need an even head dim, got D={D}")
    if positions.shape != (x.shape[1],):
        raise ValueError(f"positions must have shape [T]={[x.shape[1]]}, got {list(positions.shape)}")
    cos, sin = rotary_angles(positions, D, base)  # [T, D/2]
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return out.to(x.dtype)


class Rotary(nn.Module):
    """``Rotary(head_dim)(x [B, T, H, D], offset=0)``: rotary embedding for positions ``offset .. offset+T-1``."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        self.head_dim = check_positive_int("head_dim", head_dim)
        if head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary positions, got {head_dim}")
        self.base = float(base)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        positions = torch.arange(offset, offset + x.shape[1], device=x.device)
        return apply_rotary(x, positions, self.base)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base}"

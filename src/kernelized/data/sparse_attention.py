"""Sparse queries and keys: a teacher-student attention regression with a controllable input density (ours).

The KL-Transformer paper reports that RKS models struggle on sparse synthetic data where PRF models converge; its
setup is not public. This is our construction of such data:

* inputs ``x [B, T, D]``: every coordinate is nonzero with probability ``density``, its value ``N(0, 1 /
  density)``, so ``E x_i^2 = 1`` at every density and only the sparsity changes (density 1: dense Gaussian);
* targets ``y [B, T, D]``: a fixed random softmax attention over the same sequence (bidirectional), ``H`` heads of
  ``D / H`` dims, ``y = concat_h softmax(sharpness * q_h k_h' / sqrt(D / H)) v_h`` with ``q = x Wq``, ``k = x Wk``,
  ``v = x Wv`` and ``W ~ N(0, 1 / D)`` drawn from ``teacher_seed``. The queries and keys the student sees are
  projections of sparse inputs: few active coordinates, so ``q.k`` is a sum of few large terms.

A student attention layer learns to reproduce ``y`` from ``x``; its error is reported as ``MSE / Var(y)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kernelized._checks import check_positive_int


@dataclass(frozen=True)
class SparseAttentionTask:
    """The generator: sizes, density and the teacher (see the module docstring)."""

    d_model: int = 32
    num_heads: int = 2
    seq_len: int = 32
    density: float = 0.1
    sharpness: float = 1.0  # teacher logits' scale: 0 gives uniform attention, large a near-argmax
    teacher_seed: int = 0

    def __post_init__(self):
        check_positive_int("d_model", self.d_model)
        check_positive_int("num_heads", self.num_heads)
        check_positive_int("seq_len", self.seq_len)
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model must be a multiple of num_heads={self.num_heads}, got {self.d_model}")
        if not 0 < self.density <= 1:
            raise ValueError(f"density must lie in (0, 1], got {self.density!r}")
        if not self.sharpness >= 0:
            raise ValueError(f"sharpness must be >= 0, got {self.sharpness!r}")

    def teacher(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``Wq, Wk, Wv [D, D]`` from ``teacher_seed``."""
        g = torch.Generator().manual_seed(self.teacher_seed)
        D = self.d_model
        return tuple(torch.randn(D, D, generator=g) / math.sqrt(D) for _ in range(3))

    def inputs(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """``x [batch, T, D]``: Bernoulli(density) masks times N(0, 1/density) values."""
        shape = (batch, self.seq_len, self.d_model)
        mask = torch.rand(shape, generator=generator) < self.density
        return mask * torch.randn(shape, generator=generator) / math.sqrt(self.density)

    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """``y [B, T, D]``, the teacher's softmax attention output for ``x [B, T, D]``."""
        wq, wk, wv = (w.to(x.dtype) for w in self.teacher())
        B, T, D = x.shape
        H, dh = self.num_heads, D // self.num_heads
        q, k, v = ((x @ w).view(B, T, H, dh).transpose(1, 2) for w in (wq, wk, wv))
        weights = torch.softmax(self.sharpness * q @ k.transpose(-1, -2) / math.sqrt(dh), dim=-1)
        return (weights @ v).transpose(1, 2).reshape(B, T, D)

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch ``(x, y)``."""
        x = self.inputs(batch, generator)
        return x, self.targets(x)

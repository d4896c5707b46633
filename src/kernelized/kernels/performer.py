"""Performer's FAVOR+ (Choromanski et al., 2021): positive orthogonal random features of the softmax kernel."""

from __future__ import annotations

import torch

from kernelized.kernels.random_features import StandardGaussianFeatureMap, check_num_features, gaussian_prf_kernel
from kernelized.kernels.registry import register


@register("performer")
class PerformerFeatureMap(StandardGaussianFeatureMap):
    """FAVOR+: ``phi(x) = exp(+-w.x~ - |x~|^2 / 2) / sqrt(2M)``, ``kernel(q, k) = exp(q.k / sqrt(d))``.

    Defaults follow the KL code's ``performer`` (its ``Favor``): M = d orthogonal frequencies per head, the
    hyperbolic pair (2M = 2d features), redrawn every 1000 training steps. ``x~ = d**(-1/4) x``.

    Args:
        num_features: M frequencies (default d); features are 2M with the hyperbolic pair, else M.
        orthogonal: orthogonal random features (blocks of d orthogonal rows with chi norms).
        hyperbolic: use both exp(+w.x) and exp(-w.x) (lower variance for the same draw).
        stabilize: the overflow stabiliser (see :mod:`kernelized.kernels.random_features`).
        redraw, eval_draw, seed, scale: the draw policy and input scale.
    """

    def __init__(
        self,
        head_dim: int,
        num_heads: int = 1,
        num_features: int | None = None,
        orthogonal: bool = True,
        hyperbolic: bool = True,
        stabilize: bool = True,
        redraw: str | int = 1000,
        eval_draw: str = "fixed",
        seed: int = 0,
        scale: float | None = None,
    ):
        super().__init__(
            head_dim, num_heads, estimator="prf", redraw=redraw, eval_draw=eval_draw, seed=seed, scale=scale,
            hyperbolic=hyperbolic, norm_offset=0.5, stabilize=stabilize,
        )  # fmt: skip
        self.m = check_num_features(num_features, head_dim)
        self.orthogonal = bool(orthogonal)
        self._init_draws()

    def kernel(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The softmax kernel ``exp(q~.k~) = exp(q.k / sqrt(d))`` (with the default scale)."""
        q, k = self._scaled_pair(q, k)
        return gaussian_prf_kernel(q, k, self.norm_offset)

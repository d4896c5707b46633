"""How the GMM estimators' error moves with the spectrum: closed-form MSE against the covariance's eigenvalues,
the input norms and M, with a Monte-Carlo check at each cell.

The KL paper's variance claim: the MSE of the GMM-RKS and GMM-PRF estimators is controlled by the eigenvalues of
the learned covariances. With :meth:`~kernelized.kernels.random_features.RandomFeatureMap.estimator_mse`:

* GMM-RKS, per noise row ``2 cos(m)^2 (1 - e^{-a})^2`` with ``a = d' Sigma d``, ``d = q~ - k~``: it rises with
  the eigenvalues and saturates (at 2 cos(m)^2 per row, divided by M); the kernel itself falls as ``e^{-a/2}``, so
  the *relative* error grows like ``e^{a}``.
* GMM-PRF, per frequency ``e^{2m + a} (e^{a} - 1)`` times ``e^{-2c(|q~|^2 + |k~|^2)}`` with ``a = t' Sigma t``,
  ``t = q~ + k~``: exponential in the eigenvalues along t and in the norms; relative error ``(e^{a} - 1) / M``.

Each cell: a float64 map with the spectrum set to mu = 0, Sigma = factor * I (so the eigenvalues are exactly the
factor), pairs ``(q, k)`` with ``|q| = |k| = norm`` (before the map's d^-1/4 scaling) in random directions; rows
hold the closed-form MSE averaged over pairs, the squared kernel averaged over pairs, their ratio, and the MSE
measured over ``draws`` independent draws with its standard error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from kernelized import kernels
from kernelized.eval.kernel_error import draw_estimates, scale_covariance, standardize_spectrum

KERNELS = ("gmm-rks", "gmm-prf")


def unit_pairs(pairs: int, num_heads: int, head_dim: int, norm: float, seed: int = 0):
    """``q, k [pairs, H, d]`` float64 in random directions, every vector of length ``norm``."""
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(pairs, num_heads, head_dim, generator=g, dtype=torch.float64) for _ in range(2))
    return norm * q / q.norm(dim=-1, keepdim=True), norm * k / k.norm(dim=-1, keepdim=True)


def variance_cell(name: str, factor: float, norm: float, M: int, *, head_dim: int = 16, num_heads: int = 2,
                  pairs: int = 32, draws: int = 200, seed: int = 0) -> dict:  # fmt: skip
    """One row: closed-form and measured MSE of ``name`` with Sigma = factor * I at ``|q| = |k| = norm``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fm = kernels.build(name, head_dim, num_heads, num_features=M, seed=seed).double()
    standardize_spectrum(fm)
    scale_covariance(fm, factor)
    q, k = unit_pairs(pairs, num_heads, head_dim, norm, seed)
    with torch.no_grad():
        theory, K = fm.estimator_mse(q, k), fm.kernel(q, k)
    err2 = (draw_estimates(fm, q, k, draws, seed=seed + 1) - K) ** 2
    per_draw = err2.mean(dim=(1, 2))
    return {
        "kernel": name,
        "eigenvalue": factor,
        "norm": norm,
        "num_features": M,
        "kernel_sq": float((K * K).mean()),
        "mse_theory": float(theory.mean()),
        "rel_mse_theory": float((theory / (K * K)).mean()),
        "mse_measured": float(per_draw.mean()),
        "mse_se": float(per_draw.std() / math.sqrt(draws)),
    }


def variance_sweep(
    factors: Sequence[float], norms: Sequence[float], num_features: Sequence[int], *, kernel_names=KERNELS, **cell
) -> list[dict]:
    """Every kernel x eigenvalue factor x norm at the first M, and every M at factor 1 and the first norm."""
    rows = []
    for name in kernel_names:
        for factor in factors:
            for norm in norms:
                rows.append(variance_cell(name, factor, norm, num_features[0], **cell))
        for M in num_features[1:]:
            rows.append(variance_cell(name, 1.0, norms[0], M, **cell))
    return rows

"""How well random features estimate their kernel: MSE, variance and bias against the number of features M.

The variance analysis of "Learning the Transformer Kernel" (its MSE/variance theorem is not available to us; the
reference formulas below are the standard ones, e.g. Sutherland and Schneider, "On the Error of Random Fourier
Features", UAI 2015). For each
kernel and each M, ``draws`` independent draws of the map give estimates ``<phi(q), phi(k)>`` of ``kernel(q, k)``
on the given pairs (q, k); the rows report

* ``mse``: mean over draws and pairs of ``(estimate - kernel)^2``, with ``mse_se`` its standard error (from the
  per-draw means, since pairs within one draw share frequencies);
* ``variance``: the mean over pairs of the estimate's variance across draws; ``bias2``: the mean over pairs of the
  squared difference between the mean estimate and the kernel (zero up to noise for unbiased estimators);
* ``rel_rmse``: ``sqrt(mse) / mean |kernel|``;
* ``mse_theory``: the closed-form MSE where one exists (:meth:`RandomFeatureMap.estimator_mse`: i.i.d. Gaussian
  or Gaussian-mixture frequencies, i.e. rff, performer, gmm-rks and gmm-prf without orthogonal rows), e.g. ``rff``:
  ``(1/2M) (1 - exp(-|d|^2))^2``, ``d = q~ - k~``; ``gmm-prf`` (C = 1): ``(1/M) K^2 (exp(t' Sigma t) - 1)``,
  ``t = q~ + k~``. Empty otherwise.

For kernels without a closed form (FastFood with learned diagonals, generators) ``kernel(q, k)`` is a fixed-seed
large-sample estimate; its own error (~1/kernel_samples) is negligible next to the MSE at the M reported here.
Generators are evaluated with evaluation-mode BatchNorm, so their M frequencies are i.i.d.

With ``standardize=True`` the GMM spectra are set to mu = 0, Sigma = I before measuring: their initialisation
(Sigma ~ 0 for GMM-RKS, as in the KL code) makes every draw nearly the same and the error trivially tiny.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from kernelized import kernels
from kernelized._checks import check_float_tensor, check_positive_int, check_same
from kernelized.kernels.random_features import RandomFeatureMap

#: the kernels the analysis runs by default, with the options that give each a non-degenerate spectrum
DEFAULT_SPECS: dict[str, dict] = {
    "rff": {},
    "performer": {},
    "gmm-rks": {},
    "gmm-prf": {},
    "fastfood-rks": {"init": "rbf"},
    "fastfood-prf": {"init": "rbf"},
    "generative-rks": {},
    "generative-prf": {},
}


@torch.no_grad()
def standardize_spectrum(fm: RandomFeatureMap) -> None:
    """Set a GMM map's components to mu = 0, Sigma = I (and equal weights); other maps are left as they are."""
    if not hasattr(fm, "num_components"):
        return
    fm.mean.zero_()
    if fm.covariance == "full":
        fm.sigma.copy_(torch.eye(fm.head_dim, dtype=fm.sigma.dtype).expand_as(fm.sigma))
    else:
        fm.log_var.zero_()
    if fm.num_components > 1:
        fm.logits.zero_()


@torch.no_grad()
def scale_covariance(fm: RandomFeatureMap, factor: float) -> None:
    """Multiply every eigenvalue of a GMM map's covariances by ``factor`` (L by sqrt(factor), or log-variances
    by + log(factor)); the means stay. A map without covariances is an error naming the ones that have them."""
    if not hasattr(fm, "num_components"):
        raise ValueError(f"scale_covariance needs a gmm-rks or gmm-prf map, got {type(fm).__name__}")
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor!r}")
    if fm.covariance == "full":
        fm.sigma.mul_(math.sqrt(factor))
    else:
        fm.log_var.add_(math.log(factor))


@torch.no_grad()
def draw_estimates(fm: RandomFeatureMap, q: torch.Tensor, k: torch.Tensor, draws: int, seed: int = 0) -> torch.Tensor:
    """``draws`` independent estimates ``<phi(q), phi(k)>``: ``[draws, ..., H]`` (the map's draw is replaced)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(draws):
        fm.resample(g)
        out.append(fm.estimate(q, k))
    return torch.stack(out)


@torch.no_grad()
def theoretical_mse(fm: RandomFeatureMap, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor | None:
    """The closed-form per-pair MSE of one draw ``[..., H]`` (:meth:`RandomFeatureMap.estimator_mse`), or None for
    a map without one."""
    return fm.estimator_mse(q, k) if fm.has_estimator_mse else None


def kernel_error(
    name: str,
    q: torch.Tensor,
    k: torch.Tensor,
    num_features: Sequence[int],
    draws: int = 100,
    seed: int = 0,
    options: Mapping | None = None,
    standardize: bool = True,
) -> list[dict]:
    """One row per M for kernel ``name`` on the pairs ``q, k`` ``[P, H, d]`` (see the module docstring).

    The map is built in float64 with ``seed`` for its learned parameters (the caller's RNG is left alone) and its
    draws, so the same call gives the same rows.
    """
    check_float_tensor("q", q, ndim=3, shape_hint="[P, H, d]")
    check_float_tensor("k", k, ndim=3, shape_hint="[P, H, d]")
    check_same(["q", "k"], [tuple(q.shape), tuple(k.shape)], "shapes of q and k")
    check_positive_int("draws", draws, minimum=2)
    if not num_features:
        raise ValueError("num_features must list at least one M, got an empty list")
    if not issubclass(kernels.get(name), RandomFeatureMap):
        raise ValueError(f"kernel_error needs a random feature map, got {name!r}")
    q, k = q.double(), k.double()
    rows = []
    for M in num_features:
        check_positive_int("num_features", M)
        with torch.random.fork_rng(devices=[]):  # seed the learned parameters without touching the caller's RNG
            torch.manual_seed(seed)
            fm = kernels.build(name, q.shape[-1], q.shape[-2], num_features=M, seed=seed, **(options or {})).double()
        if standardize:
            standardize_spectrum(fm)
        if name.startswith("generative"):
            fm.eval()
            fm.eval_draw = "current"
        with torch.no_grad():
            K = fm.kernel(q, k)
        est = draw_estimates(fm, q, k, draws, seed=seed + 1)
        err2 = (est - K) ** 2
        per_draw = err2.mean(dim=(1, 2))
        mse = float(per_draw.mean())
        theory = theoretical_mse(fm, q, k)
        rows.append(
            {
                "kernel": name,
                "num_features": M,
                "feature_dim": fm.feature_dim,
                "draws": draws,
                "mse": mse,
                "mse_se": float(per_draw.std() / math.sqrt(draws)),
                "variance": float(est.var(0).mean()),
                "bias2": float(((est.mean(0) - K) ** 2).mean()),
                "rel_rmse": math.sqrt(mse) / float(K.abs().mean()),
                "mse_theory": float(theory.mean()) if theory is not None else float("nan"),
            }
        )
    return rows


def fit_slope(rows: Sequence[Mapping]) -> tuple[float, float]:
    """Least-squares slope of log(mse) on log(M) and its standard error (from each point's ``mse_se``)."""
    if len(rows) < 2:
        return float("nan"), float("nan")
    x = torch.tensor([math.log(r["num_features"]) for r in rows], dtype=torch.float64)
    y = torch.tensor([math.log(r["mse"]) for r in rows], dtype=torch.float64)
    v = torch.tensor([(r["mse_se"] / r["mse"]) ** 2 for r in rows], dtype=torch.float64)
    w = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    return float((w * y).sum()), float(((w**2) * v).sum().sqrt())

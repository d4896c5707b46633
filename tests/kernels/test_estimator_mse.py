"""estimator_mse: the closed-form MSE of one draw equals the Monte-Carlo MSE, for every map that has one.

For RKS ``Var cos(w.d) = (1 + k(2d))/2 - k(d)^2`` per frequency (GMM-RKS: per noise row of the pair z +- mu); for
PRF ``E exp(2 w.t) - (E exp(w.t))^2``; divided by the number of draws per component."""

import math

import pytest
import torch

from kernelized import kernels
from kernelized.eval.kernel_error import draw_estimates, scale_covariance

pytestmark = pytest.mark.usefixtures("one_thread")

H, D = 2, 6


def _map(name, M, options, cov_scale=1.0, seed=0):
    """A float64 map whose learned spectrum is moved off its initialisation (random means, covariances)."""
    torch.manual_seed(seed)
    fm = kernels.build(name, D, H, num_features=M, **options).double()
    with torch.no_grad():
        for p in fm.parameters():
            p.add_(0.3 * torch.randn_like(p))
    if cov_scale != 1.0:
        scale_covariance(fm, cov_scale)
    return fm


def _pairs(norm, P=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(P, H, D, generator=g, dtype=torch.float64) for _ in range(2))
    return norm * q / q.norm(dim=-1, keepdim=True), norm * k / k.norm(dim=-1, keepdim=True)


def _z_scores(fm, q, k, draws=3000):
    """(closed form - Monte Carlo) / MC standard error, per pair and head."""
    with torch.no_grad():
        theory, K = fm.estimator_mse(q, k), fm.kernel(q, k)
    err2 = (draw_estimates(fm, q, k, draws, seed=7) - K) ** 2
    return (err2.mean(0) - theory) / (err2.std(0) / math.sqrt(draws)), theory


CASES = [  # (kernel, options, M, covariance scale, |q| = |k|): PRF norms small, its squared errors are heavy-tailed
    ("rff", {"orthogonal": False}, 4, 1.0, 1.5),
    ("rff", {"orthogonal": False, "smoothing": None}, 16, 1.0, 0.7),
    ("performer", {"orthogonal": False}, 8, 1.0, 0.6),
    ("performer", {"orthogonal": False, "hyperbolic": False}, 32, 1.0, 0.4),
    ("gmm-rks", {}, 4, 1.0, 1.5),
    ("gmm-rks", {"num_components": 2, "covariance": "diag"}, 8, 4.0, 0.8),
    ("gmm-rks", {"num_components": 4}, 16, 0.25, 2.0),
    ("gmm-prf", {}, 8, 1.0, 0.5),
    ("gmm-prf", {"num_components": 2, "covariance": "full"}, 8, 0.5, 0.6),
    ("gmm-prf", {"hyperbolic": True, "num_components": 2}, 16, 2.0, 0.4),
]


@pytest.mark.parametrize("name,options,M,cov_scale,norm", CASES)
def test_closed_form_mse_matches_monte_carlo(name, options, M, cov_scale, norm):
    fm = _map(name, M, options, cov_scale)
    q, k = _pairs(norm)
    z, theory = _z_scores(fm, q, k)
    assert theory.shape == (5, H) and bool((theory > 0).all())
    assert z.abs().max() < 4.5, z  # 10 entries per case, exact formula: |z| stays within a few units


def test_the_monte_carlo_check_would_catch_a_wrong_formula():
    # GMM-RKS's pair z +- mu shares z: treating the two as independent frequencies halves the variance
    fm = _map("gmm-rks", 4, {}, 1.0)
    q, k = _pairs(1.5)
    fm.paired_rows = False
    z, _ = _z_scores(fm, q, k)
    assert z.abs().max() > 10


def test_mse_falls_as_one_over_m_and_moves_with_the_covariance_and_the_norms():
    q, k = _pairs(0.8)
    for name in ("gmm-rks", "gmm-prf"):
        small, large = (_map(name, M, {"num_components": 2}).estimator_mse(q, k) for M in (8, 32))
        torch.testing.assert_close(small, 4 * large)  # same spectrum (seeded), 4x the draws per component
    # PRF: the variance grows without bound with the eigenvalues along t = q~ + k~ and with |q|, |k|
    prf = [_map("gmm-prf", 8, {}, s).estimator_mse(q, k) for s in (0.25, 1.0, 4.0)]
    assert bool((prf[0] < prf[1]).all() and (prf[1] < prf[2]).all())
    assert bool((prf[2] > 10 * prf[0]).all())
    # RKS: bounded however wide the spectrum, and zero at q = k
    rks = _map("gmm-rks", 8, {}, 1e4)
    assert bool((rks.estimator_mse(q, k) <= 2 / 8 + 1e-12).all())  # per noise row 2 cos(m)^2 (1 - e^-a)^2 <= 2
    assert float(rks.estimator_mse(q, q).detach().abs().max()) < 1e-12
    fm = _map("performer", 8, {"orthogonal": False})
    assert bool((fm.estimator_mse(2 * q, 2 * k) > fm.estimator_mse(q, k)).all())


@pytest.mark.parametrize(
    "name,options,match",
    [
        ("fastfood-rks", {}, "FastFoodRKS has no closed form"),
        ("generative-prf", {}, "GenerativePRF has no closed form"),
        ("performer", {}, "orthogonal rows are not independent"),
        ("gmm-prf", {"orthogonal": True}, "orthogonal noise rows"),
        ("elu", {}, "deterministic"),
    ],
)
def test_maps_without_a_closed_form_say_so(name, options, match):
    fm = kernels.build(name, D, H, **options)
    q, k = _pairs(1.0)
    assert not fm.has_estimator_mse
    with pytest.raises(NotImplementedError, match=match):
        fm.estimator_mse(q.float(), k.float())


def test_scale_covariance_rejects_maps_without_one():
    with pytest.raises(ValueError, match="needs a gmm-rks or gmm-prf map, got RandomFourierFeatures"):
        scale_covariance(kernels.build("rff", D, H), 2.0)
    with pytest.raises(ValueError, match="factor must be > 0"):
        scale_covariance(kernels.build("gmm-rks", D, H), 0.0)

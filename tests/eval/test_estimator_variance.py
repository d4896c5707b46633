"""estimator_variance: the GMM MSE against the covariance's eigenvalues, the norms and M, in closed form."""

import pytest
import torch

from kernelized.eval.estimator_variance import unit_pairs, variance_cell, variance_sweep

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pairs_have_the_asked_norm():
    q, k = unit_pairs(5, 2, 8, 1.5)
    torch.testing.assert_close(q.norm(dim=-1), torch.full((5, 2), 1.5, dtype=torch.float64))
    torch.testing.assert_close(k.norm(dim=-1), torch.full((5, 2), 1.5, dtype=torch.float64))


def test_rks_error_saturates_while_prf_error_explodes_with_the_eigenvalues():
    cell = {"head_dim": 8, "pairs": 8, "draws": 2}
    rks = [variance_cell("gmm-rks", f, 1.5, 16, **cell) for f in (1.0, 16.0, 256.0)]
    prf = [variance_cell("gmm-prf", f, 1.5, 16, **cell) for f in (1.0, 4.0, 16.0)]
    assert rks[0]["mse_theory"] < rks[1]["mse_theory"] <= 2 / 16 + 1e-12  # bounded by 2 cos^2 / M per row
    assert abs(rks[2]["mse_theory"] - rks[1]["mse_theory"]) < 0.05 * rks[1]["mse_theory"]  # saturated
    assert prf[0]["mse_theory"] < prf[1]["mse_theory"] < prf[2]["mse_theory"]
    assert prf[2]["rel_mse_theory"] > 100 * prf[0]["rel_mse_theory"]  # relative error (e^a - 1) / M, a = t' Sigma t


def test_the_sweep_covers_its_grid_and_the_m_law_is_exact():
    rows = variance_sweep([0.5, 2.0], [0.5, 1.0], [8, 32], head_dim=4, pairs=4, draws=2)
    assert len(rows) == 2 * (2 * 2 + 1)
    for name in ("gmm-rks", "gmm-prf"):
        m8 = next(r for r in rows if r["kernel"] == name and r["eigenvalue"] == 2.0 and r["norm"] == 0.5)
        m32 = next(r for r in rows if r["kernel"] == name and r["num_features"] == 32)
        at_one = variance_cell(name, 1.0, 0.5, 8, head_dim=4, pairs=4, draws=2)
        assert m32["mse_theory"] == pytest.approx(at_one["mse_theory"] / 4)  # same spectrum, 4x the draws
        assert m8["num_features"] == 8

"""kernel_error: MSE against M matches the closed-form MSE where one exists, falls as 1/M.

The command (`kernelized kernel-error`) is tested in tests/experiments/test_kernel_error_experiment.py."""

import math

import pytest
import torch

from kernelized.eval.kernel_error import fit_slope, kernel_error

pytestmark = pytest.mark.usefixtures("one_thread")


def _pairs(P=16, H=2, d=4, scale=0.5):
    g = torch.Generator().manual_seed(0)
    return scale * torch.randn(P, H, d, generator=g), scale * torch.randn(P, H, d, generator=g)


@pytest.mark.parametrize("name", ["rff", "gmm-prf"])
def test_measured_mse_matches_the_closed_form_and_falls_as_one_over_m(name):
    # PRF squared errors are heavy-tailed (log-normal in w.t); small |q + k| keeps their standard error honest
    q, k = _pairs(scale=0.5 if name == "rff" else 0.3)
    rows = kernel_error(name, q, k, [4, 16, 64], draws=200)
    for r in rows:
        assert r["feature_dim"] == (2 * r["num_features"] + 1 if name == "rff" else r["num_features"])
        # the closed form is the exact expectation of the measured MSE: within 4 standard errors
        assert abs(r["mse"] - r["mse_theory"]) < 4 * r["mse_se"], r
        # unbiased: the squared error of the mean is variance / draws up to noise
        assert r["bias2"] < 5 * r["variance"] / r["draws"], r
    slope, se = fit_slope(rows)
    assert abs(slope + 1) < 4 * se + 0.05


def test_theory_is_absent_where_no_closed_form_and_bad_input():
    q, k = _pairs()
    (row,) = kernel_error("performer", q, k, [8], draws=10)
    assert math.isnan(row["mse_theory"]) and row["mse"] > 0
    with pytest.raises(ValueError, match="shapes of q and k must agree"):
        kernel_error("rff", q, k[:, :1], [8])
    with pytest.raises(ValueError, match="draws must be an integer >= 2"):
        kernel_error("rff", q, k, [8], draws=1)
    with pytest.raises(ValueError, match="num_features must be an integer >= 1"):
        kernel_error("rff", q, k, [0])
    with pytest.raises(ValueError, match="random feature map"):
        kernel_error("elu", q, k, [8])

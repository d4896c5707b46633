"""kernel_error: MSE against M matches the closed-form MSE where one exists, falls as 1/M; the CLI writes its files."""

import csv
import math

import pytest
import torch

from kernelized.eval.kernel_error import fit_slope, kernel_error
from kernelized.experiments import kernel_error as cli

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


def test_cli_writes_table_markdown_and_plot(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--kernels", "rff,gmm-prf,fastfood-rks", "--num-features", "8,16", "--head-dim",
            "4", "--pairs", "8", "--draws", "20", "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    with open(tmp_path / "kernel_error.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["kernel"], int(r["num_features"])) for r in rows] == [
        ("rff", 8), ("rff", 16), ("gmm-prf", 8), ("gmm-prf", 16), ("fastfood-rks", 8), ("fastfood-rks", 16)
    ]  # fmt: skip
    assert all(float(r["mse"]) > 0 for r in rows)
    md = (tmp_path / "kernel_error.md").read_text()
    assert "kernel-error --out" in md and "| fastfood-rks | 16 |" in md and "kernel_error.png" in md
    assert (tmp_path / "kernel_error.png").read_bytes()[:4] == b"\x89PNG"
    assert "log-log slope" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["--out", str(tmp_path), "--kernels", "rebased"])
    with pytest.raises(SystemExit):
        cli.main(["--out", str(tmp_path), "--num-features", "8,0"])

"""eval.spectra: which maps have a learned spectrum, principal directions, the kernel profile, the summary."""

import math

import pytest
import torch

from kernelized import kernels
from kernelized.eval import spectra
from kernelized.eval.kernel_error import scale_covariance, standardize_spectrum
from kernelized.layers.attention import KernelAttention

pytestmark = pytest.mark.usefixtures("one_thread")


def test_only_maps_with_learned_parameters_are_found():
    found = {}
    for name, options in (("gmm-rks", {}), ("gmm-prf", {}), ("generative-rks", {}), ("fastfood-prf", {"learn": True}),
                          ("fastfood-rks", {"learn": False}), ("performer", {}), ("rff", {}), ("elu", {})):  # fmt: skip
        layer = KernelAttention(32, num_heads=2, kernel=name, kernel_options=options)
        found[name, options.get("learn")] = [n for n, _ in spectra.learned_maps(layer)]
    learned = [k for k, v in found.items() if v == ["feature_map"]]
    assert learned == [("gmm-rks", None), ("gmm-prf", None), ("generative-rks", None), ("fastfood-prf", True)]


def test_principal_direction_and_profile_of_a_known_gaussian():
    fm = kernels.build("gmm-prf", 8, 1).double()
    standardize_spectrum(fm)  # mu = 0, Sigma = I
    with torch.no_grad():
        fm.log_var[0, 0, 3] = math.log(9.0)  # the widest axis: e_3
    top = spectra.principal_directions(fm)[0, 0]
    assert abs(float(top[3].abs()) - 1) < 1e-5
    standardize_spectrum(fm)
    u = torch.zeros(1, 1, 8, dtype=torch.float64)
    u[..., 0] = 1.0
    profile = spectra.kernel_profile(fm, u)[0, 0]  # mu = 0, Sigma = I, c = 1: exp(-r^2 / 2) with r = |q~|
    torch.testing.assert_close(profile, torch.exp(-0.5 * spectra.RADII.double() ** 2), rtol=1e-6, atol=1e-9)
    rks = kernels.build("gmm-rks", 8, 1).double()
    standardize_spectrum(rks)
    assert float(spectra.kernel_profile(rks, u)[0, 0, 0]) == pytest.approx(2 + 1.0)  # 2 exp(0) cos(0) + s^2


def test_the_summary_follows_the_covariance_and_the_figure_is_written(tmp_path):
    fm = kernels.build("gmm-rks", 8, 2, num_components=2).double()
    before = spectra.spectrum_summary(fm)
    scale_covariance(fm, 2.0)
    after = spectra.spectrum_summary(fm)
    for a, b in zip(before, after):
        assert b["trace_sigma"] == pytest.approx(2 * a["trace_sigma"]) and b["mean_norm"] == a["mean_norm"]
    start = kernels.build("gmm-rks", 8, 2, num_components=2).double()
    spectra.draw_spectra(tmp_path / "s.png", "gmm-rks", fm, start)
    ff = kernels.build("fastfood-rks", 8, 2, learn=True)
    gen = kernels.build("generative-prf", 8, 2)
    spectra.draw_spectra(tmp_path / "f.png", "fastfood", ff, None)
    spectra.draw_spectra(tmp_path / "g.png", "generator", gen, None)
    assert all((tmp_path / f).read_bytes()[:4] == b"\x89PNG" for f in ("s.png", "f.png", "g.png"))
    assert spectra.spectrum_summary(ff)[0]["kind"] == "fastfood" and "mean_abs_S" in spectra.spectrum_summary(ff)[0]

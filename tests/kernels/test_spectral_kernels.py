"""Every spectral kernel against the kernel it claims: Monte-Carlo mean over draws, 1/M error decay, positivity,
gradients to every learned parameter. Tolerances come from the draws' own spread (standard errors), not constants."""

import math

import pytest
import torch

from kernelized import kernels

H, D = 2, 4
R = 200  # draws per estimate

# name, options: every family, and the variants whose closed form differs (mixtures, full/diag, hyperbolic, fixed)
CASES = [
    ("rff", {}),
    ("rff", {"orthogonal": True}),
    ("performer", {}),
    ("performer", {"orthogonal": False, "hyperbolic": False}),
    ("gmm-rks", {}),
    ("gmm-rks", {"num_components": 2, "covariance": "diag"}),
    ("gmm-prf", {}),
    ("gmm-prf", {"num_components": 2, "covariance": "full", "hyperbolic": True}),
    ("fastfood-rks", {"init": "rbf"}),
    ("fastfood-rks", {"learn": False}),
    ("fastfood-prf", {"init": "rbf"}),
    ("fastfood-prf", {"learn": False, "head_dim": 3}),  # padded to 4
    ("generative-rks", {}),
    ("generative-prf", {"noise_dims": [4, 8, 16]}),
]
LEARNED = ["gmm-rks", "gmm-prf", "fastfood-rks", "fastfood-prf", "generative-rks", "generative-prf"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _ids(case):
    return case[0] + "".join(f"-{k}={v}" for k, v in case[1].items())


def _build(name, options, num_features=None, seed=0):
    options = dict(options)
    d = options.pop("head_dim", D)
    torch.manual_seed(seed)
    if num_features is not None:
        options["num_features"] = num_features
    fm = kernels.build(name, head_dim=d, num_heads=H, **options).double()
    if name.startswith("generative"):
        # evaluation-mode BatchNorm: frequencies are i.i.d. functions of the noise, as in kernel()
        fm.eval()
        fm.eval_draw = "current"
    with torch.no_grad():  # move the learned spectra away from their (near-trivial) initialisation
        for n, p in fm.named_parameters():
            if n in ("mean", "logits"):
                p.add_(0.3 * torch.randn_like(p))
    return fm, d


def _inputs(d, n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    q = 0.6 * torch.randn(n, H, d, generator=g, dtype=torch.float64)
    k = 0.6 * torch.randn(n, H, d, generator=g, dtype=torch.float64)
    return q, k


def _draws(fm, q, k, reps=R, seed=2):
    g = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for _ in range(reps):
            fm.resample(g)
            out.append(fm.estimate(q, k))
    return torch.stack(out)  # [R, n, H]


@pytest.mark.parametrize("name,options", CASES, ids=[_ids(c) for c in CASES])
def test_monte_carlo_mean_converges_to_kernel_and_error_falls_as_one_over_m(name, options):
    Ms = [4, 8, 16, 32, 64]
    q, k = _inputs(options.get("head_dim", D))
    log_mse, var_log_mse = [], []
    for M in Ms:
        fm, _ = _build(name, options, num_features=M)
        with torch.no_grad():
            K = fm.kernel(q, k)
        est = _draws(fm, q, k)
        large = name.startswith("generative") or (name.startswith("fastfood") and fm.learn)
        n_big = fm.kernel_samples if large else None
        # unbiasedness: mean over R draws within 5 standard errors (the estimate's own spread); a large-sample
        # kernel adds its own error, var * M / N
        var = est.var(0)
        se2 = var / R + (var * M / n_big if n_big else 0.0)
        z = (est.mean(0) - K).abs() / se2.sqrt()
        assert z.max() < 5, f"M={M}: max z = {z.max():.2f}"
        # MSE over draws, with the standard error of its log from the per-draw spread
        per_draw = ((est - K) ** 2).mean(dim=(1, 2))
        mse = per_draw.mean()
        log_mse.append(math.log(mse))
        var_log_mse.append(float(per_draw.var() / R / mse**2))
    x = torch.tensor([math.log(m) for m in Ms], dtype=torch.float64)
    y, v = torch.tensor(log_mse, dtype=torch.float64), torch.tensor(var_log_mse, dtype=torch.float64)
    w = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    slope = float((w * y).sum())
    se_slope = float(((w**2) * v).sum().sqrt())
    assert abs(slope + 1) < 4 * se_slope + 0.05, f"slope {slope:.3f} +- {se_slope:.3f}"


@pytest.mark.parametrize("name", ["performer", "gmm-prf", "fastfood-prf", "generative-prf"])
def test_prf_features_are_positive(name):
    fm = kernels.build(name, head_dim=8, num_heads=H).double()
    x = torch.randn(50, H, 8, dtype=torch.float64)
    for role in (fm.query, fm.key):
        f = role(x)
        assert (f > 0).all() and torch.isfinite(f).all()
    # RKS features are not: the reason RKS maps carry the smoothing constant
    assert (kernels.build(name.split("-")[0] + "-rks" if "-" in name else "rff", head_dim=8).query(x[:, :1]) < 0).any()


@pytest.mark.parametrize("name", LEARNED)
def test_gradients_reach_every_learned_parameter(name):
    options = {"num_components": 2} if name.startswith("gmm") else {}
    if name.startswith("gmm"):
        options["covariance"] = "diag" if name == "gmm-rks" else "full"
    fm = kernels.build(name, head_dim=D, num_heads=H, num_features=8, **options)
    fm.train()
    fm.on_forward()
    q, k = torch.randn(5, H, D), torch.randn(5, H, D)
    (fm.query(q) * fm.key(k)).sum().backward()
    names = [n for n, _ in fm.named_parameters()]
    assert names, "a learned kernel must have parameters"
    for n, p in fm.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    # the closed form is differentiable in the same parameters (what a kernel-fitting loss would use)
    if name.startswith("gmm"):
        fm.zero_grad()
        fm.kernel(q, k).sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in fm.parameters())


def test_gmm_one_component_is_the_published_code():
    """C = 1 reproduces the KL code's formulas: GMM-RKS sqrt(4/n)[cos u+, sin u+, cos u-, sin u-] + [s] with
    u+- = x~'(L' eps +- mu); GMM-PRF exp(x~' w - |x~|^2 - log(M)/2) with w = eps * exp(ell/2) + mu."""
    d, M = 6, 8
    x = torch.randn(3, H, d, dtype=torch.float64)
    xs = x * d**-0.25
    fm = kernels.build("gmm-rks", head_dim=d, num_heads=H, num_features=M, smoothing=0.36).double()
    eps = fm.noise_eps  # [H, M, d]
    L, mu = fm.sigma[:, 0], fm.mean[:, 0]
    wp = torch.einsum("hsi,hij->hsj", eps, L) + mu[:, None]
    wm = torch.einsum("hsi,hij->hsj", eps, L) - mu[:, None]
    up, um = torch.einsum("bhd,hsd->bhs", xs, wp), torch.einsum("bhd,hsd->bhs", xs, wm)
    n = 4 * M
    ref = torch.cat([up.cos(), up.sin(), um.cos(), um.sin()], -1) * math.sqrt(4 / n)
    ref = torch.cat([ref, torch.full((3, H, 1), 0.36, dtype=torch.float64)], -1)
    got = fm.query(x)
    assert got.shape == ref.shape
    torch.testing.assert_close(got.sort(-1).values, ref.sort(-1).values)  # same features, any order

    fm = kernels.build("gmm-prf", head_dim=d, num_heads=H, num_features=M, stabilize=False).double()
    w = fm.noise_eps * torch.exp(fm.log_var[:, 0] / 2)[:, None] + fm.mean[:, 0][:, None]
    ref = torch.exp(torch.einsum("bhd,hsd->bhs", xs, w) - (xs * xs).sum(-1, keepdim=True) - 0.5 * math.log(M))
    torch.testing.assert_close(fm.key(x), ref)


def test_gmm_prf_closed_form_reduces_to_gaussian_kernel():
    fm = kernels.build("gmm-prf", head_dim=D, num_heads=H).double()
    with torch.no_grad():
        fm.mean.zero_()
        fm.log_var.zero_()
    q, k = _inputs(D)
    qs, ks = q * D**-0.25, k * D**-0.25
    torch.testing.assert_close(fm.kernel(q, k), torch.exp(-0.5 * ((qs - ks) ** 2).sum(-1)))
    perf = kernels.build("performer", head_dim=D, num_heads=H).double()
    torch.testing.assert_close(perf.kernel(q, k), torch.exp((q * k).sum(-1) / math.sqrt(D)))


def test_default_sizes_follow_the_reference():
    from kernelized.kernels.random_features import pow2cast

    assert [pow2cast(64 * math.log(64)), pow2cast(32 * math.log(32)), pow2cast(96), pow2cast(64)] == [256, 128, 128, 64]
    F = {n: kernels.build(n, head_dim=64, num_heads=8).feature_dim for n in kernels.available()}
    assert F["performer"] == 128  # d ORF, hyperbolic pair
    assert F["gmm-rks"] == 1025  # ListOps: 256 samples, +-mu pair, cos/sin, + s
    assert F["gmm-prf"] == 256
    assert F["fastfood-rks"] == 129 and F["fastfood-prf"] == 64
    assert F["generative-rks"] == 513
    assert F["generative-prf"] == 256  # the published code's quirk gave 127
    assert F["rff"] == 513
    assert kernels.build("fastfood-rks", head_dim=12).feature_dim == 33  # padded to 16
    assert kernels.build("gmm-prf", head_dim=32).feature_dim == 128

"""The fused random-feature functions (kernels/feature_ops.py) against their torch-op statements, and the
frequencies computed once per call (query_key) and once per set of parameters in evaluation."""

from __future__ import annotations

import pytest
import torch

from kernelized import kernels
from kernelized.kernels.feature_ops import exp_features, trig_features
from kernelized.kernels.random_features import prf_exponents, rks_features
from tests.conftest import assert_close

H, M = 3, 7


def _u():
    return torch.randn(2, 5, H, M, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("smoothing", [None, 1.0])
def test_trig_features_equal_the_torch_ops_with_all_gradients(smoothing):
    u, weight = _u(), (torch.rand(H, M, dtype=torch.float64) + 0.1).requires_grad_()
    ref = rks_features(u, weight, smoothing)
    out = trig_features(u, weight.sqrt(), smoothing)
    assert_close("features", ref, out, ratio=1e-14)
    g = torch.randn_like(ref)
    for name, r, o in zip(("du", "dweight"), torch.autograd.grad(ref, (u, weight), g),
                          torch.autograd.grad(out, (u, weight), g)):  # fmt: skip
        assert_close(name, r, o, ratio=1e-13)
    assert torch.autograd.gradcheck(
        lambda u, a: trig_features(u, a, smoothing), (u, weight.detach().sqrt().requires_grad_())
    )


@pytest.mark.parametrize("hyperbolic", [False, True])
@pytest.mark.parametrize("stabiliser", ["none", "query", "key"])
def test_exp_features_equal_the_torch_ops_with_all_gradients(hyperbolic, stabiliser):
    u, weight = _u(), (torch.rand(H, M, dtype=torch.float64) + 0.1).requires_grad_()
    sq = (torch.rand(2, 5, H, 1, dtype=torch.float64) * 2).requires_grad_()
    shift = torch.tensor([0.0, 1.5, 3.0], dtype=torch.float64) if stabiliser == "key" else None
    a = prf_exponents(u, sq, weight, 0.7, hyperbolic)
    if stabiliser == "query":
        a = a - a.amax(-1, keepdim=True).detach()
    elif stabiliser == "key":
        a = a - shift[:, None]
    ref = torch.exp(a)
    log_amp = 0.5 * torch.log(weight) - (0.5 * torch.log(torch.tensor(2.0, dtype=torch.float64)) if hyperbolic else 0)
    out = exp_features(u, sq, log_amp, 0.7, hyperbolic, shift, query_max=stabiliser == "query")
    assert out.shape[-1] == (2 * M if hyperbolic else M)
    assert_close("features", ref, out, ratio=1e-14)
    g = torch.randn_like(ref)
    for name, r, o in zip(("du", "dsq", "dweight"), torch.autograd.grad(ref, (u, sq, weight), g),
                          torch.autograd.grad(out, (u, sq, weight), g)):  # fmt: skip
        assert_close(name, r, o, ratio=1e-13)


@pytest.mark.parametrize("name", ["gmm-rks", "gmm-prf", "fastfood-rks", "generative-prf", "performer"])
def test_query_key_is_query_and_key_with_one_spectrum(name, monkeypatch):
    fm = kernels.build(name, head_dim=8, num_heads=2).double()
    q, k = torch.randn(4, 2, 8, dtype=torch.float64), torch.randn(4, 2, 8, dtype=torch.float64)
    ref = (fm.query(q), fm.key(k))
    calls = []
    real = type(fm).frequencies
    monkeypatch.setattr(type(fm), "frequencies", lambda self, noise: calls.append(1) or real(self, noise))
    out = fm.query_key(q, k)
    assert len(calls) == 1  # queries, keys and the key stabiliser share one computation
    for r, o in zip(ref, out):
        assert torch.equal(r, o)


def test_evaluation_spectrum_is_computed_once_per_set_of_parameters(monkeypatch):
    torch.manual_seed(0)
    fm = kernels.build("gmm-rks", head_dim=8, num_heads=2).eval()
    x = torch.randn(4, 2, 8)
    calls = []
    real = type(fm).frequencies
    monkeypatch.setattr(type(fm), "frequencies", lambda self, noise: calls.append(1) or real(self, noise))
    with torch.no_grad():
        first = fm.query(x)
        assert torch.equal(first, fm.query(x)) and len(calls) == 1  # reused
    opt = torch.optim.SGD(fm.parameters(), lr=0.1)
    fm.query(x).sum().backward()  # with autograd: computed afresh (the graph reaches the parameters)
    assert len(calls) == 2
    opt.step()
    with torch.no_grad():
        after = fm.query(x)
    assert len(calls) == 3 and not torch.equal(first, after)  # a step changed the parameters: recomputed
    torch.manual_seed(0)
    fm.load_state_dict(kernels.build("gmm-rks", head_dim=8, num_heads=2).state_dict())
    with torch.no_grad():
        assert torch.equal(fm.query(x), first) and len(calls) == 4  # loaded parameters: recomputed, as before

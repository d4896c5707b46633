"""The fused random-feature functions (kernels/feature_ops.py) against their torch-op statements, and the
frequencies computed once per call (query_key) and once per set of parameters in evaluation."""

from __future__ import annotations

import pytest
import torch

from kernelized import kernels
from kernelized.kernels.feature_ops import exp_features, trig_features
from kernelized.kernels.random_features import head_matmul, prf_exponents, rks_features
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


def _prf_reference(fm, x, role):
    """PRF features in plain torch ops: ``exp(prf_exponents(...))`` with the stabiliser, as before the fusion."""
    noise = fm.current_noise()
    omega, weight = fm.frequencies(noise), fm.weights(noise)
    xs = x * fm.input_scale
    a = prf_exponents(head_matmul(xs, omega), (xs * xs).sum(-1, keepdim=True), weight, fm.norm_offset, fm.hyperbolic)
    if fm.stabilize and role == "query":
        a = a - a.amax(-1, keepdim=True).detach()
    elif fm.stabilize:
        a = a - fm.key_shift(noise)[:, None]
    return torch.exp(a)


@pytest.mark.parametrize("name,options", [("gmm-prf", {}), ("performer", {"orthogonal": False}),
                                          ("gmm-prf", {"hyperbolic": True}), ("fastfood-prf", {})])  # fmt: skip
@pytest.mark.parametrize("role", ["query", "key"])
def test_prf_features_from_one_matmul_equal_the_torch_ops_with_all_gradients(name, options, role):
    """The log-features ``w.x - c|x|^2 + log a`` out of one matmul of ``[x, |x|^2, 1]``, then exp in place, against
    the torch-op statement: values and the gradients of the input and of every learned parameter."""
    torch.manual_seed(0)
    fm = kernels.build(name, head_dim=6, num_heads=H, **options).double()
    with torch.no_grad():  # a wide draw, so the key stabiliser's shift is active for the gmm maps
        for p in fm.parameters():
            p.mul_(3.0)
    x = torch.randn(2, 5, H, 6, dtype=torch.float64, requires_grad=True)
    params = [p for p in fm.parameters() if p.requires_grad]
    ref, out = _prf_reference(fm, x, role), fm.features(x, role)
    assert_close("features", ref, out, ratio=1e-13)
    g = torch.randn_like(ref)
    for r, o in zip(torch.autograd.grad(ref, [x, *params], g), torch.autograd.grad(out, [x, *params], g)):
        assert_close("gradient", r, o, ratio=1e-12)


def test_exp_features_stabilise_in_place():
    a = torch.randn(4, H, 5, dtype=torch.float64)
    shift = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    assert torch.equal(exp_features(a.clone(), shift), torch.exp(a - shift[:, None]))
    assert torch.equal(exp_features(a.clone(), query_max=True), torch.exp(a - a.amax(-1, keepdim=True)))
    # with a fixed shift this is exp itself (the query max is detached on purpose: it cancels in attention)
    assert torch.autograd.gradcheck(lambda t: exp_features(t * 1.0, shift), (a.requires_grad_(),))


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

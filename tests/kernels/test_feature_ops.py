"""The fused random-feature functions (kernels/feature_ops.py, compiled and torch-op) against their torch-op
statements, and the frequencies computed once per call (query_key) and once per set of parameters in evaluation."""

from __future__ import annotations

import pytest
import torch

from kernelized import cpu, kernels
from kernelized.kernels import feature_ops
from kernelized.kernels.feature_ops import exp_features, prf_log_features, rks_statement, trig_features
from tests.conftest import assert_close

H, M = 3, 7


def _u():
    return torch.randn(2, 5, H, M, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("smoothing", [None, 1.0])
def test_trig_features_equal_the_torch_ops_with_all_gradients(smoothing):
    u, weight = _u(), (torch.rand(H, M, dtype=torch.float64) + 0.1).requires_grad_()
    ref = rks_statement(u, weight.sqrt(), smoothing)
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

    def log_amp_of(weight):  # a graph of its own for each side (each side's grad frees its own)
        return 0.5 * torch.log(weight) - (0.5 * torch.log(torch.tensor(2.0, dtype=torch.float64)) if hyperbolic else 0)

    a = prf_log_features(u, sq, log_amp_of(weight), 0.7, hyperbolic)
    if stabiliser == "query":
        a = a - a.amax(-1, keepdim=True).detach()
    elif stabiliser == "key":
        a = a - shift[:, None]
    ref = torch.exp(a)
    out = exp_features(u, sq, log_amp_of(weight), 0.7, hyperbolic, shift, query_max=stabiliser == "query")
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


# The compiled path (kernelized/cpu/random_features.cpp): projection and cos/sin or exp a tile of rows at a time.
needs_kernels = pytest.mark.skipif(cpu.disabled() or cpu.library() is None, reason="no compiled CPU kernels here")


def _inputs(dtype, strided: bool):
    """x [2, 150, H, 6] (over one tile of rows; a slice of wider rows if strided), w [H, M, 6], per-frequency a."""
    wide = torch.randn(2, 150, H, 10 if strided else 6, dtype=dtype)
    x = wide[..., :6].requires_grad_() if not strided else wide[..., 2:8].detach().requires_grad_()
    if strided:
        assert x.stride(-2) == 10  # rows the kernel reads in place
    w = (torch.randn(H, M, 6, dtype=dtype) * 0.7).requires_grad_()
    return x, w, (torch.rand(H, M, dtype=dtype) + 0.1).requires_grad_()


def _compare(fn, ref_fn, inputs, ratio):
    out, ref = fn(*inputs), ref_fn(*inputs)
    assert_close("features", ref, out, ratio=ratio)
    g = torch.randn_like(ref)
    leaves = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    for i, (r, o) in enumerate(zip(torch.autograd.grad(ref, leaves, g), torch.autograd.grad(out, leaves, g))):
        assert_close(f"gradient {i}", r, o, ratio=ratio)


@needs_kernels
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("smoothing", [None, 0.5])
def test_compiled_rks_equals_its_torch_statement_in_float64(smoothing, strided, threads):
    x, w, amp = _inputs(torch.float64, strided)
    assert feature_ops.compiled(x, w)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _compare(feature_ops.rks, feature_ops.reference_rks, (x, w, amp, smoothing), 1e-13)
    finally:
        torch.set_num_threads(before)


@needs_kernels
@pytest.mark.parametrize("hyperbolic", [False, True])
@pytest.mark.parametrize("stabiliser", ["none", "query", "key"])
def test_compiled_prf_equals_its_torch_statement_in_float64(hyperbolic, stabiliser):
    x, w, amp = _inputs(torch.float64, strided=True)
    log_amp = amp.log()
    shift = [0.0, 1.5, -2.0] if stabiliser == "key" else None
    args = (x, w, log_amp, 0.3, hyperbolic, shift, stabiliser == "query")
    _compare(lambda *a: feature_ops.prf(*a[:5], None if shift is None else torch.tensor(shift), a[6]),
             feature_ops.reference_prf, args, 1e-13)  # fmt: skip


@needs_kernels
@pytest.mark.parametrize(("d", "M"), [(6, 7), (32, 64), (33, 20)])
def test_compiled_float32_features_and_gradients_equal_float64(d, M):
    """float32's projection and its two gradient products: RKS and PRF features and the gradients of x, w and the
    amplitudes against the float64 torch statement, over several tiles of rows (300 rows a head)."""
    gen = torch.Generator().manual_seed(d + M)
    x = torch.randn(2, 150, H, d, generator=gen) / d**0.5
    w = torch.randn(H, M, d, generator=gen) * 0.7
    amp = torch.rand(H, M, generator=gen) + 0.1
    cases = {
        "rks": (feature_ops.rks, feature_ops.reference_rks, (x, w, amp), (0.5,)),
        "prf": (feature_ops.prf, feature_ops.reference_prf, (x, w, amp.log()), (0.3, True, None, True)),
    }
    for name, (fn, ref_fn, tensors, rest) in cases.items():
        leaves = [t.clone().requires_grad_() for t in tensors]
        leaves64 = [t.double().requires_grad_() for t in tensors]
        out, ref = fn(*leaves, *rest), ref_fn(*leaves64, *rest)
        assert_close(f"{name} features", ref, out.double(), ratio=1e-6)
        g = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
        grads = zip(torch.autograd.grad(ref, leaves64, g), torch.autograd.grad(out, leaves, g.float()))
        for i, (r, o) in enumerate(grads):
            assert_close(f"{name} gradient {i}", r, o.double(), ratio=1e-5)


@needs_kernels
def test_compiled_features_have_gradients_of_gradients():  # double backward goes through the torch statement
    x, w, amp = (t.detach()[:1, :5].requires_grad_() if t.dim() == 4 else t for t in _inputs(torch.float64, False))
    assert torch.autograd.gradgradcheck(lambda x, w, a: feature_ops.rks(x, w, a, None), (x, w, amp))
    assert torch.autograd.gradgradcheck(lambda x, w, a: feature_ops.prf(x, w, a, 0.3, True), (x, w, amp.log()))
    # constant amplitudes (a map's fixed weights): the statement is differentiated for x and w alone
    const = amp.detach()
    assert torch.autograd.gradgradcheck(lambda x, w: feature_ops.rks(x, w, const, None), (x, w))
    assert torch.autograd.gradgradcheck(lambda x, w: feature_ops.prf(x, w, const.log(), 0.3, True), (x, w))


@needs_kernels
@pytest.mark.parametrize("scale", [1.0, 300.0])  # |u| up to ~1e4: the range reduction of the vectorised sin/cos
def test_compiled_float32_features_are_as_accurate_as_the_torch_path(scale):
    """float32 uses vmath.h's vectorised cos/sin/exp: its error against float64 is at most that of the torch ops in
    float32 (whose own error is mostly u's rounding) plus 1e-6."""
    x, w, amp = (t.detach() for t in _inputs(torch.float32, False))
    x = x * scale
    cases = {
        "rks": (feature_ops.rks, (x, w, amp, 1.0)),
        "prf": (lambda *a: feature_ops.prf(*a), (x / scale, w, amp.log(), 0.3, True, None, True)),
    }
    for name, (fn, args) in cases.items():
        exact = fn(*(a.double() if isinstance(a, torch.Tensor) else a for a in args))
        with cpu.pytorch_path():
            torch_error = (fn(*args).double() - exact).abs().max()
        error = (fn(*args).double() - exact).abs().max()
        assert error <= 2 * torch_error + 1e-6, (name, error, torch_error)


@needs_kernels
def test_compiled_prf_limits_of_the_exponential():
    """exp below -87 is 0 (torch gives subnormals to -103: at most 1.2e-38 apart), above 88.7 inf, NaN stays NaN."""
    x, w = torch.zeros(1, 1, H, 6), torch.zeros(H, M, 6)
    log_amp = torch.tensor([-200.0, -90.0, -87.5, -10.0, 0.0, 50.0, 88.0])[None].repeat(H, 1)
    out = feature_ops.prf(x, w, log_amp, 0.3, False)[0, 0, 0]
    assert (out[:3] == 0).all()
    assert_close("exp", torch.exp(log_amp[0, 3:]), out[3:], ratio=2e-7)
    assert torch.isinf(feature_ops.prf(x, w, log_amp + 1, 0.3, False)[0, 0, 0, -1])
    assert torch.isnan(feature_ops.prf(x.fill_(float("nan")), w, log_amp, 0.3, False)).all()

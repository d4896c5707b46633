"""Compiled CPU kernels (kernelized.cpu): the same results as the PyTorch paths (chunked linear attention, monomial
features), worker groups, and a clean fallback."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from kernelized import cpu, ops
from tests.conftest import assert_close

needs_kernels = pytest.mark.skipif(cpu.disabled() or cpu.library() is None, reason="no compiled CPU kernels here")


def _case(B=2, T=150, H=3, F=24, Dv=16, dtype=torch.float32):
    """Positive features, an initial state, and a loss reaching o, S and z; T not a multiple of the chunk."""
    q = torch.nn.functional.elu(torch.randn(B, T, H, F, dtype=dtype)) + 1
    k = torch.nn.functional.elu(torch.randn(B, T, H, F, dtype=dtype)) + 1
    v = torch.randn(B, T, H, Dv, dtype=dtype)
    S0, z0 = torch.randn(B, H, F, Dv, dtype=dtype), torch.rand(B, H, F, dtype=dtype) + 1
    return [x.requires_grad_() for x in (q, k, v, S0, z0)]


def _forward(leaves, normalize, chunk_size=64, causal=True, key_padding_mask=None):
    q, k, v, S0, z0 = leaves
    o, (S, z) = ops.linear_attention(
        q, k, v, mode="chunk", chunk_size=chunk_size, normalize=normalize, initial_state=(S0, z0),
        output_final_state=True, causal=causal, key_padding_mask=key_padding_mask,
    )  # fmt: skip
    loss = (o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() + S.sin().sum() + z.cos().sum()
    return (o, S, z), loss


def _set_path(monkeypatch, path: str) -> None:
    if path == "pytorch":
        monkeypatch.setenv("KERNELIZED_DISABLE_CPU_KERNELS", "1")
    else:
        monkeypatch.delenv("KERNELIZED_DISABLE_CPU_KERNELS", raising=False)


def _results(leaves, normalize, monkeypatch, path, **options):
    _set_path(monkeypatch, path)
    outs, loss = _forward(leaves, normalize, **options)
    _set_path(monkeypatch, "pytorch" if path == "compiled" else "compiled")  # backward follows its forward's path
    return (*[x.detach() for x in outs], *torch.autograd.grad(loss, leaves))


NAMES = ["o", "S", "z", "dq", "dk", "dv", "dS0", "dz0"]


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_path_matches_pytorch_path(dtype, normalize, threads, monkeypatch):
    """Outputs, final state and all five gradients, float32 and float64, one and two worker threads, against the
    float64 PyTorch path; the backward takes its forward's path even when the switch changes in between."""
    leaves = _case(dtype=dtype)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:  # float32: both paths are within 1e-5 of float64 on most tensors, 4e-5 on dz0
        ref = _results([x.detach().double().requires_grad_() for x in leaves], normalize, monkeypatch, "pytorch")
        tol = 1e-4 if dtype == torch.float32 else 1e-12
        for path in ("pytorch", "compiled"):
            got = _results(leaves, normalize, monkeypatch, path)
            for name, r, g in zip(NAMES, ref, got):
                assert_close(f"{path}/{name}", r, g, ratio=tol)
    finally:
        torch.set_num_threads(before)


def _padding(B: int, T: int) -> torch.Tensor:
    """Row 0 padded at its end, row 1 at its start and in the middle (True = padding)."""
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[0, -T // 3 :] = True
    mask[1, :5], mask[1, T // 2 : T // 2 + 3] = True, True
    return mask


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_bidirectional_compiled_path_matches_pytorch_path(dtype, normalize, padded, threads, monkeypatch, nan_poison):
    """The non-causal kernel (bidirectional.cpp) against the float64 PyTorch reference: outputs, state and all
    five gradients, with fused key padding, into NaN-poisoned buffers (every element must be written)."""
    leaves = _case(dtype=dtype)
    mask = _padding(2, 150) if padded else None
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ref = _results([x.detach().double().requires_grad_() for x in leaves], normalize, monkeypatch, "pytorch",
                       causal=False, key_padding_mask=mask)  # fmt: skip
        tol = 1e-4 if dtype == torch.float32 else 1e-12  # float32: 3e-5 on dz0 (150 cancelling terms), else ~1e-7
        got = _results(leaves, normalize, monkeypatch, "compiled", causal=False, key_padding_mask=mask)
        for name, r, g in zip(NAMES, ref, got):
            assert_close(name, r, g, ratio=tol)
    finally:
        torch.set_num_threads(before)


def _avx512() -> bool:
    with open("/proc/cpuinfo") as f:
        return any(line.startswith("flags") and " avx512f" in line for line in f)


@needs_kernels
def test_bidirectional_tiles_are_built_where_the_cpu_has_avx512():
    """The float32 register tiles (tiles.h) exist exactly where -march=native targets AVX-512."""
    assert cpu.library().tiles == _avx512()


@needs_kernels
@pytest.mark.parametrize("tiles", [True, False])
@pytest.mark.parametrize(("T", "F", "Dv"), [(1, 3, 1), (9, 15, 16), (70, 17, 17), (130, 33, 32), (64, 64, 33),
                                            (75, 100, 48), (20, 513, 5)])  # fmt: skip
def test_bidirectional_float32_products_at_odd_shapes(T, F, Dv, tiles, monkeypatch, nan_poison):
    """float32 (tiles.h's register tiles, or BLAS) against float64 at shapes that end every tile early: features not
    a multiple of 16 or 32, Dv + 1 over 32 and split into column groups, rows not a multiple of 8 or 64, with
    padding, an initial state and normalisation; every element of every output written (NaN-poisoned buffers)."""
    from kernelized.ops.linear import bidirectional

    monkeypatch.setattr(bidirectional, "TILES", tiles)
    leaves = _case(B=2, T=T, H=2, F=F, Dv=Dv)
    mask = torch.zeros(2, T, dtype=torch.bool)
    mask[1, T // 2 :] = T > 1
    ref = _results([x.detach().double().requires_grad_() for x in leaves], True, monkeypatch, "compiled",
                   causal=False, key_padding_mask=mask)  # fmt: skip
    got = _results(leaves, True, monkeypatch, "compiled", causal=False, key_padding_mask=mask)
    for name, r, g in zip(NAMES, ref, got):
        assert_close(name, r, g, ratio=1e-4)


@needs_kernels
@pytest.mark.skipif(not _avx512(), reason="no AVX-512: float32 takes BLAS either way")
def test_bidirectional_tiles_switch_changes_the_path(monkeypatch):
    """TILES selects the path: the two sum in different orders, so their float32 results differ in the last bits
    while both stay within round-off of each other."""
    from kernelized.ops.linear import bidirectional

    q, k = torch.rand(2, 200, 2, 100), torch.rand(2, 200, 2, 100)
    v = torch.randn(2, 200, 2, 24)
    outs = {}
    for tiles in (True, False):
        monkeypatch.setattr(bidirectional, "TILES", tiles)
        outs[tiles] = ops.linear_attention(q, k, v, causal=False, mode="chunk")[0]
    assert not torch.equal(outs[True], outs[False])
    assert_close("o", outs[False].double(), outs[True].double(), ratio=1e-5)


@needs_kernels
def test_bidirectional_compiled_path_is_taken_and_matches_the_parallel_form(monkeypatch):
    """Strided features (the feature axis not unit-stride), padding and a gradient of ``o.sum()``: the kernel
    (the reference is made to fail) against the quadratic parallel form in float64."""
    from kernelized.ops.linear import bidirectional

    B, T, H, F, Dv = 2, 90, 2, 12, 5
    qt = (torch.rand(B, T, F, H) + 0.1).requires_grad_()
    k = (torch.rand(B, T, H, F) + 0.1).requires_grad_()
    v = torch.randn(B, T, H, Dv, requires_grad=True)
    mask = _padding(B, T)
    monkeypatch.setattr(bidirectional, "reference", lambda *a: pytest.fail("the PyTorch reference ran"))
    o = ops.linear_attention(qt.transpose(2, 3), k, v, causal=False, key_padding_mask=mask)[0]
    grads = torch.autograd.grad(o.sum(), (qt, k, v))
    leaves64 = [x.detach().double().requires_grad_() for x in (qt, k, v)]
    o64 = ops.linear_attention(
        leaves64[0].transpose(2, 3), *leaves64[1:], causal=False, mode="parallel", key_padding_mask=mask
    )[0]
    assert_close("o", o64, o, ratio=1e-5)
    for name, r, g in zip(["dq", "dk", "dv"], torch.autograd.grad(o64.sum(), leaves64), grads):
        assert_close(name, r, g, ratio=1e-5)
    assert grads[1][mask].abs().max() == 0 and grads[2][mask].abs().max() == 0  # padded keys get no gradient


@needs_kernels
def test_compiled_path_takes_strided_inputs_and_expanded_gradients():
    """Inputs whose feature axis is not unit-stride, and a gradient of ``o.sum()`` (all strides zero)."""
    B, T, H, F, Dv = 2, 70, 2, 8, 5
    qt = (torch.rand(B, T, F, H) + 0.1).requires_grad_()  # q = qt.transpose: feature stride H, not 1
    k = (torch.rand(B, T, H, F) + 0.1).requires_grad_()
    v = torch.randn(B, T, H, Dv, requires_grad=True)
    q = qt.transpose(2, 3)
    ref = ops.linear_attention(q.double(), k.double(), v.double(), mode="parallel")[0]
    o = ops.linear_attention(q, k, v, mode="chunk", chunk_size=16)[0]
    assert_close("o", ref, o, ratio=1e-5)
    grads = torch.autograd.grad(o.sum(), (qt, k, v))
    leaves64 = [x.detach().double().requires_grad_() for x in (qt, k, v)]
    o64 = ops.linear_attention(leaves64[0].transpose(2, 3), *leaves64[1:], mode="parallel")[0]
    for name, r, g in zip(["dq", "dk", "dv"], torch.autograd.grad(o64.sum(), leaves64), grads):
        assert_close(name, r, g, ratio=1e-5)


@needs_kernels
def test_long_sequence_matches_float64_reference():
    """A realistic feature width (ReBased's 136) over 16 chunks: float32 kernel vs float64 parallel form."""
    leaves = _case(B=1, T=1024, H=2, F=136, Dv=64)
    (o, S, z), loss = _forward(leaves, normalize=True)
    grads = torch.autograd.grad(loss, leaves)
    leaves64 = [x.detach().double().requires_grad_() for x in leaves]
    q, k, v, S0, z0 = leaves64
    o64, (S64, z64) = ops.linear_attention(q, k, v, mode="parallel", initial_state=(S0, z0), output_final_state=True)
    loss64 = (o64 * torch.linspace(-1, 1, o64.numel(), dtype=o64.dtype).view_as(o64)).sum()
    loss64 = loss64 + S64.sin().sum() + z64.cos().sum()
    # both paths: 1e-7..1e-5, except about 1e-4 on dz0 (the normaliser's gradient sums 1024 cancelling terms);
    # summing z token by token into the running state instead of per chunk gave 6e-4 there
    for name, r, g in zip(NAMES, (o64, S64, z64, *torch.autograd.grad(loss64, leaves64)), (o, S, z, *grads)):
        assert_close(name, r, g, ratio=2e-4 if name == "dz0" else 3e-5)


def test_no_compiler_falls_back_to_pytorch(monkeypatch, tmp_path):
    """Without a compiler: one warning, ``library()`` is None and the chunk form still gives the right answer."""
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("KERNELIZED_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KERNELIZED_DISABLE_CPU_KERNELS", raising=False)
    cpu.library.cache_clear()
    try:
        with pytest.warns(UserWarning, match="compiled CPU kernels unavailable"):
            assert cpu.library() is None
        leaves = _case(dtype=torch.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the warning came once, at the first call
            assert not cpu.usable(*leaves[:3])
            (o, _, _), _ = _forward(leaves, normalize=True)
        q, k, v, S0, z0 = leaves
        ref = ops.linear_attention(q, k, v, mode="parallel", initial_state=(S0, z0))[0]
        assert_close("o", ref, o, ratio=1e-12)
    finally:
        cpu.library.cache_clear()


@needs_kernels
def test_build_is_cached_by_source_and_reused(monkeypatch, tmp_path):
    """A second build with the same source, flags and CPU reuses the library; a changed source builds anew."""
    compiler = os.environ.get("CXX") or "g++"
    monkeypatch.setenv("KERNELIZED_CACHE", str(tmp_path))
    first = cpu._build(compiler)
    stamp = first.stat().st_mtime_ns
    assert cpu._build(compiler) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "cpu").iterdir()] == [first.name]  # no temporary files left behind
    monkeypatch.setattr(cpu, "FLAGS", (*cpu.FLAGS, "-DKERNELIZED_TEST"))
    assert cpu._build(compiler) != first


@needs_kernels
def test_without_openmp_the_same_sources_build_serial(monkeypatch, tmp_path):
    """A compiler that refuses the OpenMP flags still builds the library, with its parallel loops serial."""
    compiler = os.environ.get("CXX") or "g++"
    monkeypatch.setenv("KERNELIZED_CACHE", str(tmp_path))
    parallel = cpu._build(compiler)
    monkeypatch.setattr(cpu, "FLAGS", (*cpu.FLAGS, "-fno-such-option"))  # this build fails: SERIAL_FLAGS instead
    serial = cpu._build(compiler)
    assert serial != parallel and serial.exists()
    assert "-fopenmp" not in cpu.SERIAL_FLAGS


@needs_kernels
def test_the_kernels_share_torchs_openmp_runtime():
    """The library's parallel loops run on the libgomp torch loaded: one OpenMP runtime in the process."""
    cpu.library()
    with open("/proc/self/maps") as f:
        runtimes = {line.split()[-1] for line in f if "libgomp" in line}
    assert len(runtimes) == 1, runtimes


@pytest.mark.parametrize("n_items", [1, 3, 8, 13, 100, 2048])
def test_worker_groups_cover_every_item_once(n_items):
    """(batch, head) pairs go to worker threads in contiguous groups: each exactly once, thread count restored."""
    from kernelized.cpu import run_parallel as _parallel

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen, calls = [], []
    try:
        _parallel(lambda items: (seen.extend(items), calls.append(len(items))), n_items)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert sorted(seen) == list(range(n_items))
    if n_items >= 16:  # many short sequences: a few groups per worker, not one call (and thread setup) per item
        assert len(calls) <= 16
    elif n_items > 1:  # few items (heads of one long sequence): one each, so a slowed thread takes fewer
        assert calls == [1] * n_items


@needs_kernels
@pytest.mark.parametrize("d", [1, 5, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_monomial_features_match_the_torch_reference(d, dtype):
    """Degree-2 features (ReBased, Based): values, order and gradients equal the slice-built reference, also for
    an input that is not contiguous."""
    from kernelized.kernels.polynomial import (
        _sliced_monomial_features,
        monomial_features,
        taylor_features,
        taylor_reference,
    )

    x = torch.randn(3, 7, d, 2, dtype=dtype).transpose(-1, -2).requires_grad_()  # [3, 7, 2, d], strided
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    pairs = {  # the scale folded into the coefficients; Based's [1, c1 x, c2 phi_2(x)] written into one buffer
        "monomials": (monomial_features(x, 2), _sliced_monomial_features(x, 2)),
        "scaled": (monomial_features(x, 2, 0.3), _sliced_monomial_features(x, 2) * 0.3),
        "taylor": (taylor_features(x, 0.7, 0.2), taylor_reference(x, 0.7, 0.2)),
    }
    assert pairs["taylor"][0].shape[-1] == 1 + d + d * (d + 1) // 2
    for name, (out, ref) in pairs.items():
        torch.testing.assert_close(out, ref, rtol=tol, atol=tol, msg=name)
        g = torch.randn_like(ref)
        (dx,), (dref,) = torch.autograd.grad(out, x, g), torch.autograd.grad(ref, x, g)
        torch.testing.assert_close(dx, dref, rtol=10 * tol, atol=10 * tol, msg=name)


@needs_kernels
def test_compiled_monomial_features_gradcheck_and_double_backward():
    from kernelized.kernels.polynomial import monomial_features, taylor_features

    x = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    for fn in (lambda t: monomial_features(t, 2, 0.5), lambda t: taylor_features(t, 0.7, 0.2)):
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(fn, (x,))  # via the reference


@needs_kernels
@pytest.mark.parametrize("terms", [{2: 1.0}, {0: 1.0, 1: 1.0, 2: 0.5}, {3: 1.0}], ids=["rebased", "based", "cubic"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("padded", [False, True])
def test_compiled_polynomial_attention_matches_the_torch_reference(terms, causal, normalize, padded, nan_poison):
    """polynomial.cpp (query blocks of 64, causal blocks stopping at their last key, backward recomputing the
    scores) against ops/polynomial.reference in float64: outputs and gradients to round-off, T = 150 (not a
    multiple of the block), key padding at the end of one row and the start of the other, NaN-poisoned buffers."""
    from kernelized.ops import polynomial

    B, T, H, d, Dv = 2, 150, 3, 6, 5
    q, k = (torch.randn(B, T, H, d, dtype=torch.float64, requires_grad=True) for _ in range(2))
    v = torch.randn(B, T, H, Dv, dtype=torch.float64, requires_grad=True)
    mask = _padding(B, T) if padded else None
    g = torch.randn(B, T, H, Dv, dtype=torch.float64)
    out = ops.polynomial_attention(q, k, v, terms=terms, causal=causal, normalize=normalize, key_padding_mask=mask)
    ref = polynomial.reference(q, k, v, terms, d**-0.5, causal, normalize, 1e-6, mask)
    assert_close("o", ref, out, ratio=1e-12)
    for name, r, o in zip(
        ("dq", "dk", "dv"), torch.autograd.grad(ref, (q, k, v), g), torch.autograd.grad(out, (q, k, v), g)
    ):
        assert_close(name, r, o, ratio=1e-12)


@needs_kernels
def test_compiled_polynomial_attention_runs_and_double_backward_goes_through_the_reference(monkeypatch):
    from kernelized.ops import polynomial

    calls = []
    real = polynomial._compiled_forward
    monkeypatch.setattr(polynomial, "_compiled_forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    q, k, v = (torch.randn(1, 20, 2, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradgradcheck(lambda q, k, v: ops.polynomial_attention(q, k, v, degree=2), (q, k, v))
    assert calls  # the kernel ran; the second derivative came from the reference

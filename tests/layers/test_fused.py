"""The fused bidirectional path (kernelized.layers.fused): random features and the bidirectional op with one
backward give the two-node path's outputs and every gradient (inputs and the feature maps' parameters), float64
and float32, over several 128-row tiles, with padding, normalised or not; the layer takes it exactly where it
applies."""

from __future__ import annotations

import pytest
import torch

from kernelized import cpu, layers
from kernelized.layers import fused
from tests.conftest import assert_close

needs_kernels = pytest.mark.skipif(cpu.disabled() or cpu.library() is None, reason="no compiled CPU kernels here")

# RKS with the smoothing column, learned GMM spectra (RKS and hyperbolic PRF, both stabilisers), Performer's PRF,
# FastFood's structured frequencies
KERNELS = [
    ("gmm-rks", {"num_features": 12, "num_components": 2}),
    ("gmm-prf", {"num_features": 12, "num_components": 2, "hyperbolic": True}),
    ("performer", {"num_features": 10}),
    ("fastfood-rks", {}),
    ("rff", {"num_features": 9}),
]


def _layer(kernel, options, dtype, normalize=True):
    torch.manual_seed(0)
    layer = layers.KernelAttention(32, 2, 16, kernel=kernel, kernel_options=options, causal=False, mode="chunk",
                                   normalize=normalize)  # fmt: skip
    return layer.to(dtype)


def _run(layer, x, mask, enabled: bool, monkeypatch):
    """Output and the gradients of x and of every parameter, with the fused path on or off."""
    monkeypatch.setattr(fused, "ENABLED", enabled)
    layer.zero_grad()
    x = x.detach().requires_grad_()
    torch.manual_seed(1)  # the same training draw of frequencies for both paths
    y = layer(x, key_padding_mask=mask)
    (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
    params = [(n, p.grad.clone()) for n, p in layer.named_parameters() if p.grad is not None]
    return [("y", y.detach()), ("x", x.grad), *params]


@needs_kernels
@pytest.mark.parametrize(("kernel", "options"), KERNELS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("normalize", [True, False])
def test_fused_path_equals_the_two_node_path(kernel, options, dtype, normalize, monkeypatch, nan_poison):
    """T = 300 (three tiles of 128 rows, the last short), one sequence padded at its end; every gradient buffer
    NaN-poisoned, so each must be written."""
    layer = _layer(kernel, options, dtype, normalize)
    x = torch.randn(2, 300, 32, dtype=dtype)
    mask = torch.zeros(2, 300, dtype=torch.bool)
    mask[1, 230:] = True
    ref, got = _run(layer, x, mask, False, monkeypatch), _run(layer, x, mask, True, monkeypatch)
    assert [n for n, _ in ref] == [n for n, _ in got]
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for (name, r), (_, g) in zip(ref, got):
        assert_close(name, r, g, ratio=tol)


def _spy(monkeypatch):
    calls = []
    real = fused.features_bidirectional_attention
    monkeypatch.setattr(fused, "features_bidirectional_attention", lambda *a: calls.append(1) or real(*a))
    return calls


@needs_kernels
def test_the_layer_takes_the_fused_path_only_where_it_applies(monkeypatch):
    """Bidirectional chunk calls without a state take it; causal, the parallel form, a state out, float16 inputs,
    a map without random features, and ENABLED False do not."""
    calls = _spy(monkeypatch)
    layer = _layer("gmm-rks", {"num_features": 8}, torch.float32)
    x = torch.randn(2, 40, 32)
    layer(x)
    assert len(calls) == 1
    layer(x, mode="parallel")
    layer(x, output_state=True)
    monkeypatch.setattr(fused, "ENABLED", False)
    layer(x)
    monkeypatch.setattr(fused, "ENABLED", True)
    causal = layers.KernelAttention(32, 2, 16, kernel="gmm-rks", causal=True, mode="chunk")
    causal(x)
    layers.KernelAttention(32, 2, 16, kernel="elu", causal=False, mode="chunk")(x)
    assert len(calls) == 1


@needs_kernels
def test_fused_path_refuses_double_backward(monkeypatch):
    """Its backward is one compiled call: gradients of gradients raise rather than come out wrong (the two-node
    path, ENABLED False, differentiates the torch statements instead)."""
    layer = _layer("gmm-rks", {"num_features": 8}, torch.float64)
    x = torch.randn(1, 20, 32, dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad(layer(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        gx.sum().backward()
    monkeypatch.setattr(fused, "ENABLED", False)
    (gx,) = torch.autograd.grad(layer(x).sum(), x, create_graph=True)
    gx.sum().backward()


@needs_kernels
def test_fused_path_checks_the_padding_mask():
    """A mask of the wrong shape or dtype gets the op's error, naming the argument, on the fused path too."""
    layer = _layer("gmm-rks", {"num_features": 8}, torch.float32)
    x = torch.randn(2, 40, 32)
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \[B, T\] = \[2, 40\], got \[2, 39\]"):
        layer(x, key_padding_mask=torch.zeros(2, 39, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_padding_mask must be a bool tensor"):
        layer(x, key_padding_mask=torch.zeros(2, 40))


@pytest.mark.parametrize("kernels_on", [True, False])
def test_one_spectrum_per_forward_on_either_path(kernels_on, monkeypatch):
    """The layer decides on the fused path before any frequencies are computed, so a forward computes them once
    whichever path it takes (twice would also move a generator's BatchNorm statistics twice)."""
    if kernels_on and (cpu.disabled() or cpu.library() is None):
        pytest.skip("no compiled CPU kernels here")
    if not kernels_on:
        monkeypatch.setenv("KERNELIZED_DISABLE_CPU_KERNELS", "1")
    layer = _layer("generative-rks", {"num_features": 8}, torch.float32)
    calls = []
    real = layer.feature_map.spectrum
    monkeypatch.setattr(layer.feature_map, "spectrum", lambda noise: calls.append(1) or real(noise))
    fused_calls = _spy(monkeypatch)
    layer(torch.randn(2, 40, 32))
    assert len(calls) == 1 and len(fused_calls) == int(kernels_on)

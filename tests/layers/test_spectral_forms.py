"""Spectral random-feature kernels through KernelAttention: parallel, chunk and recurrent forms agree in outputs,
final states and every parameter's gradient for a fixed draw, causal and bidirectional; a draw never changes
inside a sequence; evaluation is deterministic."""

from __future__ import annotations

import pytest
import torch

from kernelized import layers
from tests.conftest import assert_close

# feature_dim 5 is not a power of two: FastFood pads it to 8
KERNELS = [
    ("performer", {"num_features": 8}),
    ("rff", {"num_features": 8}),
    ("gmm-rks", {"num_features": 8, "num_components": 2}),
    ("gmm-prf", {"num_features": 8, "num_components": 2, "hyperbolic": True}),
    ("gmm-prf", {"num_features": 8, "covariance": "full"}),
    ("fastfood-rks", {"init": "rbf"}),
    ("fastfood-prf", {"num_features": 16}),
    ("generative-rks", {"num_features": 8}),
    ("generative-prf", {"num_features": 8}),
]
MODES = ("parallel", "chunk", "recurrent")


pytestmark = pytest.mark.usefixtures("one_thread")


def _layer(kernel, options, causal, redraw="fixed"):
    layer = layers.KernelAttention(
        24, num_heads=3, feature_dim=5, kernel=kernel, causal=causal, chunk_size=8,
        kernel_options={**options, "redraw": redraw},
    ).double()  # fmt: skip
    with torch.no_grad():  # generic values for the learned spectra
        for name, p in layer.feature_map.named_parameters():
            if name in ("mean", "logits"):
                p.add_(0.2 * torch.randn_like(p))
    return layer


def _x(T=29):
    # small inputs keep RKS normalisers (estimates of K + s^2, which can be negative) well away from zero
    return 0.5 * torch.randn(2, T, 24, dtype=torch.float64)


@pytest.mark.parametrize("kernel,options", KERNELS, ids=lambda x: str(x))
@pytest.mark.parametrize("causal", [True, False])
def test_forms_agree_in_outputs_states_and_gradients(kernel, options, causal):
    layer = _layer(kernel, options, causal)
    layer.train()  # the training draw, with gradients through the reparameterised frequencies
    x = _x()
    results = {}
    for mode in MODES:
        layer.zero_grad()
        y, (S, z) = layer(x, mode=mode, output_state=True)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
        results[mode] = (y.detach(), S.detach(), z.detach(), {n: p.grad.clone() for n, p in layer.named_parameters()})
    y_ref, S_ref, z_ref, g_ref = results["parallel"]
    assert any(n.startswith("feature_map.") for n in g_ref) == (kernel not in ("performer", "rff"))
    for mode in ("chunk", "recurrent"):
        y, S, z, g = results[mode]
        assert_close(f"{mode} y", y_ref, y, ratio=1e-10)
        assert_close(f"{mode} S", S_ref, S, ratio=1e-10)
        assert_close(f"{mode} z", z_ref, z, ratio=1e-10)
        for n in g_ref:
            assert g_ref[n].abs().sum() > 0, f"no gradient reaches {n}"
            assert_close(f"{mode} d{n}", g_ref[n], g[n], ratio=1e-9)


@pytest.mark.parametrize("kernel,options", KERNELS, ids=lambda x: str(x))
def test_a_draw_never_changes_inside_a_sequence(kernel, options):
    """redraw='step' in training: the first chunk draws, the continuing chunks must keep that draw."""
    layer = _layer(kernel, options, causal=True, redraw="step")
    layer.train()
    x = _x(30)
    y1, state = layer(x[:, :11], output_state=True)
    y2, state = layer(x[:, 11:20], state=state, output_state=True, mode="recurrent")
    y3 = layer(x[:, 20:], state=state, mode="parallel")
    layer.feature_map.redraw = "fixed"  # the whole sequence again, with the same draw
    y = layer(x, mode="parallel")
    assert_close("resume", y, torch.cat([y1, y2, y3], 1), ratio=1e-10)
    layer.feature_map.redraw = "step"
    assert not torch.allclose(layer(x, mode="parallel"), y), "a new sequence in training draws anew"


@pytest.mark.parametrize("kernel,options", KERNELS[::2], ids=lambda x: str(x))
def test_layer_evaluation_is_deterministic(kernel, options):
    layer = _layer(kernel, options, causal=True, redraw="step")
    x = _x(12)
    layer.eval()
    y = layer(x)
    layer.train()
    layer(x)  # a training step redraws (and, for generators, moves BatchNorm statistics)
    layer.eval()
    y2 = layer(x)
    assert torch.equal(layer(x), y2)
    if not kernel.startswith("generative"):
        assert torch.equal(y, y2)

"""KernelAttention, SoftmaxAttention, BaseConv: forms agree (outputs, every parameter's gradient), resume, padding."""

from __future__ import annotations

import pytest
import torch

from kernelized import layers
from tests.conftest import assert_close, prefill_then_decode

KERNELS = [
    ("elu", {}),
    ("relu", {}),
    ("taylor", {}),
    ("rebased", {}),
    ("rebased", {"norm_scope": "all"}),
    ("polynomial", {"degree": 3}),
]


def _layer(kernel, options, causal, mode="chunk"):
    layer = layers.KernelAttention(
        24, num_heads=3, feature_dim=5, kernel=kernel, causal=causal, mode=mode, kernel_options=options, chunk_size=8
    ).double()
    with torch.no_grad():  # move gamma / beta off their initial values so their gradients are generic
        for p in layer.feature_map.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return layer


@pytest.mark.parametrize("kernel,options", KERNELS, ids=lambda x: str(x))
@pytest.mark.parametrize("causal", [True, False])
def test_modes_agree_in_outputs_and_parameter_gradients(kernel, options, causal):
    layer = _layer(kernel, options, causal)
    x = torch.randn(2, 29, 24, dtype=torch.float64)
    results = {}
    for mode in ("parallel", "chunk", "recurrent"):
        layer.zero_grad()
        y = layer(x, mode=mode)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
        results[mode] = (y.detach(), {n: p.grad.clone() for n, p in layer.named_parameters()})
    y_ref, g_ref = results["parallel"]  # for polynomial kernels: the implicit form, never the features
    assert any("gamma" in n for n in g_ref) == (kernel in ("rebased", "polynomial"))
    for mode in ("chunk", "recurrent"):
        y, g = results[mode]
        assert_close(f"{mode} y", y_ref, y, ratio=1e-10)
        for n in g_ref:
            assert g_ref[n].abs().sum() > 0, f"no gradient reaches {n}"
            assert_close(f"{mode} d{n}", g_ref[n], g[n], ratio=1e-9)


@pytest.mark.parametrize("kernel", ["rebased", "taylor", "elu"])
def test_layer_split_and_resume(kernel):
    layer = _layer(kernel, {}, causal=True)
    x = torch.randn(2, 30, 24, dtype=torch.float64)
    y = layer(x, mode="parallel")
    y1, state = layer(x[:, :11], output_state=True)
    y2, state = layer(x[:, 11:20], state=state, output_state=True, mode="recurrent")
    y3 = layer(x[:, 20:], state=state, mode="parallel")
    assert_close("resume", y, torch.cat([y1, y2, y3], 1), ratio=1e-10)


@pytest.mark.parametrize("mode", ["parallel", "chunk"])
@pytest.mark.parametrize("kernel", ["rebased", "elu"])
def test_layer_padding(kernel, mode):
    layer = _layer(kernel, {}, causal=False, mode=mode)
    x = torch.randn(2, 20, 24, dtype=torch.float64)
    mask = torch.zeros(2, 20, dtype=torch.bool)
    mask[:, 15:] = True
    x_noise = x.clone()
    x_noise[:, 15:] = 100 * torch.randn(2, 5, 24, dtype=torch.float64)
    assert_close("pad", layer(x[:, :15]), layer(x_noise, key_padding_mask=mask)[:, :15], ratio=1e-10)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_weights_reproduce_the_output(causal):
    layer = _layer("rebased", {}, causal)
    x = torch.randn(2, 12, 24, dtype=torch.float64)
    W = layer.attention_weights(x)
    assert W.shape == (2, 3, 12, 12)
    rows = W.sum(-1)
    assert (rows <= 1).all() and rows.mean() > 0.99  # 1 up to the normaliser's eps
    if causal:
        assert W.triu(1).abs().max() == 0
    v = layer.v_proj(x).view(2, 12, 3, -1)
    o = torch.einsum("bhts,bshd->bthd", W, v).reshape(2, 12, -1)
    assert_close("W v", layer(x, mode="parallel"), layer.o_proj(o), ratio=1e-10)


def test_softmax_and_baseconv_resume_and_weights():
    x = torch.randn(2, 25, 16, dtype=torch.float64)
    for layer in (layers.SoftmaxAttention(16, num_heads=2).double(), layers.BaseConv(16, kernel_size=4).double()):
        assert_close(type(layer).__name__, layer(x), prefill_then_decode(layer, x, 9), ratio=1e-12)
    sm = layers.SoftmaxAttention(16, num_heads=2).double()
    W = sm.attention_weights(x)
    assert_close("softmax rows", torch.ones(2, 2, 25, dtype=torch.float64), W.sum(-1), ratio=1e-12)


def test_baseconv_is_causal_and_ignores_padding():
    conv = layers.BaseConv(8, kernel_size=3).double()
    x = torch.randn(1, 10, 8, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 6:] += 1.0
    assert_close("causal", conv(x)[:, :6], conv(x2)[:, :6], ratio=1e-14)
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[:, :3] = True  # left padding must not reach the first real token
    x3 = x.clone()
    x3[:, :3] = 99.0
    y_ref = conv(x.masked_fill(mask[..., None], 0.0))
    assert_close("pad", y_ref[:, 3:], conv(x3, key_padding_mask=mask)[:, 3:], ratio=1e-14)


def test_build_mixer_and_bad_input():
    m = layers.build_mixer({"mixer": "kernel", "kernel": "taylor", "num_heads": 2, "feature_dim": 4}, d_model=8)
    assert isinstance(m, layers.KernelAttention) and m.feature_map.feature_dim == 15
    assert m.state_size() == 2 * 15 * (4 + 1)
    with pytest.raises(ValueError, match="mixer must be one of .*kernel"):
        layers.build_mixer({"mixer": "mamba"}, d_model=8)
    with pytest.raises(ValueError, match="unknown options \\['heads'\\]"):
        layers.build_mixer({"mixer": "kernel", "heads": 2}, d_model=8)
    with pytest.raises(ValueError, match="unknown options \\['heads'\\]"):
        layers.build_mixer({"mixer": "softmax", "heads": 2}, d_model=8)
    # kernel options may sit flat in the spec, as the README writes them, or under kernel_options
    flat = layers.build_mixer({"mixer": "kernel", "kernel": "gmm-prf", "num_features": 8, "num_heads": 2}, d_model=8)
    nested = layers.build_mixer(
        {"mixer": "kernel", "kernel": "gmm-prf", "kernel_options": {"num_features": 8}, "num_heads": 2}, d_model=8
    )
    assert flat.feature_map.feature_dim == nested.feature_map.feature_dim == 8
    with pytest.raises(ValueError, match="options of kernel 'rebased'"):
        layers.build_mixer({"mixer": "kernel", "kernel": "rebased", "num_features": 8}, d_model=8)
    with pytest.raises(ValueError, match="a mixer spec must be a dict"):
        layers.build_mixer("kernel", d_model=8)
    with pytest.raises(ValueError, match="kernel must be one of"):
        layers.KernelAttention(8, 2, kernel="softmax")
    with pytest.raises(ValueError, match="x must have d_model=8 features"):
        m(torch.randn(2, 3, 9))
    with pytest.raises(ValueError, match=r"x must have 3 dimensions \[B, T, d_model\]"):
        m(torch.randn(3, 8))
    with pytest.raises(ValueError, match="head_dim_v"):
        layers.KernelAttention(8, num_heads=16)


@pytest.mark.parametrize("T", [1, 100])
@pytest.mark.parametrize("kernel", ["rebased", "taylor"])
def test_parameter_gradients_agree_at_other_lengths(kernel, T):
    layer = _layer(kernel, {}, causal=True)
    x = torch.randn(1, T, 24, dtype=torch.float64)
    grads = {}
    for mode in ("parallel", "chunk", "recurrent"):
        layer.zero_grad()
        layer(x, mode=mode).pow(2).sum().backward()
        grads[mode] = {n: p.grad.clone() for n, p in layer.named_parameters()}
    for mode in ("chunk", "recurrent"):
        for n, g in grads["parallel"].items():
            assert_close(f"{mode} d{n}", g, grads[mode][n], ratio=1e-9)


def test_attention_weights_do_not_redraw_random_features():
    layer = layers.KernelAttention(16, num_heads=2, feature_dim=8, kernel="performer").train()
    x = torch.randn(1, 6, 16)
    layer(x)  # a training forward draws
    before = [b.clone() for b in layer.feature_map.buffers()]
    W1, W2 = layer.attention_weights(x), layer.attention_weights(x)
    torch.testing.assert_close(W1, W2)
    for b0, b1 in zip(before, layer.feature_map.buffers()):
        torch.testing.assert_close(b0, b1)

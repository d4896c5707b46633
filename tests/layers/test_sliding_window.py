import pytest
import torch

from kernelized.layers.rotary import apply_rotary
from kernelized.layers.sliding_window import SlidingWindowAttention


def naive(layer: SlidingWindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Per-query loop: softmax over the keys inside the window; the obviously-correct reference."""
    B, T, D = x.shape
    H, Dh, W = layer.num_heads, layer.head_dim, layer.window
    q, k, v = layer.qkv(x).view(B, T, 3, H, Dh).unbind(2)
    if layer.rotary:
        q, k = apply_rotary(q, torch.arange(T)), apply_rotary(k, torch.arange(T))
    out = torch.zeros(B, T, H, Dh)
    for i in range(T):
        js = [j for j in range(T) if (0 <= i - j < W if layer.causal else abs(i - j) < W)]
        s = torch.einsum("bhd,bjhd->bhj", q[:, i], k[:, js]) / Dh**0.5
        out[:, i] = torch.einsum("bhj,bjhd->bhd", s.softmax(-1), v[:, js])
    return layer.out(out.reshape(B, T, D))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window,rotary", [(1, True), (4, True), (5, False), (50, True)])
def test_forward_matches_naive(causal, window, rotary):
    torch.manual_seed(0)
    layer = SlidingWindowAttention(16, num_heads=2, window=window, causal=causal, rotary=rotary)
    x = torch.randn(2, 11, 16)
    torch.testing.assert_close(layer(x), naive(layer, x), rtol=1e-5, atol=1e-5)


def test_large_window_is_causal_softmax_attention():
    torch.manual_seed(1)
    layer = SlidingWindowAttention(16, num_heads=4, window=100, rotary=False)
    x = torch.randn(2, 13, 16)
    q, k, v = layer.qkv(x).view(2, 13, 3, 4, 4).unbind(2)
    o = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
    ).transpose(1, 2)
    torch.testing.assert_close(layer(x), layer.out(o.reshape(2, 13, 16)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prefill", [0, 1, 5, 7])
def test_decode_with_ring_buffer_matches_full_forward(prefill):
    torch.manual_seed(2)
    layer = SlidingWindowAttention(16, num_heads=2, window=4)
    x = torch.randn(2, 15, 16)
    full = layer(x)
    state, outs = None, []
    if prefill:
        y, state = layer(x[:, :prefill], output_state=True)
        outs.append(y)
    for t in range(prefill, 15):
        y, state = layer(x[:, t : t + 1], state=state, output_state=True)
        outs.append(y)
        assert state["k"].shape == (2, 4, 2, 8)  # constant memory: W slots whatever the length
        assert state["offset"] == t + 1
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-5, atol=1e-5)


def test_chunked_continuation_matches_full_forward():
    torch.manual_seed(3)
    layer = SlidingWindowAttention(12, num_heads=3, window=5)
    x = torch.randn(1, 20, 12)
    full = layer(x)
    state, outs = None, []
    for a, b in [(0, 3), (3, 10), (10, 11), (11, 20)]:
        y, state = layer(x[:, a:b], state=state, output_state=True)
        outs.append(y)
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-5, atol=1e-5)


def test_right_padding_does_not_change_real_tokens():
    torch.manual_seed(4)
    layer = SlidingWindowAttention(8, num_heads=2, window=3)
    x = torch.randn(2, 9, 8)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[1, 6:] = True
    y = layer(x, key_padding_mask=pad)
    torch.testing.assert_close(y[1, :6], layer(x[1:, :6])[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y[0], layer(x[:1])[0], rtol=1e-5, atol=1e-5)
    # left padding: the first real token only sees itself, padded rows are finite zeros before out-proj
    left = torch.zeros(1, 9, dtype=torch.bool)
    left[0, :2] = True
    y = layer(x[:1], key_padding_mask=left)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[0, 2], layer(x[:1, 2:3])[0, 0], rtol=1e-5, atol=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match="window"):
        SlidingWindowAttention(8, 2, window=0)
    with pytest.raises(ValueError, match="divisible"):
        SlidingWindowAttention(10, 3)
    with pytest.raises(ValueError, match="causal"):
        SlidingWindowAttention(8, 2, causal=False)(torch.randn(1, 3, 8), output_state=True)

"""linear_attention: the three forms agree (outputs, states, gradients); resume, padding, precision, errors."""

from __future__ import annotations

import pytest
import torch

from kernelized import cpu, kernels, ops
from kernelized.ops.linear import chunk as chunk_module
from tests.conftest import assert_close

MODES = ["parallel", "chunk", "recurrent"]


def _inputs(B=2, T=63, H=3, F=10, Dv=7, dtype=torch.float64, requires_grad=False):
    """Positive features (elu+1 of Gaussians) so the normaliser is well away from zero."""
    q = torch.nn.functional.elu(torch.randn(B, T, H, F, dtype=dtype)) + 1
    k = torch.nn.functional.elu(torch.randn(B, T, H, F, dtype=dtype)) + 1
    v = torch.randn(B, T, H, Dv, dtype=dtype)
    return [x.requires_grad_(requires_grad) for x in (q, k, v)]


def _state(B=2, H=3, F=10, Dv=7, dtype=torch.float64, requires_grad=False):
    S = torch.randn(B, H, F, Dv, dtype=dtype)
    z = torch.rand(B, H, F, dtype=dtype) + 1.0
    return S.requires_grad_(requires_grad), z.requires_grad_(requires_grad)


def _run(mode, q, k, v, **kw):
    return ops.linear_attention(q, k, v, mode=mode, output_final_state=True, chunk_size=16, **kw)


@pytest.fixture(params=["compiled", "pytorch"])
def chunk_path(request, monkeypatch):
    """The chunk form's two CPU paths: the compiled kernels (where they build) and the PyTorch fallback."""
    if request.param == "pytorch":
        monkeypatch.setenv("KERNELIZED_DISABLE_CPU_KERNELS", "1")
    elif cpu.disabled() or cpu.library() is None:
        pytest.skip("no compiled CPU kernels here")
    return request.param


@pytest.mark.parametrize("T", [1, 63, 100, 1000])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
def test_forms_agree_in_outputs_states_and_gradients(T, causal, normalize, chunk_path, nan_poison):
    B, H, F, Dv = (1, 2, 5, 3) if T == 1000 else (2, 3, 10, 7)  # head dims that are not powers of two
    q, k, v = _inputs(B, T, H, F, Dv, requires_grad=True)
    S0, z0 = _state(B, H, F, Dv, requires_grad=True)
    leaves = (q, k, v, S0, z0)
    results = {}
    for mode in MODES:
        o, (S, z) = _run(mode, q, k, v, causal=causal, normalize=normalize, initial_state=(S0, z0))
        # a loss that reaches o and the final state, as fla's tests do
        loss = (o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() + S.sin().sum() + z.cos().sum()
        grads = torch.autograd.grad(loss, leaves)
        results[mode] = (o, S, z, *grads)
    names = ["o", "S", "z", "dq", "dk", "dv", "dS0", "dz0"]
    for mode in ("chunk", "recurrent"):
        for name, ref, out in zip(names, results["parallel"], results[mode]):
            assert_close(f"{mode}/{name}", ref, out, ratio=1e-10)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("causal", [True, False])
def test_split_and_resume(mode, causal):
    """T tokens at once == t tokens, then T - t tokens from the returned state (any form to any form)."""
    q, k, v = _inputs(T=100)
    o_full, (S_full, z_full) = _run("parallel", q, k, v, causal=causal)
    for t in (1, 37, 64, 99):
        o1, state = _run(mode, q[:, :t], k[:, :t], v[:, :t], causal=True)
        o2, (S, z) = _run(
            "chunk" if mode != "chunk" else "recurrent", q[:, t:], k[:, t:], v[:, t:], causal=True, initial_state=state
        )
        if causal:
            assert_close(f"o@{t}", o_full, torch.cat([o1, o2], 1), ratio=1e-12)
        assert_close(f"S@{t}", S_full, S, ratio=1e-12)
        assert_close(f"z@{t}", z_full, z, ratio=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_keys_do_not_change_real_outputs(mode, causal, side):
    """elu+1 has phi(0) = 1: zeroing padded inputs before phi would still leak them into the normaliser."""
    fm = kernels.build("elu", head_dim=6)
    B, T, pad, H = 2, 40, 9, 2
    q, k = torch.randn(B, T, H, 6, dtype=torch.float64), torch.randn(B, T, H, 6, dtype=torch.float64)
    v = torch.randn(B, T, H, 4, dtype=torch.float64)
    real = slice(0, T - pad) if side == "right" else slice(pad, T)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[:, real] = False

    def garbage(x):  # arbitrary values at the padded positions
        x = x.clone()
        x[:, ~real_positions] = torch.randn_like(x[:, ~real_positions]) * 50
        return x

    real_positions = ~mask[0]
    o_pad, _ = ops.linear_attention(
        fm.query(q), fm.key(garbage(k)), garbage(v), mode=mode, causal=causal, key_padding_mask=mask
    )
    o_ref, _ = ops.linear_attention(fm.query(q[:, real]), fm.key(k[:, real]), v[:, real], mode=mode, causal=causal)
    # with left padding and a causal mask the real tokens sit at the end: compare those positions
    assert_close("padded", o_ref, o_pad[:, real], ratio=1e-12)
    # and without the mask the padded keys do leak (the test can fail)
    o_leak, _ = ops.linear_attention(fm.query(q), fm.key(garbage(k)), garbage(v), mode=mode, causal=causal)
    if not (causal and side == "right"):
        assert (o_leak[:, real] - o_ref).abs().max() > 1e-3


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("causal", [True, False])
def test_gradcheck(mode, causal):
    q, k, v = _inputs(B=1, T=6, H=2, F=3, Dv=2, requires_grad=True)
    S0, z0 = _state(B=1, H=2, F=3, Dv=2, requires_grad=True)

    def f(q, k, v, S0, z0):
        o, (S, z) = ops.linear_attention(
            q, k, v, mode=mode, causal=causal, chunk_size=4, initial_state=(S0, z0), output_final_state=True
        )
        return o, S, z

    assert torch.autograd.gradcheck(f, (q, k, v, S0, z0))


def test_bf16_long_sequence_stays_finite_and_close_to_fp32():
    """T = 16384 in bf16: float32 accumulation keeps the result finite and within bf16 rounding of fp32."""
    fm = kernels.build("rebased", head_dim=16, num_heads=2)
    T = 16384
    q, k = torch.randn(1, T, 2, 16), torch.randn(1, T, 2, 16)
    v = torch.randn(1, T, 2, 8)
    qf, kf = fm.query(q).detach(), fm.key(k).detach()
    ref, (S_ref, _) = ops.linear_attention(qf, kf, v, mode="chunk", output_final_state=True)
    out, (S, _) = ops.linear_attention(
        qf.bfloat16(), kf.bfloat16(), v.bfloat16(), mode="chunk", output_final_state=True
    )
    assert out.dtype == torch.bfloat16 and S.dtype == torch.float32
    assert torch.isfinite(out).all() and torch.isfinite(S).all()
    assert_close("bf16 o", ref, out.float(), ratio=2e-2)  # bf16 has an 8-bit mantissa: ~0.4% per element
    assert_close("bf16 S", S_ref, S, ratio=2e-2)


def test_fp16_normaliser_does_not_overflow():
    """fast-transformers #32: the key sum overflows fp16 (max 65504) at long T; accumulation here is fp32."""
    T, F = 8192, 8
    q = torch.full((1, T, 1, F), 4.0, dtype=torch.float16)
    k = torch.full((1, T, 1, F), 4.0, dtype=torch.float16)  # sum_k q.k = T * 128 >> 65504
    v = torch.randn(1, T, 1, 4).half()
    o, (S, z) = ops.linear_attention(q, k, v, mode="chunk", output_final_state=True)
    assert torch.isfinite(o).all() and z.max().item() == pytest.approx(T * 4.0)
    ref = v.float().cumsum(1) / torch.arange(1, T + 1)[None, :, None, None]  # equal weights: a running mean
    assert_close("fp16 o", ref, o.float(), ratio=2e-3)


def test_chunk_size_does_not_matter():
    q, k, v = _inputs(T=100)
    ref, _ = ops.linear_attention(q, k, v, mode="parallel")
    for c in (1, 7, 64, 100, 128):
        assert_close(f"C={c}", ref, ops.linear_attention(q, k, v, mode="chunk", chunk_size=c)[0], ratio=1e-12)


@pytest.mark.parametrize("block_bytes", [1, 2e4, 1e9])  # 1 chunk per block, a few, whole sequences per block
@pytest.mark.parametrize("normalize", [True, False])
def test_chunk_blocks_carry_state_across_block_and_sequence_boundaries(block_bytes, normalize, monkeypatch):
    """The chunk form walks each head through the sequence in blocks of chunks (several blocks per sequence,
    or several sequences per block): every block size gives the parallel form's outputs, states and gradients,
    with and without autograd, on more than one thread."""
    monkeypatch.setattr(chunk_module, "BLOCK_BYTES", block_bytes)
    monkeypatch.setenv("KERNELIZED_DISABLE_CPU_KERNELS", "1")  # the blocks are the PyTorch path's
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # heads split over two worker threads
    try:
        _check_blocks(normalize)
    finally:
        torch.set_num_threads(threads)


def _check_blocks(normalize):
    q, k, v = _inputs(B=3, T=100, H=3, requires_grad=True)  # 7 chunks of 16, the last one padded
    S0, z0 = _state(B=3, H=3, requires_grad=True)
    leaves = (q, k, v, S0, z0)
    results = {}
    for mode in ("parallel", "chunk"):
        o, (S, z) = _run(mode, q, k, v, normalize=normalize, initial_state=(S0, z0))
        loss = (o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() + S.sin().sum() + z.cos().sum()
        results[mode] = (o, S, z, *torch.autograd.grad(loss, leaves))
    for name, ref, out in zip(["o", "S", "z", "dq", "dk", "dv", "dS0", "dz0"], results["parallel"], results["chunk"]):
        assert_close(f"blocks/{name}", ref, out, ratio=1e-10)
    with torch.no_grad():  # the inference path keeps nothing for backward
        o, (S, z) = _run("chunk", q, k, v, normalize=normalize, initial_state=(S0, z0))
    for name, ref, out in zip(["o", "S", "z"], results["parallel"], (o, S, z)):
        assert_close(f"no-grad/{name}", ref, out, ratio=1e-10)


def test_bad_input_is_named():
    q, k, v = _inputs(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"q_feat must have 4 dimensions \[B, T, H, D\], got shape \(63, 3, 10\)"):
        ops.linear_attention(q[0], k, v)
    with pytest.raises(ValueError, match=r"batch sizes \(axis 0\) must agree, got q_feat=2, k_feat=1, v=2"):
        ops.linear_attention(q, k[:1], v)
    with pytest.raises(ValueError, match=r"sequence lengths \(axis 1\) must agree"):
        ops.linear_attention(q, k, v[:, :5])
    with pytest.raises(ValueError, match=r"head counts \(axis 2\) must agree"):
        ops.linear_attention(q, k[:, :, :2], v)
    with pytest.raises(
        ValueError, match=r"feature dims of queries and keys \(axis 3\) must agree, got q_feat=10, k_feat=9"
    ):
        ops.linear_attention(q, k[..., :9], v)
    with pytest.raises(ValueError, match="v must be a floating-point tensor, got dtype torch.int64"):
        ops.linear_attention(q, k, v.long())
    with pytest.raises(ValueError, match="mode must be one of"):
        ops.linear_attention(q, k, v, mode="fused")
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1, got 0"):
        ops.linear_attention(q, k, v, chunk_size=0)
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \[B, T\] = \[2, 63\], got \[2, 62\]"):
        ops.linear_attention(q, k, v, key_padding_mask=torch.zeros(2, 62, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_padding_mask must be a bool tensor"):
        ops.linear_attention(q, k, v, key_padding_mask=torch.zeros(2, 63))
    with pytest.raises(ValueError, match=r"initial_state\[S\] must be a float tensor of shape \[2, 3, 10, 7\]"):
        ops.linear_attention(q, k, v, initial_state=(torch.zeros(2, 3, 10, 6), torch.zeros(2, 3, 10)))
    with pytest.raises(ValueError, match="initial_state must be a pair"):
        ops.linear_attention(q, k, v, initial_state=torch.zeros(2, 3, 10, 7))

"""CUDA: every kernel in every form against a float64 CPU reference, and the Triton kernels against the PyTorch path
on the GPU (fp32 and bf16; outputs, states and gradients; causal and bidirectional; padding).

Skipped without a GPU; `make gpu-check` runs this file first on a lent H100/H200. Shapes are moderate (the GPU
kernels' tiles and several chunks are exercised) and the whole file takes well under a minute there.
"""

from __future__ import annotations

import copy

import pytest
import torch

from kernelized import kernels, ops
from kernelized.layers.attention import KernelAttention
from kernelized.ops import triton as _triton

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

KERNELS = kernels.available()
TOL = {torch.float32: 2e-3, torch.bfloat16: 4e-2}  # relative RMS error against float64 on the CPU


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    assert torch.isfinite(out).all(), "non-finite values"
    return float((out - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-30))


def _layer_pair(kernel: str, causal: bool, mode: str, dtype: torch.dtype):
    torch.manual_seed(0)
    ref = KernelAttention(64, num_heads=4, feature_dim=16, kernel=kernel, causal=causal, mode=mode).double().eval()
    gpu = copy.deepcopy(ref).to("cuda", dtype).eval()
    return ref, gpu


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("causal,mode", [(True, "parallel"), (True, "chunk"), (True, "recurrent"), (False, "chunk")])
@pytest.mark.parametrize("kernel", KERNELS)
def test_every_kernel_and_form_on_cuda_matches_float64_on_the_cpu(kernel, causal, mode, dtype):
    ref, gpu = _layer_pair(kernel, causal, mode, dtype)
    x = torch.randn(2, 200, 64, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, 200, dtype=torch.bool)
    mask[1, 170:] = True  # right padding in the second sequence
    out_ref = ref(x, key_padding_mask=mask)
    out_ref = out_ref[0] if isinstance(out_ref, tuple) else out_ref
    xg = x.detach().to("cuda", dtype).requires_grad_()
    out = gpu(xg, key_padding_mask=mask.cuda())
    out = out[0] if isinstance(out, tuple) else out
    assert _rel(out, out_ref) < TOL[dtype]
    (grad_ref,) = torch.autograd.grad(out_ref.square().sum(), x)
    (grad,) = torch.autograd.grad(out.float().square().sum(), xg)
    assert _rel(grad, grad_ref) < 2 * TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_triton_chunk_kernel_matches_the_pytorch_path_on_cuda(dtype, monkeypatch):
    assert _triton.usable(torch.zeros(1, device="cuda", dtype=dtype)), "Triton must be usable on this GPU"
    g = torch.Generator(device="cuda").manual_seed(0)
    B, T, H, F, Dv = 2, 333, 4, 72, 40  # ragged T, several F and Dv tiles
    q, k = (torch.rand(B, T, H, F, device="cuda", generator=g).to(dtype).requires_grad_() for _ in range(2))
    v = torch.randn(B, T, H, Dv, device="cuda", generator=g).to(dtype).requires_grad_()
    state = (torch.rand(B, H, F, Dv, device="cuda", generator=g), torch.rand(B, H, F, device="cuda", generator=g))
    mask = torch.zeros(B, T, dtype=torch.bool, device="cuda")
    mask[0, 300:] = True
    kw = {"mode": "chunk", "initial_state": state, "output_final_state": True, "key_padding_mask": mask}
    out, (S, z) = ops.linear_attention(q, k, v, **kw)
    assert _triton._HEALTH.get(("linear", str(q.device), dtype)), "the Triton kernel did not run"
    monkeypatch.setenv(_triton.DISABLE_ENV, "1")
    ref, (S_ref, z_ref) = ops.linear_attention(q, k, v, **kw)
    for name, a, b in (("o", out, ref), ("S", S, S_ref), ("z", z, z_ref)):
        assert _rel(a, b) < TOL[dtype], name
    grads = torch.autograd.grad(out.float().square().sum(), (q, k, v))
    grads_ref = torch.autograd.grad(ref.float().square().sum(), (q, k, v))
    for name, a, b in zip("qkv", grads, grads_ref):
        assert _rel(a, b) < 2 * TOL[dtype], f"d{name}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("terms,causal", [({2: 1.0}, True), ({0: 1.0, 1: 1.0, 2: 0.5}, True), ({2: 1.0}, False)])
def test_triton_polynomial_kernel_matches_the_pytorch_path_on_cuda(terms, causal, dtype, monkeypatch):
    g = torch.Generator(device="cuda").manual_seed(1)
    q, k = (torch.randn(2, 300, 4, 16, device="cuda", generator=g).to(dtype).requires_grad_() for _ in range(2))
    v = torch.randn(2, 300, 4, 64, device="cuda", generator=g).to(dtype).requires_grad_()
    mask = torch.zeros(2, 300, dtype=torch.bool, device="cuda")
    mask[1, 250:] = True
    kw = {"terms": terms, "causal": causal, "key_padding_mask": mask}
    out = ops.polynomial_attention(q, k, v, **kw)
    assert _triton._HEALTH.get(("polynomial", str(q.device), dtype)), "the Triton kernel did not run"
    monkeypatch.setenv(_triton.DISABLE_ENV, "1")
    ref = ops.polynomial_attention(q, k, v, **kw)
    assert _rel(out, ref) < TOL[dtype]
    grads = torch.autograd.grad(out.float().square().sum(), (q, k, v))
    grads_ref = torch.autograd.grad(ref.float().square().sum(), (q, k, v))
    for name, a, b in zip("qkv", grads, grads_ref):
        assert _rel(a, b) < 2 * TOL[dtype], f"d{name}"

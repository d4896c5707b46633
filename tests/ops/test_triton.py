"""Triton kernels against the PyTorch ops, run on the CPU by Triton's interpreter (tiny shapes: it is slow).

TRITON_INTERPRET=1 must be set before triton is first imported (its own helpers are jit-decorated then) and
while the kernels run, so the cases run in one subprocess (this file run as a script) and the tests here
check what it reports; the rest of the suite keeps the PyTorch path for CPU tensors.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

TOL = 1e-5

POLY_CASES = {
    # name: (terms, causal, normalize, padded, shape B, T, H, D, Dv)
    "rebased": ({2: 1.0}, True, True, False, (2, 37, 2, 16, 7)),
    "based_padded": ({0: 1.0, 1: 1.0, 2: 0.5}, True, True, True, (2, 33, 1, 5, 9)),
    "bidirectional": ({2: 1.0}, False, True, False, (1, 21, 2, 4, 3)),
    "unnormalised_odd": ({1: 0.3, 3: 0.2, 4: 0.1}, True, False, False, (1, 40, 1, 4, 3)),
}
CHUNK_CASES = {
    # name: (normalize, with initial state, padded, shape B, T, H, F, Dv, chunk)
    "ragged_T": (True, False, False, (2, 37, 2, 20, 7, 16)),
    "blocks_state_padding": (True, True, True, (1, 50, 1, 70, 66, 16)),  # several F and Dv tiles
    "unnormalised": (False, True, False, (1, 19, 2, 5, 3, 16)),
}


def _pytorch(fn, *args, **kwargs):
    """Call an op with the Triton dispatch switched off: the PyTorch reference."""
    os.environ["KERNELIZED_DISABLE_TRITON"] = "1"
    try:
        return fn(*args, **kwargs)
    finally:
        del os.environ["KERNELIZED_DISABLE_TRITON"]


def _rel(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12)).item()


def _poly_case(terms, causal, normalize, padded, shape) -> dict:
    import torch

    from kernelized import ops
    from kernelized.ops.triton import polynomial as tpoly

    B, T, H, D, Dv = shape
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(B, T, H, D, generator=g).requires_grad_() for _ in range(2))
    v = torch.randn(B, T, H, Dv, generator=g, requires_grad=True)
    mask = None
    if padded:
        mask = torch.zeros(B, T, dtype=torch.bool)
        mask[-1, -6:] = True
    kw = dict(terms=terms, causal=causal, normalize=normalize, key_padding_mask=mask)
    out = tpoly.polynomial_attention(q, k, v, **kw)
    ref = _pytorch(ops.polynomial_attention, q, k, v, **kw)
    w = torch.randn(ref.shape, generator=g)
    got = torch.autograd.grad((out * w).sum(), (q, k, v))
    want = torch.autograd.grad((ref * w).sum(), (q, k, v))
    return {"o": _rel(out, ref), **{f"d{n}": _rel(a, b) for n, a, b in zip("qkv", got, want)}}


def _chunk_case(normalize, init, padded, shape) -> dict:
    import torch

    from kernelized import ops
    from kernelized.ops.triton import chunk as tchunk

    B, T, H, F, Dv, C = shape
    g = torch.Generator().manual_seed(1)
    q, k = (torch.rand(B, T, H, F, generator=g).requires_grad_() for _ in range(2))
    v = torch.randn(B, T, H, Dv, generator=g, requires_grad=True)
    inputs, names, state = [q, k, v], ["dq", "dk", "dv"], None
    if init:
        state = (
            torch.rand(B, H, F, Dv, generator=g).requires_grad_(),
            torch.rand(B, H, F, generator=g).requires_grad_(),
        )
        inputs, names = inputs + list(state), names + ["dS0", "dz0"]
    mask = None
    if padded:
        mask = torch.zeros(B, T, dtype=torch.bool)
        mask[:, -5:] = True
    kw = dict(normalize=normalize, key_padding_mask=mask, initial_state=state, output_final_state=True)
    out, (S, z) = tchunk.chunk_linear_attention(q, k, v, chunk_size=C, **kw)
    ref, (S_ref, z_ref) = _pytorch(ops.linear_attention, q, k, v, mode="parallel", **kw)
    # gradients through the output and both parts of the final state
    w = [torch.randn(x.shape, generator=g) for x in (ref, S_ref, z_ref)]
    got = torch.autograd.grad(sum((a * b).sum() for a, b in zip((out, S, z), w)), inputs)
    want = torch.autograd.grad(sum((a * b).sum() for a, b in zip((ref, S_ref, z_ref), w)), inputs)
    res = {"o": _rel(out, ref), "S": _rel(S, S_ref), "z": _rel(z, z_ref)}
    return res | {n: _rel(a, b) for n, a, b in zip(names, got, want)}


def _other_cases() -> dict:
    import torch

    from kernelized import ops
    from kernelized.ops.triton import chunk as tchunk
    from kernelized.ops.triton import polynomial as tpoly

    g = torch.Generator().manual_seed(2)
    q, k = (torch.rand(1, 40, 1, 6, generator=g) for _ in range(2))
    v = torch.randn(1, 40, 1, 5, generator=g)
    full, (S, z) = tchunk.chunk_linear_attention(q, k, v, chunk_size=16, output_final_state=True)
    cut = 23  # split mid-chunk, resume from the state
    a, st = tchunk.chunk_linear_attention(q[:, :cut], k[:, :cut], v[:, :cut], chunk_size=16, output_final_state=True)
    b, (S2, z2) = tchunk.chunk_linear_attention(
        q[:, cut:], k[:, cut:], v[:, cut:], chunk_size=16, initial_state=st, output_final_state=True
    )
    split = {"o": _rel(torch.cat([a, b], 1), full), "S": _rel(S2, S), "z": _rel(z2, z)}
    q2, k2 = (torch.rand(2, 9, 2, 4, generator=g) for _ in range(2))
    v2 = torch.randn(2, 9, 2, 3, generator=g)
    bidir = {"o": _rel(tchunk.chunk_linear_attention(q2, k2, v2, causal=False)[0],
                       _pytorch(ops.linear_attention, q2, k2, v2, causal=False, mode="parallel")[0])}  # fmt: skip
    try:
        tpoly.polynomial_attention(q2, k2, v2, terms={5: 1.0})
        refused = "no error"
    except ValueError as e:
        refused = str(e)
    return {"split_resume": split, "bidirectional_linear": bidir, "refused": refused, "dispatch": _dispatch()}


def _dispatch() -> dict:
    """Which calls of the public ops reach the Triton kernels (counted by wrapping them)."""
    import torch

    from kernelized import ops
    from kernelized.ops.triton import chunk as tchunk
    from kernelized.ops.triton import polynomial as tpoly

    calls = []
    real_chunk, real_poly = tchunk.chunk_linear_attention, tpoly.polynomial_attention
    tchunk.chunk_linear_attention = lambda *a, **k: calls.append("chunk") or real_chunk(*a, **k)
    tpoly.polynomial_attention = lambda *a, **k: calls.append("poly") or real_poly(*a, **k)
    q, k, v = (torch.rand(1, 20, 1, 4) for _ in range(3))
    seen = {}
    for name, call in {
        "linear chunk": lambda: ops.linear_attention(q, k, v, mode="chunk"),
        "linear chunk again": lambda: ops.linear_attention(q, k, v, mode="chunk"),
        "linear parallel": lambda: ops.linear_attention(q, k, v, mode="parallel"),
        "linear recurrent": lambda: ops.linear_attention(q, k, v, mode="recurrent"),
        "linear chunk float64": lambda: ops.linear_attention(q.double(), k.double(), v.double(), mode="chunk"),
        "linear chunk disabled": lambda: _pytorch(ops.linear_attention, q, k, v, mode="chunk"),
        "polynomial": lambda: ops.polynomial_attention(q, k, v, terms={2: 1.0}),
        "polynomial again": lambda: ops.polynomial_attention(q, k, v, terms={2: 1.0}),
        "polynomial degree 6": lambda: ops.polynomial_attention(q, k, v, terms={6: 1.0}),
    }.items():
        calls.clear()
        call()
        seen[name] = list(calls)
    tchunk.chunk_linear_attention, tpoly.polynomial_attention = real_chunk, real_poly
    return seen


def _worker() -> dict:
    """Runs in the subprocess, where TRITON_INTERPRET=1 was set before anything imported triton."""
    assert os.environ.get("TRITON_INTERPRET") == "1"
    out = {"poly": {n: _poly_case(*c) for n, c in POLY_CASES.items()}}
    out["chunk"] = {n: _chunk_case(*c) for n, c in CHUNK_CASES.items()}
    return out | _other_cases()


@pytest.fixture(scope="module")
def results() -> dict:
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", POLY_CASES)
def test_polynomial_kernel_matches_pytorch_outputs_and_gradients(results, name):
    errors = results["poly"][name]
    assert set(errors) == {"o", "dq", "dk", "dv"}
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("name", CHUNK_CASES)
def test_chunk_kernel_matches_parallel_reference_outputs_states_gradients(results, name):
    errors = results["chunk"][name]
    assert {"o", "S", "z", "dq", "dk", "dv"} <= set(errors)
    assert max(errors.values()) < TOL, errors


def test_chunk_kernel_split_and_resume_equals_one_pass(results):
    assert max(results["split_resume"].values()) < TOL, results["split_resume"]


def test_bidirectional_linear_matches_parallel_reference(results):
    assert results["bidirectional_linear"]["o"] < TOL


def test_polynomial_kernel_refuses_unsupported_terms(results):
    assert "terms" in results["refused"]


def test_ops_dispatch_to_triton_only_where_it_applies(results):
    # chunk form and implicit polynomial go to Triton; the parallel reference, the recurrent form, float64,
    # degrees above 4 and KERNELIZED_DISABLE_TRITON=1 stay on PyTorch. The first use of a kernel on a device and
    # dtype probes it once (forward and backward on tiny inputs), so it calls the kernel twice, later uses once.
    assert results["dispatch"] == {
        "linear chunk": ["chunk", "chunk"],
        "linear chunk again": ["chunk"],
        "linear parallel": [],
        "linear recurrent": [],
        "linear chunk float64": [],
        "linear chunk disabled": [],
        "polynomial": ["poly", "poly"],
        "polynomial again": ["poly"],
        "polynomial degree 6": [],
    }


if __name__ == "__main__":
    print(json.dumps(_worker()))

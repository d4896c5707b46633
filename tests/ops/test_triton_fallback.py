"""A Triton kernel that fails to compile or launch never crashes a user: one warning, then the PyTorch path.

Runs without a GPU or Triton: the dispatch is told the kernel applies, and the kernel is replaced by one that
raises as a broken compile would."""

import warnings

import pytest
import torch

from kernelized import ops
from kernelized.ops import triton as _triton


@pytest.fixture
def broken(monkeypatch):
    """Triton 'applies' to every input; its kernels raise; the probe cache starts empty."""
    calls = []

    def fail(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("PTX assembly failed (simulated)")

    monkeypatch.setattr(_triton, "usable", lambda *t: True)
    monkeypatch.setattr(_triton, "linear_attention", fail)
    monkeypatch.setattr(_triton, "polynomial_attention", fail)
    monkeypatch.setattr(_triton, "_HEALTH", {})
    return calls


def _inputs():
    g = torch.Generator().manual_seed(0)
    return tuple(torch.rand(2, 24, 2, 4, generator=g) for _ in range(3))


def test_a_broken_kernel_warns_once_and_the_pytorch_path_answers(broken, monkeypatch):
    q, k, v = _inputs()
    with pytest.warns(RuntimeWarning, match="Triton linear kernel failed .*PTX assembly failed.*PyTorch path"):
        out, _ = ops.linear_attention(q, k, v, mode="chunk")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning, and the kernel is not tried again
        again, _ = ops.linear_attention(q, k, v, mode="chunk")
    assert len(broken) == 1
    monkeypatch.setenv(_triton.DISABLE_ENV, "1")
    reference, _ = ops.linear_attention(q, k, v, mode="chunk")
    torch.testing.assert_close(out, reference)
    torch.testing.assert_close(again, reference)


def test_a_kernel_that_passes_its_probe_but_fails_later_also_falls_back(broken, monkeypatch):
    monkeypatch.setattr(_triton, "_probe", lambda *a: None)  # compiles at the probe's shape, fails at this one
    q, k, v = _inputs()
    with pytest.warns(RuntimeWarning, match="Triton polynomial kernel failed"):
        out = ops.polynomial_attention(q, k, v, terms={2: 1.0})
    monkeypatch.setenv(_triton.DISABLE_ENV, "1")
    torch.testing.assert_close(out, ops.polynomial_attention(q, k, v, terms={2: 1.0}))
    assert _triton._HEALTH == {("polynomial", "cpu", torch.float32): False}

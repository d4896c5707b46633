"""Triton kernels for GPUs, with the signatures of the PyTorch ops; chosen by ``kernelized.ops`` on CUDA.

- ``polynomial_attention``: implicit ``sum_p c_p (scale q.k)^p`` attention, flash-attention style (p <= 4).
- ``linear_attention``: chunked linear attention on materialised features, normaliser, state in and out.

The kernel modules are imported on first use, so importing this package never needs a GPU, and the
tests can run the kernels on the CPU under ``TRITON_INTERPRET=1`` (set before the first call).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable

import torch

from kernelized._checks import check_choice


def available() -> bool:
    """True when Triton is installed (its kernels then run on CUDA, or anywhere under TRITON_INTERPRET=1)."""
    return importlib.util.find_spec("triton") is not None


DISABLE_ENV = "KERNELIZED_DISABLE_TRITON"
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 256


def _flag(name: str) -> bool:
    return os.environ.get(name, "0") not in ("", "0")


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the ops should take the Triton path for these inputs: Triton installed, not switched off with
    ``KERNELIZED_DISABLE_TRITON=1``, one supported dtype (fp32, fp16, bf16), and the tensors on CUDA (or the
    interpreter switched on with ``TRITON_INTERPRET=1``, which is how the CPU tests reach the kernels)."""
    if _flag(DISABLE_ENV) or not available():
        return False
    if len({t.dtype for t in tensors}) != 1 or tensors[0].dtype not in DTYPES:
        return False
    return all(t.is_cuda or _flag("TRITON_INTERPRET") for t in tensors)


_HEALTH: dict[tuple, bool] = {}  # (kernel, device, dtype) -> it compiled and ran forward and backward


def _probe(kind: str, device: torch.device, dtype: torch.dtype) -> None:
    """Compile and run one kernel forward and backward on tiny inputs (raises what Triton raises)."""
    with torch.inference_mode(False), torch.enable_grad():
        q, k = (torch.randn(1, 20, 1, 8, device=device, dtype=dtype, requires_grad=True) for _ in range(2))
        v = torch.randn(1, 20, 1, 8, device=device, dtype=dtype, requires_grad=True)
        if kind == "polynomial":
            out = polynomial_attention(q, k, v, terms={2: 1.0})
        else:
            out = linear_attention(q.exp(), k.exp(), v, output_final_state=True)[0]
        out.float().sum().backward()


def _fail(kind: str, device, dtype, error: Exception) -> None:
    _HEALTH[kind, str(device), dtype] = False
    warnings.warn(
        f"the Triton {kind} kernel failed on {device} ({dtype}): {type(error).__name__}: {error}; the PyTorch path "
        f"is used instead from now on (set {DISABLE_ENV}=1 to choose it without trying)",
        RuntimeWarning,
        stacklevel=4,
    )


def call(kind: str, fn: Callable, device: torch.device, dtype: torch.dtype):
    """``fn()`` (a Triton kernel call), or None when that kernel cannot run here: the first use on a device and
    dtype probes it forward and backward; a kernel that fails to compile or launch, then or later, warns once
    and is not tried again in this process, so the caller's PyTorch path serves instead of a crash."""
    key = (kind, str(device), dtype)
    if key not in _HEALTH:
        try:
            _probe(kind, device, dtype)
            _HEALTH[key] = True
        except Exception as e:  # noqa: BLE001 -- any compile or launch failure means: use the PyTorch path
            _fail(kind, device, dtype, e)
    if not _HEALTH[key]:
        return None
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        _fail(kind, device, dtype, e)
        return None


def supports_polynomial(terms: dict, head_dim: int, head_dim_v: int) -> bool:
    """The polynomial kernel's limits: integer powers 0..4, head sizes up to 256."""
    return (
        bool(terms)
        and all(isinstance(p, int) and 0 <= p <= 4 for p in terms)
        and max(head_dim, head_dim_v) <= MAX_HEAD_DIM
    )


def polynomial_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    terms: dict[int, float],
    scale: float | None = None,
    causal: bool = True,
    normalize: bool = True,
    eps: float = 1e-6,
    key_padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Implicit polynomial attention. q, k ``[B, T, H, D]``, v ``[B, T, H, Dv]`` -> o ``[B, T, H, Dv]``."""
    from kernelized.ops.triton import polynomial

    return polynomial.polynomial_attention(
        q, k, v, terms=terms, scale=scale, causal=causal, normalize=normalize, eps=eps,
        key_padding_mask=key_padding_mask,
    )  # fmt: skip


def linear_attention(
    q_feat: torch.Tensor,
    k_feat: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    mode: str = "chunk",
    normalize: bool = True,
    eps: float = 1e-6,
    chunk_size: int = 64,
    key_padding_mask: torch.Tensor | None = None,
    initial_state: tuple[torch.Tensor, torch.Tensor] | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Chunked linear attention on features. q_feat, k_feat ``[B, T, H, F]``, v ``[B, T, H, Dv]``.

    Every ``mode`` runs the chunked kernel (the forms agree; the choice matters only on the PyTorch path).
    Returns ``(o [B, T, H, Dv], (S [B, H, F, Dv], z [B, H, F]) or None)``, the state in float32.
    """
    check_choice("mode", mode, ["parallel", "chunk", "recurrent"])
    from kernelized.ops.triton import chunk

    return chunk.chunk_linear_attention(
        q_feat, k_feat, v, causal=causal, normalize=normalize, eps=eps, chunk_size=chunk_size,
        key_padding_mask=key_padding_mask, initial_state=initial_state, output_final_state=output_final_state,
    )  # fmt: skip


__all__ = ["available", "call", "usable", "supports_polynomial", "polynomial_attention", "linear_attention"]

"""Triton kernels for GPUs, with the signatures of the PyTorch ops; chosen by ``kernelized.ops`` on CUDA.

- ``polynomial_attention``: implicit ``sum_p c_p (scale q.k)^p`` attention, flash-attention style (p <= 4).
- ``linear_attention``: chunked linear attention on materialised features, normaliser, state in and out.

The kernel modules are imported on first use, so importing this package never needs a GPU, and the
tests can run the kernels on the CPU under ``TRITON_INTERPRET=1`` (set before the first call).
"""

from __future__ import annotations

import importlib.util
import os

import torch

from kernelized._checks import check_choice


def available() -> bool:
    """True when Triton is installed (its kernels then run on CUDA, or anywhere under TRITON_INTERPRET=1)."""
    return importlib.util.find_spec("triton") is not None


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the Triton path applies to these inputs: Triton installed and the tensors on CUDA (or the
    interpreter switched on, which is how the CPU tests reach the kernels)."""
    if not available():
        return False
    interpret = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    return all(t.is_cuda or interpret for t in tensors)


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


__all__ = ["available", "usable", "polynomial_attention", "linear_attention"]

"""Input checks shared by the attention ops: [B, T, H, D] tensors that agree, masks, states."""

from __future__ import annotations

import torch

from kernelized._checks import check_float_tensor, check_same


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, names=("q", "k", "v")) -> tuple[int, int, int]:
    """q, k ``[B, T, H, F]`` and v ``[B, T, H, Dv]``: float, rank 4, same B, T, H, same F for q and k."""
    for name, x in zip(names, (q, k, v)):
        check_float_tensor(name, x, ndim=4, shape_hint="[B, T, H, D]")
    for axis, what in (
        (0, "batch sizes (axis 0)"),
        (1, "sequence lengths (axis 1)"),
        (2, "head counts (axis 2)"),
    ):
        check_same(names, [x.shape[axis] for x in (q, k, v)], what)
    check_same(names[:2], [q.shape[-1], k.shape[-1]], "feature dims of queries and keys (axis 3)")
    devices = {x.device for x in (q, k, v)}
    if len(devices) > 1:
        raise ValueError(f"{', '.join(names)} must be on one device, got {sorted(map(str, devices))}")
    return q.shape[0], q.shape[1], q.shape[2]


def check_padding_mask(mask: torch.Tensor | None, B: int, T: int, name: str = "key_padding_mask") -> None:
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{name} must be a bool tensor [B, T] with True at padding, got {got}")
    if tuple(mask.shape) != (B, T):
        raise ValueError(f"{name} must have shape [B, T] = {[B, T]}, got {list(mask.shape)}")

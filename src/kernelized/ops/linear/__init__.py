"""Linear attention on features in three forms that agree: parallel (the reference), chunk, recurrent."""

from __future__ import annotations

import torch

from kernelized._checks import check_choice, check_positive_int
from kernelized.ops import cost
from kernelized.ops import triton as _triton
from kernelized.ops._validate import check_padding_mask, check_qkv
from kernelized.ops.linear.bidirectional import bidirectional_linear_attention
from kernelized.ops.linear.chunk import chunk_linear_attention
from kernelized.ops.linear.naive import parallel_linear_attention
from kernelized.ops.linear.recurrent import recurrent_linear_attention

MODES = ("auto", *cost.FORMS)  # auto: the cheapest exact form for the call (ops/cost.py)
State = tuple[torch.Tensor, torch.Tensor]


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
    initial_state: State | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, State | None]:
    """``o_t = sum_s <q_t, k_s> v_s / (sum_s <q_t, k_s> + eps)`` over s <= t (all s when not causal).

    Args:
        q_feat, k_feat: query and key features ``[B, T, H, F]`` (already through the feature map).
        v: values ``[B, T, H, Dv]``.
        causal: attend to s <= t only.
        mode: ``"parallel"`` (masked quadratic, the ground truth), ``"chunk"`` (linear in T, for training) or
            ``"recurrent"`` (token by token, for decoding). All three agree in outputs, states and gradients.
            ``"auto"`` picks the cheapest of them for this call (:func:`kernelized.ops.cost.choose_form`).
        normalize: divide by the kernel sum; otherwise return the unnormalised numerator.
        eps: added to the normaliser.
        chunk_size: tokens per chunk for ``mode="chunk"``.
        key_padding_mask: bool ``[B, T]``, True at padding (torch.nn.MultiheadAttention's convention). Padded
            keys are zeroed after the feature map, so maps with phi(0) != 0 (elu+1) cannot leak into the
            normaliser. Outputs at padded query positions are finite but meaningless.
        initial_state: ``(S [B, H, F, Dv], z [B, H, F])`` from an earlier call: continue that sequence.
        output_final_state: also return the state after the last token.

    Returns:
        ``o [B, T, H, Dv]`` in v's dtype, and ``(S, z)`` in float32 (or None). Accumulation is float32 for
        half-precision inputs (float64 inputs stay float64, for gradcheck).
    """
    B, T, H = check_qkv(q_feat, k_feat, v, names=("q_feat", "k_feat", "v"))
    check_choice("mode", mode, MODES)
    check_positive_int("chunk_size", chunk_size)
    if not (isinstance(eps, (int, float)) and eps >= 0):
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    check_padding_mask(key_padding_mask, B, T)
    F, Dv = q_feat.shape[-1], v.shape[-1]
    if mode == "auto":
        stateful = initial_state is not None or output_final_state
        mode = cost.choose_form(T, F, F, Dv, causal, q_feat.device.type, stateful=stateful, chunk_size=chunk_size)
    if initial_state is not None:
        initial_state = check_state(initial_state, B, H, F, Dv)
        initial_state = tuple(x.to(accumulation_dtype(q_feat, k_feat, v)) for x in initial_state)

    if mode == "chunk" and causal and _triton.usable(q_feat, k_feat, v):  # GPU kernel, same contract
        out = _triton.call("linear", lambda: _triton.linear_attention(
            q_feat, k_feat, v, causal=True, normalize=normalize, eps=eps, chunk_size=chunk_size,
            key_padding_mask=key_padding_mask, initial_state=initial_state, output_final_state=output_final_state,
        ), q_feat.device, q_feat.dtype)  # fmt: skip
        if out is not None:  # None: the kernel cannot run here (it warned once); the PyTorch path below serves
            return out

    out_dtype = v.dtype
    acc = accumulation_dtype(q_feat, k_feat, v)
    q, k, v = (x.to(acc) for x in (q_feat, k_feat, v))
    if mode == "chunk" and not causal:  # masks keys itself (the compiled kernel without a masked copy)
        o, S, z = bidirectional_linear_attention(q, k, v, key_padding_mask, initial_state, eps if normalize else None)
        return o.to(out_dtype), ((S, z) if output_final_state else None)
    if key_padding_mask is not None:
        keep = (~key_padding_mask).to(q.dtype)[:, :, None, None]
        k, v = k * keep, v * keep

    if mode == "chunk":  # causal here (bidirectional returned above); normalises inside, writing the output once
        o, S, z = chunk_linear_attention(q, k, v, initial_state, chunk_size, eps if normalize else None)
    else:
        form = parallel_linear_attention if mode == "parallel" else recurrent_linear_attention
        num, den, S, z = form(q, k, v, causal, initial_state)
        o = num / (den[..., None] + eps) if normalize else num
    return o.to(out_dtype), ((S, z) if output_final_state else None)


def check_state(state, B: int, H: int, F: int, Dv: int, name: str = "initial_state") -> State:
    """A ``(S [B, H, F, Dv], z [B, H, F])`` pair of float tensors."""
    if not (isinstance(state, (tuple, list)) and len(state) == 2):
        raise ValueError(f"{name} must be a pair (S [B, H, F, Dv], z [B, H, F]), got {type(state).__name__}")
    S, z = state
    for part, x, shape in (("S", S, (B, H, F, Dv)), ("z", z, (B, H, F))):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or tuple(x.shape) != shape:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name}[{part}] must be a float tensor of shape {list(shape)}, got {got}")
    return S, z


def accumulation_dtype(*xs: torch.Tensor) -> torch.dtype:
    """float32, or float64 when any input is float64."""
    return torch.float64 if any(x.dtype == torch.float64 for x in xs) else torch.float32

"""BaseConv (zoology / Based): a short depthwise convolution over time, gated by a linear projection."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernelized._checks import check_float_tensor, check_positive_int
from kernelized.layers.mixers import register_mixer


@register_mixer("baseconv")
class BaseConv(nn.Module):
    """``y = conv(x) * proj(x)``: depthwise convolution of ``kernel_size`` taps, gated elementwise.

    Causal convolutions look at the current and ``kernel_size - 1`` previous tokens, and carry those inputs as the
    decoding state ``[B, kernel_size - 1, d_model]``. Bidirectional ones are centred.
    """

    def __init__(self, d_model: int, kernel_size: int = 3, causal: bool = True, bias: bool = True):
        super().__init__()
        self.d_model = check_positive_int("d_model", d_model)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.causal = causal
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.conv = nn.Conv1d(d_model, d_model, kernel_size, groups=d_model, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
        output_state: bool = False,
    ):
        """``x [B, T, D] -> [B, T, D]``; padded positions are zeroed first so they cannot leak into neighbours."""
        check_float_tensor("x", x, ndim=3, shape_hint="[B, T, d_model]")
        if x.shape[-1] != self.d_model:
            raise ValueError(f"x must have d_model={self.d_model} features, got shape {tuple(x.shape)}")
        B, T, D = x.shape
        if key_padding_mask is not None:
            x = x.masked_fill(key_padding_mask[:, :, None], 0.0)
        K = self.kernel_size
        if self.causal:
            past = x.new_zeros(B, K - 1, D) if state is None else state.to(x.dtype)
            ext = torch.cat([past, x], dim=1)  # [B, K - 1 + T, D]
        else:
            if state is not None:
                raise ValueError("state is only defined for a causal BaseConv (causal=True)")
            left = (K - 1) // 2
            ext = F.pad(x, (0, 0, left, K - 1 - left))
        u = self.conv(ext.transpose(1, 2)).transpose(1, 2)  # [B, T, D]
        y = u * self.proj(x)
        if not output_state:
            return y
        if not self.causal:
            raise ValueError("output_state is only defined for a causal BaseConv (causal=True)")
        return y, ext[:, ext.shape[1] - (K - 1) :]

    def state_size(self) -> int:
        return (self.kernel_size - 1) * self.d_model

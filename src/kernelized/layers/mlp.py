"""Feed-forward blocks: GELU (LRA / BERT style) and SwiGLU (Based / LLaMA style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernelized._checks import check_choice, check_positive_int


class MLP(nn.Module):
    """``[B, T, D] -> [B, T, D]``.

    Args:
        d_model: D.
        hidden_dim: default 4 D for ``"gelu"`` and 8 D / 3 rounded up to a multiple of 8 for ``"swiglu"`` (same
            parameter count).
        activation: ``"gelu"`` or ``"swiglu"``.
        dropout: after the activation.
    """

    def __init__(self, d_model: int, hidden_dim: int | None = None, activation: str = "gelu", dropout: float = 0.0):
        super().__init__()
        check_positive_int("d_model", d_model)
        check_choice("activation", activation, ["gelu", "swiglu"])
        if hidden_dim is None:
            hidden_dim = 4 * d_model if activation == "gelu" else 8 * (-(-8 * d_model // 3) // 8)
        check_positive_int("hidden_dim", hidden_dim)
        self.activation = activation
        self.fc_in = nn.Linear(d_model, hidden_dim * (2 if activation == "swiglu" else 1))
        self.fc_out = nn.Linear(hidden_dim, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc_in(x)
        if self.activation == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h)
        return self.fc_out(self.dropout(h))

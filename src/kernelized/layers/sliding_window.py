"""Sliding-window softmax attention (the local-attention layers of the Based LM), with a ring-buffer state.

Query i attends to keys j with ``i - window < j <= i`` (causal) or ``|i - j| < window`` (bidirectional).
Decoding keeps only the last ``window`` keys and values in a ring buffer (slot = position mod window), so
its memory is constant per token, like the kernel layers' recurrent state.

State (causal only), a dict:
  ``k``, ``v``: ``[B, W, H, Dh]`` the cached keys (already rotated) and values, slot ``p % W`` for position p;
  ``pos``: ``[W]`` long, the absolute position in each slot (-1 = empty);
  ``valid``: ``[B, W]`` bool, False for empty slots and padded tokens;
  ``offset``: int, the number of tokens seen (the absolute position of the next token).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernelized._checks import check_positive_int
from kernelized.layers.mixers import register_mixer
from kernelized.layers.rotary import apply_rotary


@register_mixer("sliding_window")
class SlidingWindowAttention(nn.Module):
    """Multi-head softmax attention restricted to a window of recent tokens.

    Args:
        d_model: model width D.
        num_heads: H; head dim Dh = D // H.
        window: W, how many keys each query sees (itself included).
        causal: causal band (and a decoding state) or symmetric band.
        dropout: attention dropout while training.
        rotary: rotate queries and keys by their absolute positions (Based uses rotary here).
        rotary_base: the rotary frequency base.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int = 4,
        window: int = 64,
        causal: bool = True,
        dropout: float = 0.0,
        rotary: bool = True,
        rotary_base: float = 10000.0,
    ):
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("num_heads", num_heads)
        self.window = check_positive_int("window", window)
        if d_model % num_heads:
            raise ValueError(f"d_model must be divisible by num_heads, got d_model={d_model}, num_heads={num_heads}")
        self.d_model, self.num_heads, self.head_dim = d_model, num_heads, d_model // num_heads
        if rotary and self.head_dim % 2:
            raise ValueError(f"rotary needs an even head dim, got d_model/num_heads = {self.head_dim}")
        self.causal, self.dropout, self.rotary, self.rotary_base = causal, dropout, rotary, rotary_base
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def empty_state(self, batch_size: int, device=None, dtype=torch.float32) -> dict:
        W, H, Dh = self.window, self.num_heads, self.head_dim
        return {
            "k": torch.zeros(batch_size, W, H, Dh, device=device, dtype=dtype),
            "v": torch.zeros(batch_size, W, H, Dh, device=device, dtype=dtype),
            "pos": torch.full((W,), -1, dtype=torch.long, device=device),
            "valid": torch.zeros(batch_size, W, dtype=torch.bool, device=device),
            "offset": 0,
        }

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        state: dict | None = None,
        output_state: bool = False,
    ):
        """``x [B, T, D]`` -> ``y [B, T, D]`` (or ``(y, state)``); key_padding_mask: bool ``[B, T]``, True = pad."""
        B, T, _ = x.shape
        if not self.causal and (state is not None or output_state):
            raise ValueError("a decoding state needs causal=True sliding-window attention")
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, self.head_dim).unbind(dim=2)  # each [B, T, H, Dh]
        offset = 0 if state is None else int(state["offset"])
        q_pos = torch.arange(offset, offset + T, device=x.device)
        if self.rotary:
            q, k = apply_rotary(q, q_pos, self.rotary_base), apply_rotary(k, q_pos, self.rotary_base)
        new_valid = torch.ones(B, T, dtype=torch.bool, device=x.device)
        if key_padding_mask is not None:
            new_valid = ~key_padding_mask.to(torch.bool)

        # keys visible to this call: the cached window (if any) followed by the new tokens
        if state is not None:
            keys, values = torch.cat([state["k"], k], 1), torch.cat([state["v"], v], 1)
            k_pos, k_valid = torch.cat([state["pos"], q_pos]), torch.cat([state["valid"], new_valid], 1)
        else:
            keys, values, k_pos, k_valid = k, v, q_pos, new_valid
        dist = q_pos[:, None] - k_pos[None, :]  # [T, S]
        band = (dist >= 0) & (dist < self.window) if self.causal else dist.abs() < self.window
        allowed = band[None] & k_valid[:, None, :] & (k_pos >= 0)[None, None, :]  # [B, T, S]
        empty = ~allowed.any(-1)  # rows with nothing to attend to (e.g. a padded first token): output 0
        allowed = allowed | empty[..., None]
        o = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            keys.transpose(1, 2).to(q.dtype),
            values.transpose(1, 2).to(q.dtype),
            attn_mask=allowed[:, None],
            dropout_p=self.dropout if self.training else 0.0,
        ).transpose(1, 2)  # [B, T, H, Dh]
        o = o.masked_fill(empty[..., None, None], 0.0)
        y = self.out(o.reshape(B, T, self.d_model))
        if not output_state:
            return y
        if state is None:
            state = self.empty_state(B, device=x.device, dtype=k.dtype)
        return y, self._write(state, k, v, q_pos, new_valid)

    def _write(self, state: dict, k, v, pos, valid) -> dict:
        """Put the last min(T, W) new tokens into slots ``pos % W`` (distinct, as the positions are consecutive)."""
        n = min(k.shape[1], self.window)
        k, v, pos, valid = k[:, -n:], v[:, -n:], pos[-n:], valid[:, -n:]
        slots = pos % self.window
        return {
            "k": state["k"].index_copy(1, slots, k.to(state["k"].dtype)),
            "v": state["v"].index_copy(1, slots, v.to(state["v"].dtype)),
            "pos": state["pos"].index_copy(0, slots, pos),
            "valid": state["valid"].index_copy(1, slots, valid),
            "offset": int(pos[-1]) + 1,
        }

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, num_heads={self.num_heads}, window={self.window}, "
            f"causal={self.causal}, rotary={self.rotary}"
        )

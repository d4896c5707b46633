"""Attention layers: projections around a kernel (or softmax) attention op.

Both take ``x [B, T, d_model]`` and return ``[B, T, d_model]``; both carry a state for decoding.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from kernelized import kernels, ops
from kernelized._checks import check_choice, check_float_tensor, check_positive_int
from kernelized.layers import fused
from kernelized.layers.mixers import register_mixer
from kernelized.layers.rotary import apply_rotary
from kernelized.ops.linear import MODES


def _check_x(x: torch.Tensor, d_model: int) -> tuple[int, int]:
    check_float_tensor("x", x, ndim=3, shape_hint="[B, T, d_model]")
    if x.shape[-1] != d_model:
        raise ValueError(f"x must have d_model={d_model} features on its last axis, got shape {tuple(x.shape)}")
    return x.shape[0], x.shape[1]


class KernelAttention(nn.Module):
    """Linear attention with any registered feature map.

    Args:
        d_model: model width.
        num_heads: H.
        feature_dim: d, the per-head query/key size that the feature map receives (16 in ReBased/Based).
        kernel: a name from ``kernels.available()``.
        causal: autoregressive (True) or bidirectional.
        mode: ``"auto"`` (default), ``"parallel"``, ``"chunk"`` or ``"recurrent"``. With ``"parallel"``, kernels
            that are a polynomial of one dot product (rebased, taylor, polynomial) use the implicit form of
            ``ops.polynomial_attention``, as their authors train, unless a state is passed in or asked for.
            ``"auto"`` picks, per call, the cheapest of these exact forms from the call's T, the head sizes, the
            feature count, causality, the device and whether a state is needed (:meth:`form_for`,
            ``ops.cost``): the implicit or parallel form at short T, chunk at long T, recurrent for a decoding step.
        head_dim_v: per-head value size; default ``d_model // num_heads`` (ReBased: 64 // 12 = 5).
        normalize, eps, chunk_size: passed to the op.
        kernel_options: keyword options of the feature map (e.g. ``{"norm_scope": "all"}``).
        bias: bias in the projections.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int = 8,
        feature_dim: int = 16,
        kernel: str = "rebased",
        causal: bool = True,
        mode: str = "auto",
        head_dim_v: int | None = None,
        normalize: bool = True,
        eps: float = 1e-6,
        chunk_size: int = 64,
        kernel_options: dict | None = None,
        bias: bool = False,
    ):
        super().__init__()
        self.d_model = check_positive_int("d_model", d_model)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.feature_dim = check_positive_int("feature_dim", feature_dim)
        check_choice("mode", mode, MODES)
        self.head_dim_v = check_positive_int(
            "head_dim_v (default d_model // num_heads)", head_dim_v or d_model // num_heads
        )
        self.causal, self.mode, self.normalize, self.eps, self.chunk_size = causal, mode, normalize, eps, chunk_size
        self.feature_map = kernels.build(kernel, head_dim=feature_dim, num_heads=num_heads, **(kernel_options or {}))
        self.kernel_name = kernel
        H = num_heads
        self.q_proj = nn.Linear(d_model, H * feature_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, H * feature_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, H * self.head_dim_v, bias=bias)
        self.o_proj = nn.Linear(H * self.head_dim_v, d_model, bias=bias)

    def _qkv(self, x: torch.Tensor):
        B, T = x.shape[:2]
        q = self.q_proj(x).view(B, T, self.num_heads, self.feature_dim)
        k = self.k_proj(x).view(B, T, self.num_heads, self.feature_dim)
        v = self.v_proj(x).view(B, T, self.num_heads, self.head_dim_v)
        return q, k, v

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
        output_state: bool = False,
        mode: str | None = None,
    ):
        """``x [B, T, d_model] -> y [B, T, d_model]``, and the state ``(S [B,H,F,Dv], z [B,H,F])`` if asked.

        ``mode`` overrides the layer's mode for this call (e.g. prefill with "chunk", decode with "recurrent").
        """
        B, T = _check_x(x, self.d_model)
        mode = self.mode if mode is None else mode
        check_choice("mode", mode, MODES)
        if mode == "auto":
            mode = self.form_for(x, stateful=state is not None or output_state)
        self.feature_map.on_forward(continuing=state is not None)
        q, k, v = self._qkv(x)
        form = self.feature_map.polynomial_form
        if mode == "parallel" and form is not None and state is None and not output_state:
            o = ops.polynomial_attention(
                self.feature_map.project_query(q),
                self.feature_map.project_key(k),
                v,
                terms=form.terms,
                scale=form.scale,
                causal=self.causal,
                normalize=self.normalize,
                eps=self.eps,
                key_padding_mask=key_padding_mask,
            )
            new_state = None
        elif (operands := self._fused_operands(q, k, v, mode, state, output_state)) is not None:
            o = fused.features_bidirectional_attention(
                operands, v, key_padding_mask, self.eps if self.normalize else None
            )
            new_state = None
        else:
            q_feat, k_feat = self.feature_map.query_key(q, k)
            # maps that keep half-precision inputs' features in float32 (ReBased): v joins them, so the op sees
            # one dtype (and a GPU keeps its Triton kernel); the output returns to v's dtype below
            v_in = v.to(q_feat.dtype) if q_feat.dtype != v.dtype and q_feat.dtype == torch.float32 else v
            o, new_state = ops.linear_attention(
                q_feat,
                k_feat,
                v_in,
                causal=self.causal,
                mode=mode,
                normalize=self.normalize,
                eps=self.eps,
                chunk_size=self.chunk_size,
                key_padding_mask=key_padding_mask,
                initial_state=state,
                output_final_state=output_state,
            )
        y = self.o_proj(o.to(v.dtype).reshape(B, T, self.num_heads * self.head_dim_v))
        return (y, new_state) if output_state else y

    def _fused_operands(self, q, k, v, mode: str, state, output_state: bool):
        """The random features' operands for the fused bidirectional path (layers/fused.py), or None where the call
        takes the two-step path: causal, not the chunk form, a state in or out, or inputs the kernels do not take."""
        if self.causal or mode != "chunk" or state is not None or output_state or not fused.usable(q, k, v):
            return None
        return self.feature_map.query_key_operands(q, k)

    def form_for(self, x: torch.Tensor, stateful: bool = False) -> str:
        """The exact form ``mode="auto"`` runs for input ``x [B, T, d_model]``: ``"parallel"`` (the implicit form
        for polynomial maps), ``"chunk"`` or ``"recurrent"`` (``stateful``: a state goes in or comes out)."""
        return ops.cost.choose_form(
            x.shape[1], self.feature_dim, self.feature_map.feature_dim, self.head_dim_v, self.causal,
            x.device.type, polynomial=self.feature_map.polynomial_form is not None, stateful=stateful,
            chunk_size=self.chunk_size,
        )  # fmt: skip

    @torch.no_grad()
    def attention_weights(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The normalised weights this layer applies, ``[B, H, T, T]``: ``A_ts / (sum_s A_ts + eps)``.

        Rows sum to 1 up to the eps of the normaliser (``o = W v`` exactly, before the output projection).
        Random feature maps keep their current draw (the one the last forward used).
        """
        B, T = _check_x(x, self.d_model)
        # an analysis reads the current draw of a random map; it must not advance the draw policy
        q, k, _ = self._qkv(x)
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        A = torch.einsum("bthf,bshf->bhts", self.feature_map.query(q).to(acc), self.feature_map.key(k).to(acc))
        if self.causal:
            A = A.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=x.device).tril(), 0.0)
        if key_padding_mask is not None:
            A = A.masked_fill(key_padding_mask[:, None, None, :], 0.0)
        return A / (A.sum(-1, keepdim=True) + self.eps)

    def state_size(self) -> int:
        """Numbers in the recurrent state per sequence: H * F * (Dv + 1) (the +1 is the normaliser)."""
        return self.num_heads * self.feature_map.feature_dim * (self.head_dim_v + 1)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel_name!r}, causal={self.causal}, mode={self.mode!r}, head_dim_v={self.head_dim_v}"


@register_mixer("kernel")
def kernel_mixer(
    d_model: int, kernel: str = "rebased", kernel_options: dict | None = None, **options
) -> KernelAttention:
    """The ``{"mixer": "kernel", ...}`` spec: KernelAttention's arguments, and the kernel's own options either flat
    (``{"kernel": "gmm-prf", "num_features": 128}``, as in the README) or under ``kernel_options``."""
    layer_args = set(inspect.signature(KernelAttention.__init__).parameters) - {"self"}
    flat = {k: v for k, v in options.items() if k not in layer_args}
    unknown = sorted(set(flat) - set(kernels.options(kernel)))
    if unknown:
        raise ValueError(
            f"mixer 'kernel' got unknown options {unknown}; it accepts {sorted(layer_args - {'d_model'})} "
            f"and the options of kernel {kernel!r}: {sorted(kernels.options(kernel))}"
        )
    layer = {k: v for k, v in options.items() if k in layer_args}
    return KernelAttention(d_model, kernel=kernel, kernel_options={**flat, **(kernel_options or {})}, **layer)


@register_mixer("softmax")
class SoftmaxAttention(nn.Module):
    """Multi-head softmax attention with the same interface; its state is a KV cache.

    Args:
        d_model, num_heads, causal: as in :class:`KernelAttention`.
        head_dim: per-head size; default ``d_model // num_heads``.
        dropout: attention dropout (training only).
        rotary: rotate q and k by their absolute positions (rotary embeddings; the KV cache's length is the
            offset of a decoding step).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int = 1,
        causal: bool = True,
        head_dim: int | None = None,
        dropout: float = 0.0,
        bias: bool = False,
        rotary: bool = False,
    ):
        super().__init__()
        self.d_model = check_positive_int("d_model", d_model)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.head_dim = check_positive_int("head_dim (default d_model // num_heads)", head_dim or d_model // num_heads)
        self.causal, self.dropout = causal, float(dropout)
        self.rotary = bool(rotary)
        if self.rotary and self.head_dim % 2:
            raise ValueError(f"rotary needs an even head_dim, got {self.head_dim}")
        inner = num_heads * self.head_dim
        self.q_proj = nn.Linear(d_model, inner, bias=bias)
        self.k_proj = nn.Linear(d_model, inner, bias=bias)
        self.v_proj = nn.Linear(d_model, inner, bias=bias)
        self.o_proj = nn.Linear(inner, d_model, bias=bias)

    def _qkv(self, x: torch.Tensor, offset: int = 0):
        B, T = x.shape[:2]
        shape = (B, T, self.num_heads, self.head_dim)
        q, k, v = self.q_proj(x).view(shape), self.k_proj(x).view(shape), self.v_proj(x).view(shape)
        if self.rotary:  # positions offset .. offset + T - 1; cached keys are stored already rotated
            positions = torch.arange(offset, offset + T, device=x.device)
            q, k = apply_rotary(q, positions), apply_rotary(k, positions)
        return q, k, v

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        state: dict | None = None,
        output_state: bool = False,
    ):
        """``x [B, T, d_model] -> [B, T, d_model]``; state = ``{"k", "v": [B, S, H, D], "pad": [B, S] bool}``."""
        B, T = _check_x(x, self.d_model)
        q, k, v = self._qkv(x, offset=0 if state is None else state["k"].shape[1])
        pad = key_padding_mask if key_padding_mask is not None else torch.zeros(B, T, dtype=torch.bool, device=x.device)
        if state is not None:  # continue after the cached keys: queries sit at positions S..S+T-1
            k, v = torch.cat([state["k"], k], 1), torch.cat([state["v"], v], 1)
            pad = torch.cat([state["pad"], pad], 1)
        y = self._attend(q, k, v, pad)
        y = self.o_proj(y.reshape(B, T, -1))
        return (y, {"k": k, "v": v, "pad": pad}) if output_state else y

    def _attend(self, q, k, v, pad):
        T, S = q.shape[1], k.shape[1]
        if T == S and not pad.any():
            return ops.softmax_attention(q, k, v, causal=self.causal, dropout_p=self.dropout if self.training else 0.0)
        allowed = ~pad[:, None, None, :]  # [B, 1, 1, S]
        if self.causal:  # query t (absolute S - T + t) sees keys s <= S - T + t
            allowed = allowed & torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
        empty = ~allowed.any(-1, keepdim=True)
        qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))
        o = nn.functional.scaled_dot_product_attention(
            qh, kh, vh, attn_mask=allowed | empty, dropout_p=self.dropout if self.training else 0.0
        )
        return o.masked_fill(empty, 0.0).transpose(1, 2)

    @torch.no_grad()
    def attention_weights(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Softmax weights ``[B, H, T, T]``."""
        B, T = _check_x(x, self.d_model)
        q, k, _ = self._qkv(x)
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        logits = torch.einsum("bthd,bshd->bhts", q.to(acc), k.to(acc)) * self.head_dim**-0.5
        if self.causal:
            logits = logits.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=x.device).tril(), float("-inf"))
        if key_padding_mask is not None:
            logits = logits.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        return torch.softmax(logits, -1).nan_to_num(0.0)

    def state_size(self, seq_len: int) -> int:
        """KV-cache numbers per sequence after ``seq_len`` tokens: 2 * T * H * D."""
        return 2 * seq_len * self.num_heads * self.head_dim

"""Polynomial kernels of one dot product: Based's Taylor map, ReBased and its higher degrees.

All three use the compact symmetric-tensor features: for degree p, one feature per multiset
alpha of p indices, ``sqrt(p! / prod(alpha_i!)) * prod_i x[alpha_i]``, so that
``<phi_p(x), phi_p(y)> = (x . y)**p`` with ``C(d + p - 1, p)`` features (136 for d = 16, p = 2).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from functools import cache

import torch
from torch import nn

from kernelized import cpu as _cpu
from kernelized._checks import check_choice, check_positive_int
from kernelized.kernels.base import FeatureMap, PolynomialForm
from kernelized.kernels.registry import register


@cache
def _coefficients(dim: int, degree: int) -> torch.Tensor:
    """``sqrt(multinomial)`` of each degree-p monomial ``[F]`` (float64), in the order of
    ``itertools.combinations_with_replacement(range(dim), degree)``."""
    combos = itertools.combinations_with_replacement(range(dim), degree)
    coef = [
        math.sqrt(math.factorial(degree) / math.prod(math.factorial(c) for c in Counter(t).values())) for t in combos
    ]
    return torch.tensor(coef, dtype=torch.float64)


def monomial_features(x: torch.Tensor, degree: int, scale: float = 1.0) -> torch.Tensor:
    """Compact degree-p features of ``x [..., d]`` times ``scale``: ``[..., C(d+p-1, p)]`` with ``<phi(x), phi(y)> =
    scale^2 (x.y)^p`` (the scale rides on the coefficients: no extra pass over the features).

    Built degree by degree in the order of ``_coefficients``: the degree-p products starting with index i are
    ``x_i`` times the degree-(p-1) products of indices >= i, which are a suffix of the degree-(p-1) list. This
    is d slices and one concatenation per degree; gathering with an index tensor instead ran 2x slower forward
    and backward (its backward is an accumulating index_put).
    """
    if degree == 0:
        return x.new_full((*x.shape[:-1], 1), scale)
    if degree == 2 and _cpu.usable(x):  # ReBased's and Based's quadratic part: one compiled pass per row
        return _CompiledQuadratic.apply(x, scale, None)
    return _sliced_monomial_features(x, degree, scale)


def taylor_features(x: torch.Tensor, linear: float, quadratic: float) -> torch.Tensor:
    """Based's ``[1, linear * x, quadratic * phi_2(x)]``: ``x [..., d] -> [..., 1 + d + d(d+1)/2]``, written once."""
    if _cpu.usable(x):
        return _CompiledQuadratic.apply(x, quadratic, linear)
    return taylor_reference(x, linear, quadratic)


def _sliced_monomial_features(x: torch.Tensor, degree: int, scale: float = 1.0) -> torch.Tensor:
    """``monomial_features`` in torch ops (the reference, and the path for other degrees and devices)."""
    d = x.shape[-1]
    feats = x
    for p in range(2, degree + 1):
        n = feats.shape[-1]
        feats = torch.cat([x[..., i : i + 1] * feats[..., n - num_monomials(d - i, p - 1) :] for i in range(d)], -1)
    return feats * (scale * _coefficients(d, degree)).to(device=x.device, dtype=x.dtype)


class _CompiledQuadratic(torch.autograd.Function):
    """``scale * phi_2(x)`` (``linear`` None) or Based's ``[1, linear * x, scale * phi_2(x)]`` by the compiled CPU
    kernel (``kernelized/cpu/features.cpp``), which writes the monomials straight into their slice of the output:
    the same values in the same order as the torch-op reference, one pass over the rows, shared out over torch's
    OpenMP threads by the kernel. A backward that must itself be differentiable (``create_graph=True``) goes
    through the reference."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float, linear: float | None) -> torch.Tensor:
        d = x.shape[-1]
        xc = x.contiguous()
        coef = (scale * _coefficients(d, 2)).to(x.dtype)
        start = 0 if linear is None else 1 + d  # where the monomials begin in each row
        out = x.new_empty(*x.shape[:-1], start + coef.numel())
        if linear is not None:
            out[..., 0] = 1.0
            torch.mul(x, linear, out=out[..., 1:start])
        fn = _cpu.library().monomials2_forward[_cpu.DTYPES[x.dtype]]
        size, ldo = x.element_size(), out.shape[-1]
        fn(xc.data_ptr(), xc.numel() // d, d, coef.data_ptr(), out.data_ptr() + start * size, ldo)
        ctx.save_for_backward(x)
        ctx.scale, ctx.linear = scale, linear
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        scale, linear = ctx.scale, ctx.linear
        if torch.is_grad_enabled():  # double backward: differentiate the torch-op reference
            ref = _sliced_monomial_features(x, 2, scale) if linear is None else taylor_reference(x, linear, scale)
            return torch.autograd.grad(ref, x, grad, create_graph=True)[0], None, None
        d = x.shape[-1]
        xc, g = x.contiguous(), grad.contiguous()
        coef = (scale * _coefficients(d, 2)).to(x.dtype)
        start = 0 if linear is None else 1 + d
        dx = torch.empty_like(xc)
        fn = _cpu.library().monomials2_backward[_cpu.DTYPES[x.dtype]]
        fn(xc.data_ptr(), g.data_ptr() + start * g.element_size(), g.shape[-1], xc.numel() // d, d, coef.data_ptr(),
           dx.data_ptr())  # fmt: skip
        if linear is not None:
            dx.add_(g[..., 1:start], alpha=linear)
        return dx, None, None


def taylor_reference(x: torch.Tensor, linear: float, quadratic: float) -> torch.Tensor:
    """:func:`taylor_features` in torch ops."""
    parts = [x.new_ones(*x.shape[:-1], 1), x * linear, _sliced_monomial_features(x, 2, quadratic)]
    return torch.cat(parts, dim=-1)


def num_monomials(dim: int, degree: int) -> int:
    return math.comb(dim + degree - 1, degree)


@register("taylor")
class TaylorFeatureMap(FeatureMap):
    """Based (Arora et al., 2024): the 2nd-order Taylor expansion of exp.

    ``kernel(q, k) = 1 + s + s**2 / 2`` with ``s = q.k / sqrt(d)``; its minimum is 0.5 (at s = -1), so Based
    cannot give a pair zero weight. Features ``[1, x / d**(1/4), phi_2(x) / sqrt(2 d)]``: 1 + d + d(d+1)/2
    (153 for d = 16).
    """

    @property
    def feature_dim(self) -> int:
        return 1 + self.head_dim + num_monomials(self.head_dim, 2)

    @property
    def polynomial_form(self) -> PolynomialForm:
        return PolynomialForm(terms={0: 1.0, 1: 1.0, 2: 0.5}, scale=self.head_dim**-0.5)

    def features(self, x: torch.Tensor, role: str) -> torch.Tensor:
        d = self.head_dim
        return taylor_features(x, d**-0.25, (2 * d) ** -0.5)

    def kernel(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        s = (q * k).sum(-1) * self.head_dim**-0.5
        return 1 + s + 0.5 * s * s


@register("polynomial")
class PolynomialFeatureMap(FeatureMap):
    """ReBased's kernel at any degree p: ``kernel(q, k) = (q~ . k~ / sqrt(d))**p``.

    ``x~ = gamma * norm(x) + beta`` with separate (gamma, beta) for queries and keys, each ``[H, d]``,
    initialised to 1 and 0. The flags give every ablation of the ReBased paper: ``x^p`` (all off),
    ``norm(x)^p``, ``(gamma x)^p``, ``(gamma x + beta)^p``, ``(gamma norm(x))^p``, ``(gamma norm(x) + beta)^p``.

    Args:
        degree: p >= 1. Even degrees give a non-negative kernel; odd ones can make the normaliser vanish.
        use_gamma, use_beta: learn the per-role scale and shift.
        normalize: layer-normalise (no affine) before the scale and shift.
        norm_scope: ``"head"`` normalises each head's d features (fla); ``"all"`` normalises all H*d
            features of a token jointly (the ReBased authors' MQAR code). Only with ``normalize=True``.
        norm_eps: the layer norm's epsilon.
    """

    per_head = True

    def __init__(
        self,
        head_dim: int,
        num_heads: int = 1,
        degree: int = 2,
        use_gamma: bool = True,
        use_beta: bool = True,
        normalize: bool = True,
        norm_scope: str | None = None,
        norm_eps: float = 1e-5,
    ):
        super().__init__(head_dim, num_heads)
        self.degree = check_positive_int("degree", degree)
        if norm_scope is not None and not normalize:
            raise ValueError(
                f"norm_scope applies only with normalize=True, got norm_scope={norm_scope!r}, normalize=False"
            )
        norm_scope = "head" if norm_scope is None else norm_scope
        check_choice("norm_scope", norm_scope, ["head", "all"])
        self.use_gamma, self.use_beta, self.normalize = bool(use_gamma), bool(use_beta), bool(normalize)
        self.norm_scope, self.norm_eps = norm_scope, float(norm_eps)
        shape = (num_heads, head_dim)
        for role in ("q", "k"):
            if self.use_gamma:
                self.register_parameter(f"gamma_{role}", nn.Parameter(torch.ones(shape)))
            if self.use_beta:
                self.register_parameter(f"beta_{role}", nn.Parameter(torch.zeros(shape)))

    @property
    def feature_dim(self) -> int:
        return num_monomials(self.head_dim, self.degree)

    @property
    def polynomial_form(self) -> PolynomialForm:
        return PolynomialForm(terms={self.degree: 1.0}, scale=self.head_dim**-0.5)

    def _transform(self, x: torch.Tensor, role: str) -> torch.Tensor:
        """``gamma * norm(x) + beta``. The norm is ``(x - mean) / sqrt(var + eps)`` (biased variance) over the head's
        d features or all H*d, i.e. torch's fused layer_norm: ``x.var`` over a 16-wide axis took 30 ms a call at
        the MQAR shape, longer than the attention it feeds."""
        gamma = getattr(self, f"gamma_{role}").to(x.dtype) if self.use_gamma else None
        beta = getattr(self, f"beta_{role}").to(x.dtype) if self.use_beta else None
        if self.normalize:
            shape = x.shape[-1:] if self.norm_scope == "head" else x.shape[-2:]
            if self.norm_scope == "all":  # [H, d] affine parameters match the normalised shape: one fused op
                return torch.nn.functional.layer_norm(x, shape, gamma, beta, self.norm_eps)
            x = torch.nn.functional.layer_norm(x, shape, eps=self.norm_eps)
        if gamma is not None and beta is not None:
            return torch.addcmul(beta, x, gamma)
        if gamma is not None:
            return x * gamma
        return x + beta if beta is not None else x

    def project_query(self, x: torch.Tensor) -> torch.Tensor:
        return self._transform(self.check_input(x, "q"), "q")

    def project_key(self, x: torch.Tensor) -> torch.Tensor:
        return self._transform(self.check_input(x, "k"), "k")

    def features(self, x: torch.Tensor, role: str) -> torch.Tensor:
        """Half-precision inputs give float32 features: normalised inputs' degree-p products rounded to bf16 lose
        the small kernel values of the first tokens' normalisers (10 % output error at the first tokens, up to
        ~0.9 relative gradient error in the chunk and recurrent forms); the ops accumulate in float32 anyway."""
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        x = self._transform(x, "q" if role == "query" else "k")
        return monomial_features(x, self.degree, self.head_dim ** (-self.degree / 4))

    def kernel(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        s = (self.project_query(q) * self.project_key(k)).sum(-1) * self.head_dim**-0.5
        return s**self.degree

    def extra_repr(self) -> str:
        flags = f"use_gamma={self.use_gamma}, use_beta={self.use_beta}, normalize={self.normalize}"
        scope = f", norm_scope={self.norm_scope!r}" if self.normalize else ""
        return f"{super().extra_repr()}, degree={self.degree}, {flags}{scope}"


@register("rebased")
class ReBasedFeatureMap(PolynomialFeatureMap):
    """ReBased (Aksenov et al., 2024): ``(q~ . k~)**2 / d`` with ``x~ = gamma * norm(x) + beta``.

    Its kernel reaches 0 for orthogonal q~, k~ (Based's never falls below 0.5). Compact features:
    d(d+1)/2 (136 for d = 16). The degree-2 case of ``polynomial``; see it for the flags.
    """

    def __init__(
        self,
        head_dim: int,
        num_heads: int = 1,
        use_gamma: bool = True,
        use_beta: bool = True,
        normalize: bool = True,
        norm_scope: str | None = None,
        norm_eps: float = 1e-5,
    ):
        super().__init__(head_dim, num_heads, 2, use_gamma, use_beta, normalize, norm_scope, norm_eps)

"""Learned Gaussian-mixture spectra ("Learning the Transformer Kernel", Chowdhury et al., 2022): GMM-RKS, GMM-PRF.

Each head h owns a mixture of C Gaussians over frequencies, ``p_h(w) = sum_c pi_hc N(w; mu_hc, Sigma_hc)``, with
learned weights ``pi = softmax(theta)`` (only when C > 1), means ``mu`` and covariances, either full
``Sigma = L' L`` (``w = L' eps + mu``) or diagonal ``Sigma = diag(exp(ell))`` (``w = eps * exp(ell / 2) + mu``).
Frequencies are sampled by the reparameterisation trick from noise ``eps ~ N(0, I)``, so gradients reach L, ell,
mu and theta. Sampling is stratified: the M noise rows split evenly over the C components (M % C == 0), and a
component's features carry the weight ``pi_c / (M / C)``, which is how gradients reach the mixture weights too.

**What "C" is.** The published code has no mixture weights: each head holds exactly one Gaussian (GMM-RKS uses it
as the symmetric pair +-mu), so its "mixture" is the H heads' H components, one per head. Here C counts
components *within* a head; C = 1 (the default) is exactly the published code, layer for layer.

GMM-RKS keeps the code's symmetric pair: every noise row gives the two frequencies ``L' eps +- mu``, with
features ``sqrt(pi_c / (M/C)) [cos, sin]`` for each, so ``F = 4M (+1)`` and the kernel is
``K(q, k) = sum_c pi_c 2 exp(-d' Sigma_c d / 2) cos(mu_c . d) + s^2``, ``d = q~ - k~``
(the factor 2 is the code's ``sqrt(4/n)`` scaling; it sets the balance against the smoothing s).
GMM-PRF: ``phi(x) = [sqrt(pi_c / (M/C)) exp(w.x~ - c|x~|^2)]`` (c = 1 as in the code), ``F = M``, and with
``t = q~ + k~``: ``K(q, k) = sum_c pi_c exp(mu_c . t + t' Sigma_c t / 2) exp(-c(|q~|^2 + |k~|^2))``
(``cosh(mu_c . t)`` in place of ``exp(mu_c . t)`` with the hyperbolic pair).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kernelized._checks import check_choice, check_positive_int
from kernelized.kernels.random_features import (
    RandomFeatureMap,
    check_num_features,
    default_num_features,
    gaussian_noise,
    head_matmul,
)
from kernelized.kernels.registry import register


class _GaussianMixture(RandomFeatureMap):
    """Shared parameters, sampling and closed forms of ``gmm-rks`` and ``gmm-prf``."""

    def __init__(
        self,
        head_dim: int,
        num_heads: int,
        num_features: int | None,
        num_components: int,
        covariance: str,
        orthogonal: bool,
        **base,
    ):
        super().__init__(head_dim, num_heads, **base)
        self.m = check_num_features(num_features, default_num_features(head_dim))
        self.num_components = C = check_positive_int("num_components", num_components)
        if self.m % C:
            raise ValueError(
                f"num_features must be a multiple of num_components={C} (stratified sampling), got {self.m}"
            )
        check_choice("covariance", covariance, ["full", "diag"])
        self.covariance, self.orthogonal = covariance, bool(orthogonal)
        H, d = num_heads, head_dim
        rks = self.estimator == "rks"
        # Initialisation as in the KL code (for C = 1): GMM-RKS xavier_uniform on (H, d, d) and mu ~ U(+-1/d);
        # GMM-PRF log-variances xavier_uniform on (H, d) and mu ~ U(+-1/sqrt(d)).
        mean_bound = 1 / d if rks else 1 / math.sqrt(d)
        self.mean = nn.Parameter(torch.empty(H, C, d).uniform_(-mean_bound, mean_bound))
        if covariance == "full":
            bound = math.sqrt(6 / (d * d + H * d))
            init = torch.empty(H, C, d, d).uniform_(-bound, bound)
            if not rks:  # PRF: start at Sigma ~ I (a tiny Sigma would make the PRF kernel ignore q . k)
                init = init + torch.eye(d)
            self.sigma = nn.Parameter(init)  # L, Sigma = L' L
        else:
            bound = math.sqrt(6 / (d + H))
            self.log_var = nn.Parameter(torch.empty(H, C, d).uniform_(-bound, bound))
        if C > 1:
            self.logits = nn.Parameter(torch.empty(H, C).uniform_(-0.25, 0.25))

    @property
    def per_component(self) -> int:
        return self.m // self.num_components

    def mixture_weights(self) -> torch.Tensor:
        """pi ``[H, C]``."""
        if self.num_components == 1:
            return self.mean.new_ones(self.num_heads, 1)
        return torch.softmax(self.logits, dim=-1)

    def draw(self, generator):
        a = self._anchor
        dev = a.device if generator is None else generator.device
        eps = gaussian_noise(self.num_heads, self.m, self.head_dim, self.orthogonal, generator, device=dev)
        return {"eps": eps.to(device=a.device, dtype=a.dtype)}

    def _components(self, noise) -> tuple[torch.Tensor, torch.Tensor]:
        """``z = L' eps`` (or ``eps * std``) ``[H, C, M/C, d]`` and ``mu [H, C, 1, d]``."""
        H, C, d = self.num_heads, self.num_components, self.head_dim
        eps = noise["eps"].reshape(H, C, self.per_component, d)
        if self.covariance == "full":
            z = eps @ self.sigma.to(eps.dtype)  # rows eps' L, i.e. w = L' eps
        else:
            z = eps * torch.exp(0.5 * self.log_var.to(eps.dtype)).unsqueeze(2)
        return z, self.mean.to(eps.dtype).unsqueeze(2)

    def _quad(self, x: torch.Tensor) -> torch.Tensor:
        """``x' Sigma_c x`` for ``x [..., H, d]`` -> ``[..., H, C]``."""
        if self.covariance == "full":
            lx = (self.sigma.to(x.dtype) @ x[..., None, :, None]).squeeze(-1)  # L x, [..., H, C, d]
            return (lx * lx).sum(-1)
        return head_matmul(x * x, torch.exp(self.log_var))

    def _dot_mean(self, x: torch.Tensor) -> torch.Tensor:
        return head_matmul(x, self.mean)

    def gaussian_moments(self, x):
        if self.orthogonal:
            return None
        pi = self.mixture_weights().to(x.dtype)
        return pi * pi / self.per_component, self._dot_mean(x), self._quad(x)

    def no_closed_form_reason(self) -> str:
        if self.orthogonal:
            return "orthogonal noise rows are not independent; build it with orthogonal=False for the closed form"
        return super().no_closed_form_reason()

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, num_features={self.m}, num_components={self.num_components}, "
            f"covariance={self.covariance!r}"
        )


@register("gmm-rks")
class GaussianMixtureRKS(_GaussianMixture):
    """GMM-RKS: cos/sin features of a learned Gaussian-mixture spectrum (the KL code's ``mix-gauss-fourier``).

    ``kernel(q, k) = sum_c pi_c 2 exp(-d' Sigma_c d / 2) cos(mu_c . d) + s^2`` with ``d = q~ - k~`` (a spectral-
    mixture kernel); features ``4M + 1``: M = pow2cast(d ln d) noise rows, each giving the pair ``L' eps +- mu``.

    Args:
        num_features: M noise rows (default pow2cast(d ln d)); a multiple of num_components.
        num_components: C Gaussians per head (C = 1: the published code, no weights).
        covariance: ``"full"`` (``Sigma = L' L``, the code's GMM-RKS) or ``"diag"``.
        orthogonal: orthogonal noise rows.
        smoothing: the constant feature s (1.0; the code uses 0.36 on Text).
        redraw, eval_draw, seed, scale: the draw policy and input scale (default: redraw every step).
    """

    def __init__(
        self,
        head_dim: int,
        num_heads: int = 1,
        num_features: int | None = None,
        num_components: int = 1,
        covariance: str = "full",
        orthogonal: bool = False,
        smoothing: float | None = 1.0,
        redraw: str | int = "step",
        eval_draw: str = "fixed",
        seed: int = 0,
        scale: float | None = None,
    ):
        super().__init__(
            head_dim, num_heads, num_features, num_components, covariance, orthogonal, estimator="rks",
            redraw=redraw, eval_draw=eval_draw, seed=seed, scale=scale, smoothing=smoothing,
        )  # fmt: skip
        self._init_draws()

    paired_rows = True  # each noise row gives z + mu and z - mu

    @property
    def num_frequencies(self) -> int:
        return 2 * self.m

    def frequencies(self, noise):
        z, mu = self._components(noise)
        return torch.cat([z + mu, z - mu], dim=2).reshape(self.num_heads, 2 * self.m, self.head_dim)

    def weights(self, noise):
        w = self.mixture_weights().to(self._anchor.dtype) / self.per_component  # [H, C]
        return w.unsqueeze(-1).expand(-1, -1, 2 * self.per_component).reshape(self.num_heads, 2 * self.m)

    def kernel(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        q, k = self._scaled_pair(q, k)
        d = q - k
        comp = 2 * torch.exp(-0.5 * self._quad(d)) * torch.cos(self._dot_mean(d))  # [..., H, C]
        s2 = self.smoothing**2 if self.smoothing is not None else 0.0
        return (self.mixture_weights().to(q.dtype) * comp).sum(-1) + s2


@register("gmm-prf")
class GaussianMixturePRF(_GaussianMixture):
    """GMM-PRF: positive features of a learned Gaussian-mixture spectrum (the KL code's ``mix-gauss-positive``).

    ``kernel(q, k) = sum_c pi_c exp(mu_c . t + t' Sigma_c t / 2) exp(-c(|q~|^2 + |k~|^2))``, ``t = q~ + k~``: with
    mu = 0, Sigma = I and c = 1 the Gaussian kernel ``exp(-|q~ - k~|^2 / 2)``. M = pow2cast(d ln d) features.

    Args:
        num_features: M frequencies (default pow2cast(d ln d)); a multiple of num_components.
        num_components: C Gaussians per head (C = 1: the published code).
        covariance: ``"diag"`` (the code's log-variance vector) or ``"full"`` (``Sigma = L' L``, L starts at I).
        orthogonal: orthogonal noise rows.
        hyperbolic: the +-w pair (the code's GMM-PRF has none); F = 2M.
        norm_offset: c in ``exp(w.x - c|x|^2)``: 1 as in the code (0.5 is FAVOR+'s).
        stabilize: the overflow stabiliser (see :mod:`kernelized.kernels.random_features`).
        redraw, eval_draw, seed, scale: the draw policy and input scale (default: redraw every step).
    """

    def __init__(
        self,
        head_dim: int,
        num_heads: int = 1,
        num_features: int | None = None,
        num_components: int = 1,
        covariance: str = "diag",
        orthogonal: bool = False,
        hyperbolic: bool = False,
        norm_offset: float = 1.0,
        stabilize: bool = True,
        redraw: str | int = "step",
        eval_draw: str = "fixed",
        seed: int = 0,
        scale: float | None = None,
    ):
        super().__init__(
            head_dim, num_heads, num_features, num_components, covariance, orthogonal, estimator="prf",
            redraw=redraw, eval_draw=eval_draw, seed=seed, scale=scale, hyperbolic=hyperbolic,
            norm_offset=norm_offset, stabilize=stabilize,
        )  # fmt: skip
        self._init_draws()

    @property
    def num_frequencies(self) -> int:
        return self.m

    def frequencies(self, noise):
        z, mu = self._components(noise)
        return (z + mu).reshape(self.num_heads, self.m, self.head_dim)

    def weights(self, noise):
        w = self.mixture_weights().to(self._anchor.dtype) / self.per_component
        return w.unsqueeze(-1).expand(-1, -1, self.per_component).reshape(self.num_heads, self.m)

    def kernel(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        q, k = self._scaled_pair(q, k)
        t = q + k
        lin = self._dot_mean(t)
        log_comp = 0.5 * self._quad(t) + (0.0 if self.hyperbolic else lin)
        comp = torch.exp(log_comp) * (torch.cosh(lin) if self.hyperbolic else 1.0)
        base = -self.norm_offset * ((q * q).sum(-1) + (k * k).sum(-1))
        return (self.mixture_weights().to(q.dtype) * comp).sum(-1) * torch.exp(base)

"""FastFood spectra (Le, Sarlos & Smola, 2013), learned as in "Learning the Transformer Kernel": FastFood-RKS/PRF.

The frequencies are the rows of ``V = D**(-1/2) diag(S) H diag(G) Pi H diag(B)``: H the unnormalised Walsh-Hadamard
matrix (D x D, D a power of two), Pi a random permutation, B, G, S diagonals. ``V x`` costs O(D log D) instead of
O(D^2). Head dims d that are not powers of two are zero-padded to D = next power of two (only V's first d
columns matter). M = ``num_blocks * D`` frequencies: each block of D rows has its own permutation.

* ``learn=True`` (the KL code's ``fsgb``): S, G, B are learned, ``[H, D]`` per head, shared by the blocks; only Pi
  is random, redrawn by the draw policy. Initialisation ``init="reference"`` is the code's (each entry N(0, 1/D),
  which makes V tiny: the kernel starts nearly constant), ``init="rbf"`` starts from the classic FastFood draw.
  No closed form exists: :meth:`kernel` returns the estimator's expectation over ``kernel_samples`` frequencies
  from ``kernel_samples / D`` permutations drawn from a fixed seed (deterministic; its own relative Monte-Carlo
  error is ~ ``kernel_samples**-1/2``).
* ``learn=False`` (the code's ``rbf-fastfood``): B Rademacher, G ~ N(0, I), S = chi_D / |G| are drawn per block
  with Pi, so every row of V is exactly N(0, I_D): the Gaussian kernel, and :meth:`kernel` is its closed form.

Fixes the published FastFood-PRF, whose constructor calls ``super()`` on a class it does not inherit from and so
cannot be built. Defaults: M = D frequencies (the code's exact d), smoothing s = 1 for RKS (2D + 1 features),
c = 1 for PRF (D features); x~ = d**(-1/4) x.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kernelized._checks import check_choice, check_positive_int
from kernelized.kernels.random_features import (
    RandomFeatureMap,
    check_num_features,
    chi_norms,
    gaussian_prf_kernel,
    hadamard_transform,
    next_power_of_two,
)
from kernelized.kernels.registry import register


class _FastFood(RandomFeatureMap):
    def __init__(
        self,
        head_dim: int,
        num_heads: int,
        num_features: int | None,
        learn: bool,
        init: str,
        kernel_samples: int,
        **base,
    ):
        super().__init__(head_dim, num_heads, **base)
        self.padded_dim = D = next_power_of_two(head_dim)
        self.m = check_num_features(num_features, D)
        if self.m % D:
            raise ValueError(
                f"num_features must be a multiple of the padded head dim {D} (whole FastFood blocks), got {self.m}"
            )
        check_choice("init", init, ["reference", "rbf"])
        self.kernel_samples = check_positive_int("kernel_samples", kernel_samples)
        self.num_blocks, self.learn, self.init = self.m // D, bool(learn), init
        if self.learn:
            H = num_heads
            if init == "reference":
                b, g, s = (torch.randn(H, D) / math.sqrt(D) for _ in range(3))
            else:
                b = torch.randint(0, 2, (H, D)).float() * 2 - 1
                g = torch.randn(H, D)
                s = chi_norms((H, D), D) / g.norm(dim=-1, keepdim=True)
            self.B, self.G, self.S = nn.Parameter(b), nn.Parameter(g), nn.Parameter(s)
        self._init_draws()

    @property
    def num_frequencies(self) -> int:
        return self.m

    def draw(self, generator, num_blocks: int | None = None):
        H, D, nb = self.num_heads, self.padded_dim, num_blocks or self.num_blocks
        noise = {"perm": self._rand(H, nb, D, generator=generator).argsort(-1)}
        if not self.learn:
            noise["B"] = (self._rand(H, nb, D, generator=generator) < 0.5).to(self._anchor.dtype) * 2 - 1
            g = self._randn(H, nb, D, generator=generator)
            chi = self._randn(H, nb, D, D, generator=generator).norm(dim=-1)
            noise["G"], noise["S"] = g, chi / g.norm(dim=-1, keepdim=True)
        return noise

    def _diagonals(self, noise) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """B, G, S broadcastable to ``[H, blocks, D]``."""
        if self.learn:
            return self.B.unsqueeze(1), self.G.unsqueeze(1), self.S.unsqueeze(1)
        return noise["B"], noise["G"], noise["S"]

    def project(self, x: torch.Tensor, noise) -> torch.Tensor:
        """``u = V x`` by two fast Hadamard transforms: ``x [..., H, d] -> [..., H, blocks * D]``."""
        D = self.padded_dim
        B, G, S = (t.to(x.dtype) for t in self._diagonals(noise))
        perm = noise["perm"]
        y = F.pad(x, (0, D - self.head_dim)).unsqueeze(-2) * B  # [..., H, blocks, D]
        y = hadamard_transform(y)  # learned B: one transform serves every block
        y = y.expand(*y.shape[:-2], perm.shape[-2], D)
        y = torch.gather(y, -1, perm.expand(y.shape))  # (Pi y)_j = y_perm(j)
        y = hadamard_transform(y * G) * S * D**-0.5
        return y.reshape(*y.shape[:-2], -1)

    def frequencies(self, noise) -> torch.Tensor:
        """The dense rows of V restricted to the first d columns, ``[H, blocks * D, d]`` (V applied to e_i)."""
        eye = torch.eye(self.head_dim, dtype=self._anchor.dtype, device=self._anchor.device)
        u = self.project(eye.unsqueeze(1).expand(-1, self.num_heads, -1), noise)  # [d, H, M]
        return u.permute(1, 2, 0)

    def weights(self, noise):
        m = noise["perm"].shape[-2] * self.padded_dim
        return self._anchor.new_full((self.num_heads, m), 1.0 / m)

    def kernel(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """learn=False: the Gaussian kernel in closed form; learn=True: a fixed-seed large-sample estimate."""
        if not self.learn:
            qs, ks = self._scaled_pair(q, k)
            if self.estimator == "prf":
                return gaussian_prf_kernel(qs, ks, self.norm_offset)
            diff = qs - ks
            return torch.exp(-0.5 * (diff * diff).sum(-1)) + (self.smoothing or 0.0) ** 2
        self._scaled_pair(q, k)
        blocks = -(-self.kernel_samples // self.padded_dim)
        noise = self.draw(self.seeded_generator(1), num_blocks=blocks)
        return self.expected_given(q, k, self.frequencies(noise), self.weights(noise))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_features={self.m}, padded_dim={self.padded_dim}, learn={self.learn}"


@register("fastfood-rks")
class FastFoodRKS(_FastFood):
    """FastFood-RKS (the KL code's ``fsgb-fastfood``): ``phi(x) = [cos Vx~, sin Vx~] / sqrt(M) + [s]``.

    Args:
        num_features: M frequencies, a multiple of D = next power of two >= d (default D).
        learn: learn S, G, B (the KL variant) or draw them (classic FastFood, Gaussian kernel).
        init: ``"reference"`` (N(0, 1/D), the code's) or ``"rbf"`` (the classic FastFood draw), when learn=True.
        smoothing: the constant feature s.
        kernel_samples: frequencies in the large-sample estimate that :meth:`kernel` returns when learn=True.
        redraw, eval_draw, seed, scale: the draw policy and input scale (default: redraw every step).
    """

    def __init__(
        self,
        head_dim: int,
        num_heads: int = 1,
        num_features: int | None = None,
        learn: bool = True,
        init: str = "reference",
        smoothing: float | None = 1.0,
        kernel_samples: int = 16384,
        redraw: str | int = "step",
        eval_draw: str = "fixed",
        seed: int = 0,
        scale: float | None = None,
    ):
        super().__init__(
            head_dim, num_heads, num_features, learn, init, kernel_samples, estimator="rks", redraw=redraw,
            eval_draw=eval_draw, seed=seed, scale=scale, smoothing=smoothing,
        )  # fmt: skip


@register("fastfood-prf")
class FastFoodPRF(_FastFood):
    """FastFood-PRF (the KL code's ``fsgb-positive-fastfood``, which cannot be constructed there):
    ``phi(x) = exp(Vx~ - c|x~|^2) / sqrt(M)``, c = 1.

    Args:
        num_features, learn, init, kernel_samples: as in :class:`FastFoodRKS`.
        hyperbolic: the +-pair (F = 2M); norm_offset: c; stabilize: the overflow stabiliser.
        redraw, eval_draw, seed, scale: the draw policy and input scale (default: redraw every step).
    """

    def __init__(
        self,
        head_dim: int,
        num_heads: int = 1,
        num_features: int | None = None,
        learn: bool = True,
        init: str = "reference",
        hyperbolic: bool = False,
        norm_offset: float = 1.0,
        stabilize: bool = True,
        kernel_samples: int = 16384,
        redraw: str | int = "step",
        eval_draw: str = "fixed",
        seed: int = 0,
        scale: float | None = None,
    ):
        super().__init__(
            head_dim, num_heads, num_features, learn, init, kernel_samples, estimator="prf", redraw=redraw,
            eval_draw=eval_draw, seed=seed, scale=scale, hyperbolic=hyperbolic, norm_offset=norm_offset,
            stabilize=stabilize,
        )  # fmt: skip

"""Generator spectra ("Learning the Transformer Kernel"): an MLP maps noise to frequencies. Generator-RKS/PRF.

``w_m = g_theta(eps_m)``, ``eps_m ~ N(0, I_{n0})``: for each consecutive pair of ``noise_dims`` a Linear, a
BatchNorm1d over the M noise samples (they are its batch) and a LeakyReLU; then Linear(noise_dims[-1] -> d) and
tanh, so every frequency lies in (-1, 1)^d. One generator per layer, shared by all heads (as in the KL code).
Gradients reach theta because the frequencies are recomputed from the stored noise in every forward.

BatchNorm: in training mode it normalises with the statistics of the current M samples (as the code does), so
the M frequencies of a training draw are slightly dependent; in evaluation mode it uses running statistics and
the generator is a fixed function of each noise sample. :meth:`kernel` has no closed form: it returns the
estimator's expectation over ``kernel_samples`` frequencies generated with the evaluation-mode generator from a
fixed seed (deterministic; relative Monte-Carlo error ~ ``kernel_samples**-1/2``), i.e. the kernel the map
estimates at evaluation; training-mode draws estimate it up to the O(1/M) effect of batch statistics.

Fixes the published Generator-PRF, whose "n_dims - 1" and "// 2" logic inherited from the RKS class turned 256
requested features into 127: here M is the configured number of frequencies (default pow2cast(d ln d)), giving
2M + 1 RKS features (with smoothing) or M PRF features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernelized._checks import check_positive_int
from kernelized.kernels.random_features import RandomFeatureMap, check_num_features, default_num_features
from kernelized.kernels.registry import register


class _Generative(RandomFeatureMap):
    noise_has_head_axis = False  # one generator and one noise draw per layer, shared by the heads

    def __init__(
        self,
        head_dim: int,
        num_heads: int,
        num_features: int | None,
        noise_dims: list[int] | tuple[int, ...] | None,
        batch_norm: bool,
        kernel_samples: int,
        **base,
    ):
        super().__init__(head_dim, num_heads, **base)
        d = head_dim
        self.m = check_num_features(num_features, default_num_features(d))
        dims = [d, 4 * d] if noise_dims is None else list(noise_dims)
        if not dims or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in dims):
            raise ValueError(f"noise_dims must be a non-empty list of positive integers, got {noise_dims!r}")
        self.batch_norm = bool(batch_norm)
        if self.batch_norm and self.m < 2:
            raise ValueError(f"num_features must be >= 2 with batch_norm=True (a batch of samples), got {self.m}")
        self.kernel_samples = check_positive_int("kernel_samples", kernel_samples)
        self.noise_dims = dims
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm1d(b) for b in dims[1:]) if self.batch_norm else None
        self.out = nn.Linear(dims[-1], d)
        for lin in [*self.hidden, self.out]:
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        self._init_draws()

    @property
    def num_frequencies(self) -> int:
        return self.m

    def draw(self, generator, num: int | None = None):
        return {"eps": self._randn(num or self.m, self.noise_dims[0], generator=generator)}

    def generate(self, eps: torch.Tensor, batch_stats: bool) -> torch.Tensor:
        """Frequencies ``[N, d]`` from noise ``[N, n0]``; ``batch_stats``: BatchNorm uses (and updates) batch stats."""
        h = eps
        for i, lin in enumerate(self.hidden):
            h = lin(h)
            if self.norms is not None:
                bn = self.norms[i]
                h = F.batch_norm(
                    h, bn.running_mean, bn.running_var, bn.weight, bn.bias, batch_stats, bn.momentum, bn.eps
                )
            h = F.leaky_relu(h)
        return torch.tanh(self.out(h))

    def frequencies(self, noise) -> torch.Tensor:
        omega = self.generate(noise["eps"], batch_stats=self.training)
        return omega.unsqueeze(0).expand(self.num_heads, -1, -1)

    def kernel(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The fixed-seed large-sample estimate with the evaluation-mode generator (see the module docstring)."""
        self._scaled_pair(q, k)
        eps = self.draw(self.seeded_generator(1), num=self.kernel_samples)["eps"]
        omega = self.generate(eps, batch_stats=False).unsqueeze(0).expand(self.num_heads, -1, -1)
        weight = omega.new_full(omega.shape[:2], 1.0 / self.kernel_samples)
        return self.expected_given(q, k, omega, weight)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_features={self.m}, noise_dims={self.noise_dims}"


@register("generative-rks")
class GenerativeRKS(_Generative):
    """Generator-RKS (the KL code's ``generative-fourier``): ``phi(x) = [cos, sin](x~ . w) / sqrt(M) + [s]``.

    Args:
        num_features: M frequencies (default pow2cast(d ln d)); 2M + 1 features with smoothing.
        noise_dims: the generator's widths from the noise on (default [d, 4d]; the code uses [d/2, 2d, 4d] on Text).
        batch_norm: BatchNorm1d after each hidden Linear (the code's).
        smoothing: the constant feature s.
        kernel_samples: frequencies in the large-sample estimate of :meth:`kernel`.
        redraw, eval_draw, seed, scale: the draw policy and input scale (default: redraw every step).
    """

    def __init__(
        self,
        head_dim: int,
        num_heads: int = 1,
        num_features: int | None = None,
        noise_dims: list[int] | None = None,
        batch_norm: bool = True,
        smoothing: float | None = 1.0,
        kernel_samples: int = 16384,
        redraw: str | int = "step",
        eval_draw: str = "fixed",
        seed: int = 0,
        scale: float | None = None,
    ):
        super().__init__(
            head_dim, num_heads, num_features, noise_dims, batch_norm, kernel_samples, estimator="rks",
            redraw=redraw, eval_draw=eval_draw, seed=seed, scale=scale, smoothing=smoothing,
        )  # fmt: skip


@register("generative-prf")
class GenerativePRF(_Generative):
    """Generator-PRF (the KL code's ``generative-positive``): ``phi(x) = exp(x~ . w - c|x~|^2) / sqrt(M)``, c = 1.

    Args:
        num_features: M frequencies = features (default pow2cast(d ln d); the code's quirk gave 127 for 256).
        noise_dims, batch_norm, kernel_samples: as in :class:`GenerativeRKS`.
        hyperbolic: the +-pair (F = 2M); norm_offset: c; stabilize: the overflow stabiliser.
        redraw, eval_draw, seed, scale: the draw policy and input scale (default: redraw every step).
    """

    def __init__(
        self,
        head_dim: int,
        num_heads: int = 1,
        num_features: int | None = None,
        noise_dims: list[int] | None = None,
        batch_norm: bool = True,
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
            head_dim, num_heads, num_features, noise_dims, batch_norm, kernel_samples, estimator="prf",
            redraw=redraw, eval_draw=eval_draw, seed=seed, scale=scale, hyperbolic=hyperbolic,
            norm_offset=norm_offset, stabilize=stabilize,
        )  # fmt: skip

"""The feature-map protocol (after fast-transformers) shared by every kernel.

A feature map phi turns per-head queries and keys ``[..., H, d]`` into features ``[..., H, F]`` so that
``<phi_q(q), phi_k(k)> = kernel(q, k)`` (exactly for deterministic maps, in expectation for random ones).
Queries and keys may be mapped differently (ReBased has its own gamma, beta per role); random maps draw
their frequencies in :meth:`FeatureMap.resample`, always one draw shared by queries and keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kernelized._checks import check_float_tensor, check_positive_int


@dataclass(frozen=True)
class PolynomialForm:
    """A kernel that is a polynomial of one scaled dot product: ``sum_p terms[p] * s**p``, ``s = scale * <q~, k~>``.

    ``q~ = project_query(q)`` and ``k~ = project_key(k)``. Lets ops.polynomial_attention compute the
    kernel without materialising features (ReBased, Based, polynomial).
    """

    terms: dict[int, float]
    scale: float


class FeatureMap(nn.Module):
    """Base class: ``query(x)``, ``key(x)``: ``[..., H, d] -> [..., H, F]``; ``kernel(q, k)``: ``[..., H]``.

    Args:
        head_dim: d, the size of each head's query/key vectors.
        num_heads: H; maps with per-head parameters check the head axis (second to last) against it.
    """

    #: True for maps whose features come from a random draw (see :meth:`resample`).
    is_random: bool = False
    #: True when parameters differ per head, so inputs must carry the head axis at position -2.
    per_head: bool = False

    def __init__(self, head_dim: int, num_heads: int = 1):
        super().__init__()
        self.head_dim = check_positive_int("head_dim", head_dim)
        self.num_heads = check_positive_int("num_heads", num_heads)

    # -- the protocol -------------------------------------------------------------------------
    @property
    def feature_dim(self) -> int:
        """F, the number of features per head."""
        raise NotImplementedError

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Query features: ``[..., H, d] -> [..., H, F]``."""
        return self.features(self.check_input(x, "q"), role="query")

    def key(self, x: torch.Tensor) -> torch.Tensor:
        """Key features: ``[..., H, d] -> [..., H, F]``."""
        return self.features(self.check_input(x, "k"), role="key")

    def query_key(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(query(q), key(k))``; random maps compute their draw's frequencies once for both."""
        return self.query(q), self.key(k)

    def query_key_operands(self, q: torch.Tensor, k: torch.Tensor) -> tuple[str, tuple, tuple] | None:
        """The operands from which an op can form both roles' features itself (``kernelized.layers.fused``), or
        None: maps without such a form (this default) take the two-step path."""
        return None

    def forward(self, x: torch.Tensor, role: str = "query") -> torch.Tensor:
        return self.query(x) if role == "query" else self.key(x)

    def features(self, x: torch.Tensor, role: str) -> torch.Tensor:
        raise NotImplementedError

    def kernel(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Closed form of ``<phi_q(q), phi_k(k)>`` (its expectation for random maps); broadcasts ``[..., d]``."""
        raise NotImplementedError

    @property
    def has_estimator_mse(self) -> bool:
        """Whether :meth:`estimator_mse` has a closed form for this map (it raises otherwise)."""
        return False

    def estimator_mse(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Closed-form mean squared error of one draw's ``<phi(q), phi(k)>`` against :meth:`kernel`, ``[..., H]``.

        Only random maps whose frequencies have a closed-form law have one (see
        :meth:`kernelized.kernels.random_features.RandomFeatureMap.estimator_mse`); every other map raises."""
        raise NotImplementedError(
            f"estimator_mse: {type(self).__name__} is deterministic (its features are the kernel exactly), so it has "
            "no estimator error"
        )

    def resample(self, generator: torch.Generator | None = None) -> None:
        """Draw random frequencies anew; deterministic maps have nothing to draw."""

    def on_forward(self, continuing: bool = False) -> None:
        """Called by layers once per forward, before ``query``/``key``: random maps apply their draw policy here.

        ``continuing`` is True when the forward continues a sequence from a passed-in state; a draw must then stay
        as it is, or the state would mix two kernels.
        """

    # -- optional structure -------------------------------------------------------------------
    @property
    def polynomial_form(self) -> PolynomialForm | None:
        """Set by kernels that are a polynomial in one dot product; None otherwise."""
        return None

    def project_query(self, x: torch.Tensor) -> torch.Tensor:
        """The q~ of :class:`PolynomialForm` (identity unless the map normalises or rescales its input)."""
        return x

    def project_key(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def check_input(self, x: torch.Tensor, name: str) -> torch.Tensor:
        check_float_tensor(name, x)
        if x.dim() < 1 or x.shape[-1] != self.head_dim:
            raise ValueError(
                f"{name} must end in the head dimension {self.head_dim} ([..., H, d]), got shape {tuple(x.shape)}"
            )
        if self.per_head and (x.dim() < 2 or x.shape[-2] != self.num_heads):
            raise ValueError(
                f"{name} must have {self.num_heads} heads on axis -2 ([..., H={self.num_heads}, d]) for this "
                f"map's per-head parameters, got shape {tuple(x.shape)}"
            )
        return x

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, num_heads={self.num_heads}, feature_dim={self.feature_dim}"

"""Elementwise feature maps: elu+1 (the Linear Transformer) and relu."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernelized.kernels.base import FeatureMap
from kernelized.kernels.registry import register


class _Elementwise(FeatureMap):
    @property
    def feature_dim(self) -> int:
        return self.head_dim

    def kernel(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return (self.features(q, "query") * self.features(k, "key")).sum(-1)


@register("elu")
class EluFeatureMap(_Elementwise):
    """phi(x) = elu(x) + 1 (Katharopoulos et al., 2020): positive, F = d, phi(0) = 1."""

    def features(self, x: torch.Tensor, role: str) -> torch.Tensor:
        return F.elu(x) + 1


@register("relu")
class ReluFeatureMap(_Elementwise):
    """phi(x) = relu(x): non-negative, F = d; a row of all-negative inputs gives a zero normaliser."""

    def features(self, x: torch.Tensor, role: str) -> torch.Tensor:
        return F.relu(x)

"""Feature maps phi: ``[..., H, d] -> [..., H, F]``, one file per family, built by name.

>>> fm = kernels.build("rebased", head_dim=16, num_heads=8)
>>> fm.feature_dim
136
"""

# imported for registration
from kernelized.kernels import (  # noqa: F401
    fastfood,
    generative,
    performer,
    polynomial,
    random_features,
    simple,
    spectral,
)
from kernelized.kernels.base import FeatureMap, PolynomialForm
from kernelized.kernels.registry import alias, available, build, canonical, get, options, register

alias("based", "taylor")  # the Based paper's name for its 2nd-order Taylor kernel

__all__ = ["FeatureMap", "PolynomialForm", "alias", "available", "build", "canonical", "get", "options", "register"]

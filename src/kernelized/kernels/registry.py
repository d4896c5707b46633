"""Feature maps by name: ``register`` (a class decorator), ``build``, ``available``."""

from __future__ import annotations

import inspect

from kernelized.kernels.base import FeatureMap

_REGISTRY: dict[str, type[FeatureMap]] = {}


def register(name: str):
    """Class decorator: ``@register("rebased")`` makes ``build("rebased", ...)`` construct the class."""

    def wrap(cls: type[FeatureMap]) -> type[FeatureMap]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"kernel name {name!r} is already registered to {_REGISTRY[name].__name__}")
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return wrap


def available() -> list[str]:
    """Registered kernel names, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> type[FeatureMap]:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"kernel must be one of {available()}, got {name!r}")
    return _REGISTRY[name]


def options(name: str) -> dict[str, object]:
    """The keyword options a kernel accepts (besides head_dim and num_heads), with their defaults."""
    params = inspect.signature(get(name).__init__).parameters
    skip = {"self", "head_dim", "num_heads"}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p.default for p in params.values() if p.name not in skip and p.kind in kinds}


def build(name: str, head_dim: int, num_heads: int = 1, **kwargs) -> FeatureMap:
    """Construct the feature map registered as ``name``; unknown options are refused by name."""
    cls = get(name)
    accepted = options(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"kernel {name!r} got unknown options {unknown}; it accepts {sorted(accepted)}")
    return cls(head_dim=head_dim, num_heads=num_heads, **kwargs)

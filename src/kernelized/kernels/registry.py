"""Feature maps by name: ``register`` (a class decorator), ``alias``, ``build``, ``available``, ``canonical``.

One set of names everywhere: every experiment, layer and preset resolves a kernel name here, so an alias
(``based`` for ``taylor``, the Based paper's name for its 2nd-order Taylor kernel) works wherever a name does.
"""

from __future__ import annotations

import inspect

from kernelized.kernels.base import FeatureMap

#: the KL-Transformer paper's learned spectral families as (PRF, RKS) twins: what "PRF vs RKS" compares
SPECTRAL_FAMILIES = {
    "gmm": ("gmm-prf", "gmm-rks"),
    "fastfood": ("fastfood-prf", "fastfood-rks"),
    "generative": ("generative-prf", "generative-rks"),
}

_REGISTRY: dict[str, type[FeatureMap]] = {}
_ALIASES: dict[str, str] = {}


def register(name: str):
    """Class decorator: ``@register("rebased")`` makes ``build("rebased", ...)`` construct the class."""

    def wrap(cls: type[FeatureMap]) -> type[FeatureMap]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"kernel name {name!r} is already registered to {_REGISTRY[name].__name__}")
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return wrap


def alias(name: str, target: str) -> None:
    """Make ``name`` another name of the registered kernel ``target``."""
    if name in _REGISTRY:
        raise ValueError(f"alias {name!r} is already a registered kernel")
    _ALIASES[name] = canonical(target)


def available(aliases: bool = False) -> list[str]:
    """Registered kernel names, sorted; with ``aliases=True`` their aliases too."""
    return sorted([*_REGISTRY, *_ALIASES] if aliases else _REGISTRY)


def canonical(name: str) -> str:
    """The registered name of a kernel name or alias (``based`` -> ``taylor``); ValueError listing the names."""
    if isinstance(name, str) and name in _REGISTRY:
        return name
    if isinstance(name, str) and name in _ALIASES:
        return _ALIASES[name]
    names = ", ".join(f"{a} (= {t})" for a, t in sorted(_ALIASES.items()))
    raise ValueError(f"kernel must be one of {available()} or an alias ({names}), got {name!r}")


def get(name: str) -> type[FeatureMap]:
    return _REGISTRY[canonical(name)]


#: options every kernel accepts, handled here rather than by each class: ``reference="kl"`` builds the kernel as the
#: KL-Transformer code does (:mod:`kernelized.kernels.reference_kl`), ``reference_task`` picks its per-task sizes
REGISTRY_OPTIONS = {"reference": None, "reference_task": None}


def options(name: str) -> dict[str, object]:
    """The keyword options a kernel accepts (besides head_dim and num_heads), with their defaults."""
    params = inspect.signature(get(name).__init__).parameters
    skip = {"self", "head_dim", "num_heads"}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    own = {p.name: p.default for p in params.values() if p.name not in skip and p.kind in kinds}
    return {**own, **REGISTRY_OPTIONS}


def build(name: str, head_dim: int, num_heads: int = 1, **kwargs) -> FeatureMap:
    """Construct the feature map registered as ``name``; unknown options are refused by name."""
    cls = get(name)
    accepted = options(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"kernel {name!r} got unknown options {unknown}; it accepts {sorted(accepted)}")
    reference = kwargs.pop("reference", None)
    if reference is not None:
        from kernelized.kernels import reference_kl  # imports the kernel classes, which import this module

        return reference_kl.build(cls, canonical(name), head_dim, num_heads, reference, **kwargs)
    if kwargs.pop("reference_task", None) is not None:
        raise ValueError("reference_task needs reference='kl' (it picks the KL code's sizes for a task)")
    return cls(head_dim=head_dim, num_heads=num_heads, **kwargs)

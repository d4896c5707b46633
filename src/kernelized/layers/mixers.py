"""Mixers by spec: a model is a list of dicts such as ``{"mixer": "kernel", "kernel": "rebased"}``.

Every mixer maps ``x [B, T, D] -> [B, T, D]`` with
``forward(x, key_padding_mask=None, state=None, output_state=False) -> y | (y, state)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

_MIXERS: dict[str, Callable[..., nn.Module]] = {}


def register_mixer(name: str):
    """Decorator for a mixer class (or factory) taking ``d_model``, ``causal`` and its own keyword options."""

    def wrap(factory):
        _MIXERS[name] = factory
        return factory

    return wrap


def available_mixers() -> list[str]:
    return sorted(_MIXERS)


def build_mixer(spec: dict, d_model: int, *, causal: bool = True) -> nn.Module:
    """Construct the mixer a spec names; its other keys are the mixer's options.

    >>> build_mixer({"mixer": "kernel", "kernel": "rebased", "num_heads": 4}, d_model=64)
    """
    if not isinstance(spec, dict) or "mixer" not in spec:
        raise ValueError(f"a mixer spec must be a dict with a 'mixer' key (one of {available_mixers()}), got {spec!r}")
    name = spec["mixer"]
    if name not in _MIXERS:
        raise ValueError(f"mixer must be one of {available_mixers()}, got {name!r}")
    factory = _MIXERS[name]
    options = {k: v for k, v in spec.items() if k != "mixer"}
    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - set(params) - {"d_model", "causal"})
        if unknown:
            accepted = sorted(set(params) - {"self", "d_model", "causal"})
            raise ValueError(f"mixer {name!r} got unknown options {unknown}; it accepts {accepted}")
    options.setdefault("causal", causal)
    if "causal" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        options.pop("causal")
    return factory(d_model=d_model, **options)


def attention_names() -> list[str]:
    """Names an experiment's ``kernel`` field may take: ``softmax`` and every kernel name or alias."""
    from kernelized import kernels

    return ["softmax", *kernels.available(aliases=True)]


def attention_spec(name: str) -> dict:
    """The mixer spec of an attention name: ``softmax`` -> softmax attention, a kernel name or alias (``based``)
    -> kernel attention with the registered kernel; ValueError listing the valid names otherwise."""
    from kernelized import kernels

    if name == "softmax":
        return {"mixer": "softmax"}
    if not isinstance(name, str) or name not in kernels.available(aliases=True):
        raise ValueError(f"kernel must be one of {attention_names()}, got {name!r}")
    return {"mixer": "kernel", "kernel": kernels.canonical(name)}

"""Typed experiment configs: a dataclass per experiment is the schema of its presets.

An experiment declares its settings as nested dataclasses (one per section) deriving from
:class:`ExperimentConfig`, whose own fields every experiment has::

    @dataclass
    class Model:
        d_model: int = 64
        num_heads: int = 12

    @dataclass
    class MQARConfig(ExperimentConfig):
        seq_len: int = 64
        model: Model = field(default_factory=Model)
        train: dict = field(default_factory=lambda: train_defaults(epochs=64), metadata={"types": TrainConfig})

:func:`defaults_of` turns it into the nested dict of defaults a preset is merged over; :func:`merge` does the
merge and names an unknown key at any depth together with the valid keys of its own section; :func:`check_types`
checks every value against the field's type hint (``metadata={"types": cls}`` lends a dict section the hints of
another dataclass, e.g. the trainer's). A field whose default is an empty dict is free-form (kernel options).
Experiments keep working on plain dicts (YAML in, YAML out); the dataclasses are the one place a setting, its
type and its default are written down.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kernelized.train.config import TrainConfig


@dataclass
class ExperimentConfig:
    """Fields of every experiment's preset.

    description: a sentence for the report.
    seed: the run's seed (initialisation, data order; an experiment may derive its data seed from it).
    workers: parallel runs of a sweep (``--workers`` overrides); not part of a run's identity.
    cpu_preset: set in presets sized for a GPU: the preset to use on a CPU (printed with a time estimate).
    """

    description: str = ""
    seed: int = 0
    workers: int = 1
    cpu_preset: str | None = None


#: Keys that never change a run's result, so they are not part of its identity (see grid.config_hash).
RUNTIME_KEYS = ("description", "workers", "cpu_preset", "threads", "train.progress", "train.log_every")


def train_defaults(omit: tuple[str, ...] = ("seed", "extra"), **overrides) -> dict:
    """TrainConfig's fields as a dict section (``seed`` comes from the experiment's top level)."""
    values = {k: v for k, v in TrainConfig().to_dict().items() if k not in omit}
    unknown = sorted(set(overrides) - set(values))
    if unknown:
        raise ValueError(f"train_defaults got unknown TrainConfig fields {unknown}")
    values.update(overrides)
    return values


def defaults_of(cls_or_obj) -> dict:
    """A (nested) dataclass, class or instance, as the nested dict of its defaults."""
    obj = cls_or_obj() if isinstance(cls_or_obj, type) else cls_or_obj
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out[f.name] = defaults_of(value) if dataclasses.is_dataclass(value) else copy.deepcopy(value)
    return out


def is_free_form(value) -> bool:
    """An empty mapping in the defaults accepts any keys (e.g. kernel options)."""
    return isinstance(value, dict) and not value


def section_keys(schema: Mapping, dotted: str) -> tuple[str, list[str]] | None:
    """For an unknown dotted key: the deepest existing section's name and its keys (None if the key exists)."""
    node, path = schema, []
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or is_free_form(node):
            return None
        if part not in node:
            return (".".join(path), sorted(node))
        node = node[part]
        path.append(part)
    return None


def unknown_key_error(dotted: str, schema: Mapping, where: str) -> ValueError:
    """``unknown key 'train.lrr' in <where>; valid keys of 'train' are [...]``."""
    section, keys = section_keys(schema, dotted) or ("", sorted(schema))
    return _unknown(dotted, section, keys, where)


def _unknown(dotted: str, section: str, keys: list[str], where: str) -> ValueError:
    scope = f"of '{section}'" if section else "at the top level"
    return ValueError(f"unknown key {dotted!r} in {where}; valid keys {scope} are {keys}")


def check_keys(schema: Mapping, update: Mapping, source: str, prefix: str = "") -> None:
    """Every key of ``update``, at any depth, is a field of ``schema``; else ValueError naming the key and the
    valid keys of its own section. Below an empty mapping of the schema (free-form) anything goes."""
    for key, value in update.items():
        name = f"{prefix}{key}"
        if key not in schema:
            raise _unknown(name, prefix.rstrip("."), sorted(schema), source)
        default = schema[key]
        if isinstance(default, dict) and default and value is not None:
            if not isinstance(value, dict):
                raise ValueError(f"{name!r} in {source} must be a mapping of {sorted(default)}, got {value!r}")
            check_keys(default, value, source, f"{name}.")


def deep_update(base: Mapping, update: Mapping) -> dict:
    """A copy of ``base`` with ``update`` merged in: mappings recursively, everything else replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge(defaults: Mapping, update: Mapping, source: str, prefix: str = "") -> dict:
    """``defaults`` updated by ``update`` (:func:`deep_update`) after :func:`check_keys`."""
    check_keys(defaults, update, source, prefix)
    return deep_update(defaults, update)


def has_key(schema: Mapping, dotted: str) -> bool:
    """Whether the dotted key names a field of ``schema`` (anything below a free-form mapping counts)."""
    return section_keys(schema, dotted) is None


# -- types ---------------------------------------------------------------------------------------------------
def check_types(config: Mapping, cls: type, source: str, prefix: str = "") -> None:
    """Every value of ``config`` matches its field's type hint in dataclass ``cls`` (recursively); else ValueError
    ``model.d_model in <source> must be int, got '64x'``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in config:
            continue
        value, hint, name = config[f.name], hints[f.name], f"{prefix}{f.name}"
        nested = f.metadata.get("types") or (hint if dataclasses.is_dataclass(hint) else None)
        if nested is not None and isinstance(value, Mapping):
            check_types(value, nested, source, f"{name}.")
        elif nested is None and not matches(value, hint):
            raise ValueError(f"{name} in {source} must be {type_name(hint)}, got {value!r}")


def matches(value, hint) -> bool:
    """Whether ``value`` (as YAML gives it) fits the type hint: ints pass for floats, lists for tuples."""
    if hint is Any or hint is object:
        return True
    if hint is type(None) or hint is None:
        return value is None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return isinstance(value, (list, tuple)) and all(any(matches(v, a) for a in args) or not args for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def type_name(hint) -> str:
    if hint is type(None):
        return "null"
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (list, tuple):
        return "a list"
    return getattr(hint, "__name__", str(hint))

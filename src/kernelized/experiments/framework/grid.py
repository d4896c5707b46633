"""Grid expansion and run identity: a run is its whole resolved config.

A run's id is the readable values of the grid's axes plus a short hash of every setting that can change its
result (:func:`config_hash`: everything but :data:`schema.RUNTIME_KEYS` and what an experiment adds)::

    kernel=rebased_d_model=64_lr=0.001_seed=0-3fa2c1d9

so a changed ``--set train.max_steps=...`` is a new run in a new folder, never a silent reuse of an old one.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from kernelized.experiments.framework.presets import get_key, set_key
from kernelized.experiments.framework.schema import RUNTIME_KEYS

HASH_CHARS = 8


@dataclass
class Run:
    """One run of a sweep: its id (a folder name), its full config and the grid values that made it."""

    run_id: str
    config: dict
    params: dict = field(default_factory=dict)


def identity(config: Mapping, ignore: Sequence[str] = ()) -> dict:
    """The part of a config that defines the run: a copy without the runtime keys (dotted)."""
    out = copy.deepcopy(dict(config))
    out.pop("grid", None)
    for dotted in (*RUNTIME_KEYS, *ignore):
        *parents, leaf = dotted.split(".")
        node = get_key(out, ".".join(parents)) if parents else out
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


def config_hash(config: Mapping, ignore: Sequence[str] = ()) -> str:
    """Short sha1 of the canonical JSON of :func:`identity` (key order and int/float spelling do not matter)."""
    text = json.dumps(_canonical(identity(config, ignore)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:HASH_CHARS]


def _canonical(value):
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 1.0 and 1 are the same setting
    return value


def format_value(value) -> str:
    """A value as a filesystem-safe token: ``0.001``, ``true``, ``p-1``."""
    if isinstance(value, bool) or value is None:
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (int, str)):
        text = str(value)
    else:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "x"


def readable_id(params: Mapping) -> str:
    """``kernel=rebased_d_model=64_lr=0.001_seed=0``: keys shortened to their last dotted part unless two collide;
    longer than 100 characters: cut, with a hash of the whole."""
    if not params:
        return "run"
    short = [k.split(".")[-1] for k in params]
    names = short if len(set(short)) == len(short) else [k.replace(".", "-") for k in params]
    text = "_".join(f"{format_value(n)}={format_value(v)}" for n, v in zip(names, params.values()))
    if len(text) > 100:
        text = f"{text[:88]}_{hashlib.sha1(text.encode()).hexdigest()[:10]}"
    return text


def run_id(params: Mapping, config: Mapping, ignore: Sequence[str] = ()) -> str:
    """Readable grid values, then ``-`` and the config hash."""
    return f"{readable_id(params)}-{config_hash(config, ignore)}"


def expand_grid(
    preset: Mapping,
    always: Sequence[str] = (),
    ignore: Sequence[str] = (),
    resolve: Callable[[dict], dict] | None = None,
) -> list[Run]:
    """The runs of a preset: the cartesian product of ``grid`` (first key slowest) over the fixed fields.

    ``always``: keys put first in every run's readable id even when they are not grid axes (e.g. kernel, seed),
    so narrowing a grid (``--kernels``, ``--seeds``) never renames a run. ``ignore``: dotted keys, besides the
    runtime keys, that are not part of a run's identity. ``resolve(config) -> config``: the experiment's own
    resolution (per-task sections, "paper" values made concrete), applied before the hash, so the hash is of
    what the run really runs. Deterministic; ids are unique (ValueError otherwise).
    """
    grid = dict(preset.get("grid") or {})
    base = {k: v for k, v in preset.items() if k != "grid"}
    axes = {k: grid.pop(k) if k in grid else [get_key(base, k)] for k in always}
    axes.update(grid)
    runs, seen = [], {}
    for values in itertools.product(*axes.values()):
        params = dict(zip(axes.keys(), values))
        config = copy.deepcopy(base)
        for key, value in params.items():
            set_key(config, key, copy.deepcopy(value))
        if resolve is not None:
            config = resolve(config)
        rid = run_id(params, config, ignore)
        if rid in seen:
            raise ValueError(f"grid values {params} and {seen[rid]} give the same run {rid!r}")
        seen[rid] = params
        runs.append(Run(rid, config, params))
    return runs


def narrow(preset: dict, axis: str, values: list | None) -> None:
    """Make ``axis`` a grid axis holding ``values`` (``--kernels``, ``--seeds``); None leaves the preset as is."""
    if values is not None:
        preset.setdefault("grid", {})[axis] = list(values)


def flatten(mapping: Mapping, prefix: str = "") -> dict:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"a.b": 1, "c": "[1, 2]"}`` (lists as JSON text)."""
    out = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple, Mapping)):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out

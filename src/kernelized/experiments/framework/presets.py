"""Presets and overrides: YAML files ``configs/<experiment>/<name>.yaml``, merged over typed defaults.

A preset is fixed fields plus an optional ``grid:`` mapping dotted keys to lists of values::

    # configs/mqar/demo.yaml
    task: {vocab_size: 256, num_train: 2000}
    model: {d_model: 64}
    train: {epochs: 8, lr: 1.0e-3}
    grid:                       # cartesian product, first key varies slowest
      kernel: [softmax, rebased]
      model.d_model: [32, 64]
      seed: [0, 1, 2]

The presets ship inside the package (``kernelized/configs``, read with importlib.resources), so a plain
``pip install`` has them; a ``./configs/<experiment>/`` folder in the working directory adds or shadows presets.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import yaml

from kernelized._checks import parse_list  # noqa: F401  (re-exported: the one comma-list parser)
from kernelized.experiments.framework.schema import has_key, merge, unknown_key_error


class PresetLoader(yaml.SafeLoader):
    """yaml.SafeLoader that also reads ``1e-3`` and ``5e4`` as floats (YAML 1.1 wants ``1.0e-3``)."""


PresetLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml_text(text: str):
    """Parse YAML like ``yaml.safe_load``, with ``1e-3`` read as a float."""
    return yaml.load(text, Loader=PresetLoader)


def packaged_configs() -> Path:
    """The presets shipped with the package (``kernelized/configs``)."""
    return Path(str(resources.files("kernelized") / "configs"))


def config_dirs() -> list[Path]:
    """Where presets are looked up: ./configs first (a user's own), then the package's (duplicates removed)."""
    dirs: list[Path] = []
    for d in (Path.cwd() / "configs", packaged_configs()):
        if d.is_dir() and d.resolve() not in [x.resolve() for x in dirs]:
            dirs.append(d)
    return dirs


def available_presets(experiment: str) -> list[str]:
    """Names of the presets of ``experiment`` (files configs/<experiment>/<name>.yaml)."""
    names = set()
    for d in config_dirs():
        names.update(p.stem for p in (d / experiment).glob("*.yaml"))
    return sorted(names)


def find_preset(experiment: str, name_or_path: str | Path) -> Path:
    """The file of a preset: a path to a .yaml/.yml file, or a name under configs/<experiment>/."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"--preset: file {text!r} does not exist")
        return path
    for d in config_dirs():
        path = d / experiment / f"{text}.yaml"
        if path.is_file():
            return path
    raise ValueError(f"--preset: unknown {experiment} preset {text!r}; available: {available_presets(experiment)}")


def read_yaml(path: str | Path) -> dict:
    """A YAML file holding a mapping; a missing or malformed file raises ValueError naming it."""
    path = Path(path)
    try:
        data = load_yaml_text(path.read_text())
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"malformed YAML in {path}: {yaml_problem(e)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of fields, got {type(data).__name__}")
    return data


def yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error as one line: what went wrong and where (line and column, 1-based)."""
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    return f"{problem}{where}" + (f" ({context})" if context else "")


def parse_overrides(overrides: Sequence[str] | Mapping | None) -> dict:
    """``["train.lr=3e-3", "grid.seed=[0, 1]"]`` -> ``{"train.lr": 0.003, "grid.seed": [0, 1]}``.

    Values are parsed as YAML (numbers including ``3e-3``, booleans, null, lists, mappings; anything else is a
    string). A mapping is returned as a copy.
    """
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    out = {}
    for item in overrides:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects key=value (e.g. train.lr=3e-3), got {item!r}")
        try:
            out[key] = load_yaml_text(value)
        except yaml.YAMLError as e:
            raise ValueError(f"--set {key}: cannot parse value {value!r}: {yaml_problem(e)}") from None
    return out


# -- dotted keys ----------------------------------------------------------------------------------------------
def get_key(config: Mapping, dotted: str, default=None):
    """``config["a"]["b"]`` for ``"a.b"``; ``default`` when absent."""
    node = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def set_key(config: dict, dotted: str, value) -> None:
    """Set ``config["a"]["b"] = value`` for ``"a.b"``, creating intermediate mappings."""
    parts = dotted.split(".")
    node = config
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"cannot set {dotted!r}: {part!r} is not a mapping")
    node[parts[-1]] = value


def _check_grid(grid, source: str, schema: Mapping | None) -> dict:
    if not isinstance(grid, dict):
        raise ValueError(f"'grid' in {source} must map keys to lists of values, got {grid!r}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid.{key} in {source} must be a non-empty list, got {values!r}")
        if schema is not None and not has_key(schema, key):
            raise ValueError(f"grid key {key!r} in {source} is not a field: {unknown_key_error(key, schema, source)}")
    return grid


def load_preset(
    experiment: str,
    name_or_path: str | Path,
    overrides: Sequence[str] | Mapping | None = None,
    defaults: Mapping | None = None,
) -> dict:
    """Read a preset, merge it over ``defaults``, apply ``--set`` overrides; validate every key.

    Args:
        experiment: the folder under configs/ ("mqar", "lra", "lm", ...).
        name_or_path: a preset name (configs/<experiment>/<name>.yaml) or a path to a .yaml file.
        overrides: ``["key=value", ...]`` (dotted keys; values parsed as YAML) or a mapping. ``key=value`` for a
            key that is a grid axis pins it (the axis is removed); ``grid.key=[...]`` replaces or adds an axis.
        defaults: the experiment's full default config (:func:`schema.defaults_of`). When given, every key of the
            preset, of its grid and of the overrides must exist in it, at any depth (an empty mapping accepts any
            keys); unknown keys are named with the valid keys of their own section. Without defaults the preset
            is its own schema.

    Returns the merged config (a plain dict, with a ``grid`` mapping, possibly empty).
    """
    path = find_preset(experiment, name_or_path)
    preset = read_yaml(path)
    source = str(path)
    grid = preset.pop("grid", None)
    config = merge(defaults, preset, source) if defaults is not None else copy.deepcopy(preset)
    schema = defaults  # free-form sections (empty in the defaults) stay free-form even where the preset fills them
    config["grid"] = _check_grid(copy.deepcopy(grid) if grid is not None else {}, source, schema)
    apply_overrides(config, parse_overrides(overrides), schema, f"--set (preset {source})")
    return config


def apply_overrides(config: dict, overrides: Mapping, schema: Mapping | None, where: str) -> None:
    """Set each dotted key of ``overrides`` in ``config`` (see :func:`load_preset`), checking it against schema."""
    fixed = {k: v for k, v in config.items() if k != "grid"}
    scope = schema if schema is not None else fixed

    def known(key: str) -> bool:
        return has_key(scope, key) or key in config["grid"]

    for key, value in overrides.items():
        if key.startswith("grid."):
            axis = key[len("grid.") :]
            if not isinstance(value, list) or not value:
                raise ValueError(f"{where}: grid.{axis} needs a non-empty list, got {value!r}")
            if not known(axis):
                raise unknown_key_error(axis, scope, where)
            config["grid"][axis] = value
            continue
        if key == "grid" or not known(key):
            raise unknown_key_error(key, scope, where)
        config["grid"].pop(key, None)  # a grid axis set to one value is pinned
        set_key(config, key, value)

"""Presets, grids, sweeps and the papers' reduction protocol, shared by every experiment.

A preset is a YAML file ``configs/<experiment>/<name>.yaml``: fixed fields plus an optional ``grid:``
mapping from dotted keys to lists of values::

    # configs/mqar/demo.yaml
    data: {vocab_size: 256, num_examples: 2000}
    model: {d_model: 64}
    train: {epochs: 8, lr: 1.0e-3}
    grid:                       # cartesian product, first key varies slowest
      kernel: [softmax, rebased]
      model.d_model: [32, 64]
      train.lr: [1.0e-3, 3.0e-3]
      seed: [0, 1, 2]

An experiment's main() then does::

    preset = load_preset("mqar", args.preset, args.set, defaults=DEFAULTS)   # errors before any training
    runs = expand_grid(preset)                                              # [Run(run_id, config, params)]
    records = run_sweep(runs, run_one, out_dir, workers=args.workers)       # skips runs with a result.json
    table = reduce_runs(records, cell_keys=["kernel", "model.d_model"], metric="best.accuracy",
                        lr_key="train.lr", seed_key="seed")                 # best lr per cell, mean ± 95% CI
    write_markdown_table(out_dir / "report.md", table, columns=[...], title="MQAR")
    comparisons = pairwise_comparisons(table, method_key="kernel")          # paired tests across seeds

``run_one(config: dict, run_dir: Path) -> dict`` must be a top-level (picklable) function returning the
run's summary (e.g. ``Trainer.fit()``'s), because parallel sweeps run it in spawned processes.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import itertools
import json
import math
import os
import re
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import yaml
from tqdm import tqdm

from kernelized.eval.stats import mean_ci, paired_comparison
from kernelized.train.checkpoint import write_json_atomic, write_text_atomic

PACKAGE_CONFIGS = Path(__file__).resolve().parents[3] / "configs"  # the repository's configs/ (editable install)


# -- presets -------------------------------------------------------------------------------------------
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


def config_dirs() -> list[Path]:
    """Where presets are looked up: the repository's configs/ then ./configs (duplicates removed)."""
    dirs = []
    for d in (PACKAGE_CONFIGS, Path.cwd() / "configs"):
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
            raise ValueError(f"preset file {text!r} does not exist")
        return path
    for d in config_dirs():
        path = d / experiment / f"{text}.yaml"
        if path.is_file():
            return path
    raise ValueError(f"unknown {experiment} preset {text!r}; available: {available_presets(experiment)}")


def read_yaml(path: str | Path) -> dict:
    """A YAML file holding a mapping; malformed files raise ValueError naming the file."""
    path = Path(path)
    try:
        data = load_yaml_text(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"malformed YAML in {path}: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of fields, got {type(data).__name__}")
    return data


def parse_overrides(overrides: Sequence[str] | Mapping | None) -> dict:
    """``["train.lr=3e-3", "grid.seed=[0, 1]"]`` -> ``{"train.lr": 0.003, "grid.seed": [0, 1]}``.

    Values are parsed as YAML (:func:`load_yaml_text`: numbers including ``3e-3``, booleans, null, lists,
    mappings; anything else is a string). A mapping is returned as a copy.
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
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            out[key] = load_yaml_text(value)
        except yaml.YAMLError as e:
            raise ValueError(f"--set {key}: cannot parse value {value!r}: {e}") from None
    return out


def _free_form(value) -> bool:
    """An empty mapping in the defaults accepts any keys (e.g. kernel options)."""
    return isinstance(value, dict) and not value


def has_key(config: Mapping, dotted: str) -> bool:
    """Whether the dotted key names a field of ``config`` (anything below a free-form mapping counts)."""
    node = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return False
        if part not in node:
            return _free_form(node)
        node = node[part]
    return True


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


def _merge(defaults: Mapping, preset: Mapping, source: str, prefix: str = "") -> dict:
    out = copy.deepcopy(dict(defaults))
    for key, value in preset.items():
        name = f"{prefix}{key}"
        if key not in defaults:
            raise ValueError(f"unknown key {name!r} in {source}; valid keys here are {sorted(defaults)}")
        default = defaults[key]
        if isinstance(default, dict) and default and value is not None:
            if not isinstance(value, dict):
                raise ValueError(f"{name!r} in {source} must be a mapping, got {value!r}")
            out[key] = _merge(default, value, source, f"{name}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check_grid(config: dict, source: str, schema: Mapping | None) -> None:
    grid = config["grid"]
    if not isinstance(grid, dict):
        raise ValueError(f"'grid' in {source} must map keys to lists of values, got {grid!r}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid.{key} in {source} must be a non-empty list, got {values!r}")
        if schema is not None and not has_key(schema, key):
            raise ValueError(f"grid key {key!r} in {source} is not a field of the defaults")


def load_preset(
    experiment: str,
    name_or_path: str | Path,
    overrides: Sequence[str] | Mapping | None = None,
    defaults: Mapping | None = None,
) -> dict:
    """Read a preset, merge it over ``defaults``, apply ``--set`` overrides; validate everything.

    Args:
        experiment: the folder under configs/ ("mqar", "lra", "lm", ...).
        name_or_path: a preset name (configs/<experiment>/<name>.yaml, looked up in the repository's
            configs/ and then in ./configs) or a path to a .yaml file.
        overrides: ``["key=value", ...]`` (dotted keys; values parsed as YAML, ``3e-3`` a float) or a mapping.
            ``key=value`` for a key that is a grid axis pins it (the axis is removed from the grid);
            ``grid.key=[...]`` replaces (or adds) an axis.
        defaults: the experiment's full default config. When given, every key of the preset, of its grid
            and of the overrides must exist in it (recursively; an empty mapping in the defaults accepts
            any keys) and the result is the defaults updated by the preset. Without defaults, grid keys
            are free and override keys must be fields or grid axes of the preset itself.

    Returns the merged config (a plain dict, with a ``grid`` mapping, possibly empty).
    Raises ValueError naming the file and key for a missing or malformed file, an unknown key, a bad grid.
    """
    path = find_preset(experiment, name_or_path)
    preset = read_yaml(path)
    source = str(path)
    grid = preset.pop("grid", None)
    config = _merge(defaults, preset, source) if defaults is not None else copy.deepcopy(preset)
    schema = copy.deepcopy(config) if defaults is not None else None  # the fields a key may name
    config["grid"] = copy.deepcopy(grid) if grid is not None else {}
    _check_grid(config, source, schema)

    def known(key: str) -> bool:
        fixed = {k: v for k, v in config.items() if k != "grid"}
        return has_key(schema if schema is not None else fixed, key) or key in config["grid"]

    for key, value in parse_overrides(overrides).items():
        where = f"--set {key}= (preset {source})"
        if key.startswith("grid."):
            axis = key[len("grid.") :]
            if not isinstance(value, list) or not value:
                raise ValueError(f"{where}: a grid axis needs a non-empty list, got {value!r}")
            if not known(axis):
                raise ValueError(f"unknown key {axis!r} in {where}")
            config["grid"][axis] = value
            continue
        if key == "grid" or not known(key):
            raise ValueError(f"unknown key {key!r} in {where}; top-level keys are {sorted(config)}")
        config["grid"].pop(key, None)  # a grid axis set to one value is pinned
        set_key(config, key, value)
    return config


# -- grids ---------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One run of a sweep: its id (a folder name), its full config and the grid values that made it."""

    run_id: str
    config: dict
    params: dict = field(default_factory=dict)


def _format_value(value) -> str:
    if isinstance(value, bool) or value is None:
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (int, str)):
        text = str(value)
    else:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "x"


def run_id(params: Mapping) -> str:
    """A readable, filesystem-safe id: ``kernel=rebased_d_model=64_lr=0.001_seed=0``.

    Keys are shortened to their last dotted part unless two axes would collide; ids longer than 120
    characters are cut and given a hash of the full id.
    """
    if not params:
        return "run"
    short = [k.split(".")[-1] for k in params]
    names = short if len(set(short)) == len(short) else [k.replace(".", "-") for k in params]
    text = "_".join(f"{_format_value(n)}={_format_value(v)}" for n, v in zip(names, params.values()))
    if len(text) > 120:
        digest = hashlib.sha1(text.encode()).hexdigest()[:10]
        text = f"{text[:100]}_{digest}"
    return text


def expand_grid(preset: Mapping) -> list[Run]:
    """The runs of a preset: the cartesian product of ``grid`` (first key slowest) over the fixed fields.

    Each run's config is the preset without ``grid``, with the grid values set at their dotted keys.
    Deterministic; ids are unique (ValueError otherwise).
    """
    grid = dict(preset.get("grid") or {})
    base = {k: v for k, v in preset.items() if k != "grid"}
    runs, seen = [], {}
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid.keys(), values))
        config = copy.deepcopy(base)
        for key, value in params.items():
            set_key(config, key, copy.deepcopy(value))
        rid = run_id(params)
        if rid in seen:
            raise ValueError(f"grid values {params} and {seen[rid]} give the same run id {rid!r}")
        seen[rid] = params
        runs.append(Run(rid, config, params))
    return runs


# -- sweeps --------------------------------------------------------------------------------------------
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


def _write_config(run_dir: Path, config: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(yaml.safe_dump(config, sort_keys=False), run_dir / "config.yaml")


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_one(run_fn: Callable, run: Run, run_dir: Path) -> tuple[str, dict | None, str | None]:
    """Call run_fn; errors become a message (and run_dir/error.txt) so one bad run doesn't stop the sweep."""
    try:
        summary = run_fn(run.config, run_dir)
        if not isinstance(summary, Mapping):
            raise TypeError(f"run_fn must return the summary dict, got {type(summary).__name__}")
        return run.run_id, dict(summary), None
    except Exception:
        message = traceback.format_exc()
        (run_dir / "error.txt").write_text(message)
        return run.run_id, None, message


def run_sweep(
    runs: Sequence[Run],
    run_fn: Callable[[dict, Path], dict],
    out_dir: str | Path,
    workers: int = 1,
    progress: bool = True,
) -> list[dict]:
    """Run every run not yet finished, in ``workers`` processes, and write out_dir/results.csv.

    Each run gets ``out_dir/<run_id>/`` with its ``config.yaml``. What run_fn returns is saved as
    ``<run_id>/result.json``; a run with a result.json is not run again (it is read back), so an
    interrupted sweep resumes with the same command. A run killed mid-way is called again and resumes
    through the Trainer's checkpoint; one killed after training but before run_fn returned (e.g. during
    a test-set evaluation) is called again too, and ``Trainer.fit()`` then returns at once from its
    summary.json (result.json rather than summary.json marks a run done for that reason). With ``workers > 1``,
    runs go to spawned processes with ``max(1, cores // workers)`` torch threads each; run_fn must then
    be a top-level function, and it should turn off its own progress bar (they would interleave).

    A run that raises is recorded (``status: "failed"``, its traceback in ``<run_id>/error.txt``); the
    others go on, results.csv is written, and then a RuntimeError names the failed runs.

    Returns one record per run, in the order of ``runs``:
    ``{"run_id", "params", "config", "summary", "run_dir"}`` (summary: run_fn's return value, None for a
    failed run).
    results.csv has one row per run: run_id, the flattened config, then the flattened summary (a summary
    column whose name a config column already has is written as ``summary.<name>``).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    out_dir = Path(out_dir)
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"run ids must be unique, got duplicates {sorted({i for i in ids if ids.count(i) > 1})}")
    summaries: dict[str, dict | None] = {}
    errors: dict[str, str] = {}
    pending = []
    for run in runs:
        run_dir = out_dir / run.run_id
        done = run_dir / "result.json"
        if done.exists():
            summaries[run.run_id] = json.loads(done.read_text())
        else:
            _write_config(run_dir, run.config)
            pending.append(run)

    bar = tqdm(total=len(runs), initial=len(runs) - len(pending), desc=out_dir.name, unit="run", disable=not progress)
    if workers == 1 or len(pending) <= 1:
        for run in pending:
            bar.set_postfix_str(run.run_id)
            rid, summary, error = _run_one(run_fn, run, out_dir / run.run_id)
            summaries[rid] = summary
            if error:
                errors[rid] = error
            bar.update(1)
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(threads,)
        ) as pool:
            futures = [pool.submit(_run_one, run_fn, run, out_dir / run.run_id) for run in pending]
            for future in as_completed(futures):
                rid, summary, error = future.result()
                summaries[rid] = summary
                if error:
                    errors[rid] = error
                bar.set_postfix_str(rid)
                bar.update(1)
    bar.close()

    records = []
    for run in runs:
        summary = summaries.get(run.run_id)
        result = out_dir / run.run_id / "result.json"
        if summary is not None and run.run_id not in errors:
            if not result.exists():
                write_json_atomic(summary, result)
            summary = json.loads(result.read_text())  # the same record on this call and on a re-run
        records.append(
            {
                "run_id": run.run_id,
                "params": run.params,
                "config": run.config,
                "summary": summary,
                "run_dir": str(out_dir / run.run_id),
            }
        )
    write_results_csv(records, out_dir / "results.csv", errors)
    if errors:
        names = ", ".join(sorted(errors))
        first = next(iter(errors.values())).strip().splitlines()[-1]
        raise RuntimeError(f"{len(errors)} of {len(runs)} runs failed: {names} (first error: {first}; see error.txt)")
    return records


def write_results_csv(records: Sequence[dict], path: str | Path, errors: Mapping | None = None) -> None:
    """One row per record: run_id, flattened config, flattened summary (see :func:`run_sweep`)."""
    errors = errors or {}
    rows = []
    for rec in records:
        row = {"run_id": rec["run_id"], **flatten(rec["config"])}
        if rec["summary"] is None:
            row["status"] = "failed" if rec["run_id"] in errors else "missing"
        else:
            for key, value in flatten(rec["summary"]).items():
                row[f"summary.{key}" if key in row else key] = value
        rows.append(row)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(text.getvalue(), path)


# -- the papers' protocol ------------------------------------------------------------------------------
def reduce_runs(
    records: Sequence[dict],
    cell_keys: Sequence[str],
    metric: str = "best.accuracy",
    lr_key: str | None = "train.lr",
    seed_key: str = "seed",
    mode: str = "max",
    confidence: float = 0.95,
) -> list[dict]:
    """The papers' reduction: best metric over epochs per run, mean over seeds, best lr per cell.

    Args:
        records: from :func:`run_sweep` (``config`` and ``summary`` of each run); failed runs and runs
            without the metric are left out (counted in ``missing``).
        cell_keys: dotted config keys that define a cell of the table (e.g. kernel, seq_len, d_model).
        metric: dotted key in each run's summary; ``best.accuracy`` is the best accuracy over the run's
            evaluations (the Trainer's summary), i.e. "best over epochs".
        lr_key: dotted config key of the learning rate; the lr with the best mean over seeds is chosen per
            cell (the ReBased protocol). None = no lr selection (all runs of a cell are seeds).
        seed_key: dotted config key of the seed; values are paired across cells by it.
        mode: "max" or "min" (for losses).

    Returns one row per cell, sorted by cell values: ``{<cell keys>: value, "lr": best lr, "mean", "low",
    "high", "half_width" (Student-t 95% CI over seeds at that lr), "n", "values", "seeds" (per-seed metric
    at the best lr, by seed), "lr_means" ({lr: mean}), "missing"}``.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    cells: dict[tuple, dict] = {}
    missing: dict[tuple, int] = {}
    for rec in records:
        config = rec["config"]
        cell = tuple(_hashable(get_key(config, k)) for k in cell_keys)
        lr = get_key(config, lr_key) if lr_key else None
        value = get_key(rec.get("summary") or {}, metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            missing[cell] = missing.get(cell, 0) + 1
            cells.setdefault(cell, {})
            continue
        cells.setdefault(cell, {}).setdefault(lr, []).append((get_key(config, seed_key), float(value)))
    rows = []
    for cell in sorted(cells, key=lambda c: tuple(_sort_key(v) for v in c)):
        by_lr = cells[cell]
        row = dict(zip(cell_keys, cell))
        if not by_lr:  # every run of the cell failed or lacks the metric
            empty = {"lr": None, "mean": math.nan, "low": math.nan, "high": math.nan, "half_width": math.nan}
            rows.append({**row, **empty, "n": 0, "values": [], "seeds": [], "lr_means": {}, "missing": missing[cell]})
            continue
        means = {lr: sum(v for _, v in vals) / len(vals) for lr, vals in by_lr.items()}
        best_lr = None
        for lr in sorted(means, key=_sort_key):  # ties go to the smallest lr
            if best_lr is None or (means[lr] > means[best_lr] if mode == "max" else means[lr] < means[best_lr]):
                best_lr = lr
        pairs = sorted(by_lr[best_lr], key=lambda p: _sort_key(p[0]))
        ci = mean_ci([v for _, v in pairs], confidence)
        rows.append(
            {
                **row,
                "lr": best_lr,
                "mean": ci.mean,
                "low": ci.low,
                "high": ci.high,
                "half_width": ci.half_width,
                "n": ci.n,
                "values": [v for _, v in pairs],
                "seeds": [s for s, _ in pairs],
                "lr_means": means,
                "missing": missing.get(cell, 0),
            }
        )
    return rows


def _hashable(value):
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def _sort_key(value):
    """Numbers before strings, each in their own order; None first."""
    if value is None:
        return (0, 0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, value, "")
    return (2, 0, str(value))


def pairwise_comparisons(
    rows: Sequence[dict], method_key: str, confidence: float = 0.95, num_resamples: int = 10_000, seed: int = 0
) -> list[dict]:
    """Paired comparisons of every two methods in every cell, from :func:`reduce_runs` rows.

    Cells are the rows' cell keys other than ``method_key``; two methods are compared on the seeds they
    share (each at its own best lr) with :func:`kernelized.eval.stats.paired_comparison`. Returns rows
    ``{<other cell keys>, "a", "b", "n", "mean_a", "mean_b", "mean_diff", "ci_low", "ci_high", "p_ttest",
    "p_permutation", "min_p", ...}``; pairs sharing fewer than 2 seeds are left out.
    """
    reserved = {"lr", "mean", "low", "high", "half_width", "n", "values", "seeds", "lr_means", "missing"}
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if method_key not in row:
            raise ValueError(f"method_key {method_key!r} is not a cell key of the rows; keys: {sorted(row)}")
        other = tuple((k, row[k]) for k in row if k not in reserved and k != method_key)
        groups.setdefault(other, []).append(row)
    out = []
    for other, group in groups.items():
        for ra, rb in itertools.combinations(group, 2):
            va, vb = dict(zip(ra["seeds"], ra["values"])), dict(zip(rb["seeds"], rb["values"]))
            shared = [s for s in ra["seeds"] if s in vb]
            if len(shared) < 2:
                continue
            result = paired_comparison(
                [va[s] for s in shared], [vb[s] for s in shared], confidence, num_resamples, seed
            )
            out.append({**dict(other), "a": ra[method_key], "b": rb[method_key], **result})
    return out


def _format_cell(value, digits: int) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}g}" if abs(value) < 1e-3 or abs(value) >= 1e5 else f"{value:.{digits}f}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else str(value)


def markdown_table(
    rows: Sequence[Mapping],
    columns: Sequence[str] | None = None,
    headers: Sequence[str] | None = None,
    digits: int = 4,
) -> str:
    """A GitHub markdown table of ``rows`` (dicts); floats with ``digits`` decimals, NaN as "–".

    ``columns`` picks and orders the keys (default: all keys of the first row); ``headers`` renames them.
    Use :meth:`kernelized.eval.stats.CI.format` or a precomputed string column for "mean ± CI" cells.
    """
    if not rows:
        return "(no rows)\n"
    columns = list(columns) if columns is not None else list(rows[0])
    headers = list(headers) if headers is not None else columns
    if len(headers) != len(columns):
        raise ValueError(f"headers must name every column: {len(columns)} columns, got {len(headers)} headers")
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = [_format_cell(row.get(c), digits).replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def with_ci_column(
    rows: Sequence[dict], name: str = "mean ± 95% CI", digits: int = 3, scale: float = 1.0
) -> list[dict]:
    """Copies of :func:`reduce_runs` rows with a text column ``"0.930 ± 0.050"`` (``(n=1)`` without spread)."""
    out = []
    for row in rows:
        if row["n"] == 0:
            text = "–"
        elif math.isnan(row["half_width"]):
            text = f"{row['mean'] * scale:.{digits}f} (n={row['n']})"
        else:
            text = f"{row['mean'] * scale:.{digits}f} ± {row['half_width'] * scale:.{digits}f}"
        out.append({**row, name: text})
    return out


def write_markdown_table(
    path: str | Path,
    rows: Sequence[Mapping],
    columns: Sequence[str] | None = None,
    headers: Sequence[str] | None = None,
    title: str | None = None,
    note: str | None = None,
    digits: int = 4,
) -> str:
    """Write ``# title``, an optional note paragraph and :func:`markdown_table` to ``path``; returns the text."""
    parts = []
    if title:
        parts.append(f"# {title}\n")
    if note:
        parts.append(note.strip() + "\n")
    parts.append(markdown_table(rows, columns, headers, digits))
    text = "\n".join(parts)
    write_text_atomic(text, path)
    return text

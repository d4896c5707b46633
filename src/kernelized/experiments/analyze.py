"""``kernelized analyze``: attention maps, IoU with softmax and learned gamma/beta of trained MQAR, LRA and LM runs.

Two ways to call it:

- ``kernelized analyze RUN_DIR [--reference SOFTMAX_RUN_DIR]``: one run's attention maps on its analysis inputs
  (PNG: every attention layer, every head and the head mean), the IoU of each layer's map with the reference
  run's on the same inputs (same experiment, seed and data), and its gamma/beta statistics. Writes
  ``analysis.json``.
- ``kernelized analyze SWEEP_DIR`` (e.g. ``runs/mqar/demo``, ``runs/lra/cpu``, ``runs/lm/tiny``): every run
  with a checkpoint against the softmax run of the same sweep whose config is the same apart from the kernel
  (and the kernel's own settings; for MQAR the lr may differ when no softmax run has the same lr): IoU per kernel
  (and task, length, width, lr, ... where the sweep varies them; mean ± 95% CI over seeds), gamma/beta of
  ReBased-like kernels, and map PNGs of each cell's lowest seed. Writes ``analysis.md`` and ``analysis.json``.

Runs are folders a ``kernelized mqar|lra|lm`` sweep wrote: ``config.yaml`` and ``run.json`` naming the experiment
(an MQAR folder from before run.json is recognised by its config). The experiment module loads them:
``load_trained(run_dir) -> (config, model)`` and ``analysis_batch(config, n) -> (inputs [N, L], query_mask [N, L])``
(MQAR: test examples, query positions; LRA: test inputs, the first of Retrieval's two, non-padding tokens; LM:
validation windows, positions whose next token is an AR hit). A [CLS] classifier's maps start with its [CLS]
token, which counts as a query row (:func:`kernelized.eval.attention.query_rows`).

Figures: example 0, one row per attention layer (each head, then the head mean), the reference's rows below;
every panel has its own colour scale (0 to its largest weight) and colour bar; query rows are ticked in red;
inputs longer than 128 positions are drawn as their first 128 (the title says so).

The IoU protocol is :mod:`kernelized.eval.attention`'s: per query row, the smallest set of keys holding at
least ``--mass`` (0.9) of the head-averaged weight; IoU of the two sets; averaged over the query-mask rows, then
over the examples that have such a row. ``best head``: the run's single head whose map overlaps most with the
reference's head mean.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from kernelized.eval.attention import draw_maps, gamma_beta_stats, has_cls_token, map_iou, model_maps, query_rows
from kernelized.eval.stats import mean_ci
from kernelized.experiments.analyze_spectra import add_spectra, spectra_section
from kernelized.experiments.framework.cli import command
from kernelized.experiments.framework.grid import flatten, identity, readable_id
from kernelized.experiments.framework.presets import read_yaml
from kernelized.experiments.framework.tables import markdown_table, write_figure
from kernelized.train.checkpoint import write_json_atomic, write_text_atomic

SUPPORTED = ("mqar", "lra", "lm")
WINDOW = 128  # positions drawn of a longer sequence
CHUNK = 2**23  # map entries (examples x T x T) per pass, so that long LRA inputs fit in memory
# settings of the mixer alone: a softmax run that differs from a kernel run only here saw the same inputs
MIXER_FIELDS = ("kernel", "kernel_options", "kernels", "model.feature_dim", "model.mode", "model.chunk_size")
MIXER_FIELDS += ("model.eps", "model.softmax_heads")
NOT_RESULT = ("train.device", "data.cache_dir")  # where a run ran and kept its data
LOOSE = {"mqar": ("train.lr",)}  # may differ from the reference's (the same value is preferred)
GROUP = {"mqar": ("kernel", "seq_len", "model.d_model", "train.lr"), "lra": ("task", "kernel"), "lm": ("kernel",)}


@dataclass
class RunInfo:
    """A run folder: where it is, which experiment wrote it, its config.yaml."""

    path: Path
    experiment: str
    config: dict

    @property
    def flat(self) -> dict:
        return {**flatten(identity(self.config, NOT_RESULT)), "experiment": self.experiment}


# -- finding and loading runs ----------------------------------------------------------------------
def experiment_of(run_dir: Path) -> str:
    """The experiment that wrote a run folder: run.json's, or mqar for an old MQAR folder without run.json."""
    supported = ", ".join(SUPPORTED)
    meta = run_dir / "run.json"
    if meta.is_file():
        name = json.loads(meta.read_text()).get("experiment")
        if name not in SUPPORTED:
            raise ValueError(f"{run_dir} is a run of experiment {name!r}; kernelized analyze supports {supported}")
        return name
    task = read_yaml(run_dir / "config.yaml").get("task")
    if isinstance(task, dict) and "num_kv_pairs" in task:
        return "mqar"
    raise ValueError(
        f"{run_dir} has no run.json and its config.yaml is not an MQAR config: kernelized analyze supports the "
        f"experiments {supported} and needs the run.json that a `kernelized <experiment>` sweep writes in each run"
    )


def contract(experiment: str):
    """The experiment's module, checked for what analyze calls."""
    module = importlib.import_module(f"kernelized.experiments.{experiment}")
    for name in ("load_trained", "analysis_batch"):
        if not callable(getattr(module, name, None)):
            raise TypeError(f"kernelized.experiments.{experiment} has no {name}(), which kernelized analyze needs")
    return module


def read_run(run_dir: Path) -> RunInfo:
    if not (run_dir / "config.yaml").is_file():
        raise ValueError(f"{run_dir} is not a run folder: config.yaml is missing")
    return RunInfo(run_dir, experiment_of(run_dir), read_yaml(run_dir / "config.yaml"))


def has_checkpoint(run_dir: Path) -> bool:
    """The Trainer's checkpoint.pt in the run folder or one level down (LRA keeps it in train/)."""
    return (run_dir / "checkpoint.pt").is_file() or any(run_dir.glob("*/checkpoint.pt"))


def sweep_runs(sweep_dir: Path) -> list[RunInfo]:
    """The runs of a sweep folder that have a checkpoint (ValueError saying what the folder holds otherwise)."""
    folders = sorted(p for p in sweep_dir.iterdir() if (p / "config.yaml").is_file())
    if not folders:
        raise ValueError(
            f"{sweep_dir} is neither a run folder (config.yaml) nor a sweep folder (subfolders with config.yaml); "
            f"kernelized analyze reads the runs of the experiments {', '.join(SUPPORTED)}"
        )
    runs = [read_run(p) for p in folders]
    trained = [r for r in runs if has_checkpoint(r.path)]
    if not trained:
        names = sorted({r.experiment for r in runs})
        how = " / ".join(f"`kernelized {e} --preset <preset> --out {sweep_dir}`" for e in names)
        raise ValueError(
            f"{sweep_dir} holds {len(runs)} {'/'.join(names)} run folder(s) but none has a checkpoint yet: "
            f"train them first ({how})"
        )
    return trained


def load(run: RunInfo, num_examples: int | None) -> tuple:
    """``(config, model, inputs, query_mask)`` of a run through its experiment's contract (no inputs for None)."""
    module = contract(run.experiment)
    config, model = module.load_trained(run.path)
    if num_examples is None:
        return config, model, None, None
    inputs, mask = module.analysis_batch(config, num_examples)
    ok = isinstance(inputs, torch.Tensor) and inputs.dim() == 2 and not inputs.is_floating_point()
    if not ok or not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != inputs.shape:
        raise TypeError(
            f"kernelized.experiments.{run.experiment}.analysis_batch must return token ids [N, L] and a bool mask "
            f"[N, L], got {getattr(inputs, 'shape', inputs)!r} and {getattr(mask, 'dtype', mask)!r}"
        )
    return config, model, inputs, mask


# -- maps and IoU ----------------------------------------------------------------------------------
def layer_label(name: str) -> str:
    """``backbone.blocks.1.mixer`` -> ``blocks.1`` (the same for a language model, a classifier, a tower)."""
    return ".".join(p for p in name.split(".") if p not in ("backbone", "tower", "encoder", "mixer")) or name


def _labelled(maps: dict) -> dict:
    return {layer_label(name): m for name, m in maps.items()}


def _pairs(maps: dict, ref_maps: dict) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Layer i of the run with layer i of the reference: by name where both have the same layers, else in order."""
    if set(maps) == set(ref_maps):
        return [(k, maps[k], ref_maps[k]) for k in maps]
    return [(k, maps[k], ref_maps[r]) for k, r in zip(maps, ref_maps)]


def _chunks(inputs: torch.Tensor, mask: torch.Tensor):
    step = max(1, CHUNK // inputs.shape[1] ** 2)
    for i in range(0, len(inputs), step):
        yield inputs[i : i + step], mask[i : i + step]


def attention_pass(model, inputs, mask, mass: float, ref_model=None) -> dict:
    """One pass over the inputs (in chunks): heads per layer; per example, each layer's head-mean IoU and each
    head's IoU with the reference's head mean, and whether it has a query row; example 0's maps (first WINDOW
    positions), its query rows and its length."""
    acc: dict = {"heads": {}, "iou": {}, "head_iou": {}, "valid": [], "example": None}
    for x, m in _chunks(inputs, mask):
        raw = model_maps(model, x)
        maps = _labelled(raw)
        if not maps:
            raise ValueError(f"the {type(model).__name__} has no attention layer with attention weights")
        length = next(iter(maps.values())).shape[-1]
        rows = query_rows(model, m, length)
        ref = _labelled(model_maps(ref_model, x)) if ref_model is not None else {}
        if acc["example"] is None:
            crop = {k: v[0, :, :WINDOW, :WINDOW] for k, v in maps.items()}
            acc["example"] = (crop, {k: v[0, :, :WINDOW, :WINDOW] for k, v in ref.items()}, rows[0, :WINDOW], length)
        acc["heads"] = {k: v.shape[1] for k, v in maps.items()}
        acc["kinds"] = {layer_label(n): type(model.get_submodule(n)).__name__ for n in raw}
        acc["valid"].append(rows.any(-1))
        for label, a, b in _pairs(maps, ref):
            acc["iou"].setdefault(label, []).append(map_iou(a, b, mass, rows))
            heads = [map_iou(a[:, h], b.mean(1), mass, rows) for h in range(a.shape[1])]
            acc["head_iou"].setdefault(label, []).append(torch.stack(heads))
    return acc


def summarise(acc: dict) -> dict:
    """Per layer: the mean IoU over the examples that have a query row, and the best head (None without any)."""
    valid = torch.cat(acc["valid"])
    iou, best = {}, {}
    for label, parts in acc["iou"].items():
        if not valid.any():
            iou[label], best[label] = None, None
            continue
        iou[label] = torch.cat(parts)[valid].mean().item()
        per_head = torch.cat(acc["head_iou"][label], dim=1)[:, valid].mean(1)
        head = int(per_head.argmax())
        best[label] = {"head": head, "iou": per_head[head].item()}
    return {"iou_by_layer": iou, "best_head_iou_by_layer": best, "examples_with_queries": int(valid.sum())}


MAX_COLS = 7  # panels per figure row: 12 heads + mean wrap into two rows


def _panels(prefix: str, maps: dict, cols: int) -> dict:
    """Each layer from a new figure row: each head, then the head mean, wrapped at ``cols`` panels per row; empty
    cells pad a layer's last row."""
    panels: dict = {}
    for label, m in maps.items():
        for h in range(m.shape[0]):
            panels[f"{prefix} {label} head {h}"] = m[h]
        panels[f"{prefix} {label} head mean"] = m.mean(0)
        for i in range(-(m.shape[0] + 1) % cols):
            panels[f"{prefix} {label} empty {i}"] = None
    return panels


def draw_run(record: dict, example: tuple, path: Path) -> None:
    """PNG of example 0: every layer and head of the run, then of the reference; records the figure and panels."""
    maps, ref_maps, rows, length = example
    cols = min(MAX_COLS, 1 + max(m.shape[0] for m in (*maps.values(), *ref_maps.values())))
    ref_name = "softmax" if record.get("reference_kernel") == "softmax" else f"ref {record.get('reference_kernel')}"
    panels = {**_panels(record["kernel"], maps, cols), **_panels(ref_name, ref_maps, cols)}
    notes = ["every layer and head", "colour scale per panel", "red ticks: query rows"]
    if record["cls_token"]:
        notes.append("position 0 is [CLS]")
    if length > WINDOW:
        notes.append(f"window: the first {WINDOW} of {length} positions")
    lines = [f"{Path(record['run']).name}: attention of example 0"] + textwrap.wrap("; ".join(notes), 40 * cols)
    title = "\n".join(lines)
    error = write_figure(lambda p: draw_maps(panels, p, title=title, marks=rows, cols=cols), path)
    record.update(panels=sum(v is not None for v in panels.values()), positions=length, drawn=min(length, WINDOW))
    record["figure"] = None if error else path.name
    if error:
        record["figure_error"] = error


def run_record(run: RunInfo, loaded: tuple, mass: float, ref: RunInfo | None, ref_loaded: tuple) -> tuple:
    """A run's analysis (against the reference on the run's inputs) and its attention pass."""
    (config, model, inputs, mask), (ref_config, ref_model) = loaded, ref_loaded[:2]
    acc = attention_pass(model, inputs, mask, mass, ref_model)
    record = {"run": str(run.path), "experiment": run.experiment, "kernel": config["kernel"], "seed": config["seed"]}
    record.update(reference=str(ref.path) if ref else None, reference_kernel=ref_config and ref_config["kernel"])
    record.update(examples=len(inputs), layers=acc["heads"], layer_kinds=acc["kinds"], **summarise(acc))
    record["gamma_beta"] = gamma_beta_stats(model)
    record["cls_token"] = has_cls_token(model)
    return record, acc


# -- one run ---------------------------------------------------------------------------------------
def load_reference(run: RunInfo, loaded: tuple, reference: Path, num_examples: int) -> tuple[RunInfo, tuple]:
    """The reference run, loaded: same experiment and seed, and the same analysis inputs as the run's."""
    ref = read_run(reference)
    seeds = run.config.get("seed"), ref.config.get("seed")
    if ref.experiment == run.experiment and seeds[0] == seeds[1]:
        ref_loaded = load(ref, num_examples)
        if all(torch.equal(a, b) for a, b in zip(loaded[2:], ref_loaded[2:])):
            return ref, ref_loaded
    raise ValueError(
        f"{reference} ({ref.experiment}, seed {seeds[1]}) was trained on other data or another seed than "
        f"{run.path} ({run.experiment}, seed {seeds[0]}); IoU needs the same inputs"
    )


def initial_builder(run: RunInfo):
    """A function rebuilding the run's untrained model, when its experiment has ``initial_model(config)``."""
    build = getattr(contract(run.experiment), "initial_model", None)
    return (lambda: build(run.config)) if callable(build) else None


def analyze_run(run_dir: Path, reference: Path | None, out: Path, num_examples: int, mass: float) -> dict:
    run = read_run(run_dir)
    loaded = load(run, num_examples)
    ref, ref_loaded = load_reference(run, loaded, reference, num_examples) if reference else (None, (None, None))
    record, acc = run_record(run, loaded, mass, ref, ref_loaded)
    draw_run(record, acc["example"], out / f"maps_{run_dir.name}.png")
    add_spectra(record, loaded[1], initial_builder(run), out / f"spectra_{run_dir.name}")
    write_json_atomic(record, out / "analysis.json")
    return record


# -- a whole sweep ---------------------------------------------------------------------------------
def _under(key: str, fields: Sequence[str]) -> bool:
    return any(key == f or key.startswith(f + ".") for f in fields)


def _without(flat: dict, fields: Sequence[str]) -> dict:
    return {k: v for k, v in flat.items() if not _under(k, fields)}


def _differences(a: dict, b: dict, fields: Sequence[str]) -> int:
    return sum(a.get(k) != b.get(k) for k in set(a) | set(b) if _under(k, fields))


def reference_for(run: RunInfo, softmax: Sequence[RunInfo]) -> RunInfo | None:
    """The softmax run with the same config apart from the kernel and its settings (and lr for MQAR, the same lr
    preferred); the closest one if several fit; None if none does."""
    loose = LOOSE.get(run.experiment, ())
    base = _without(run.flat, MIXER_FIELDS + loose)
    same = [s for s in softmax if _without(s.flat, MIXER_FIELDS + loose) == base]
    if not same:
        return None
    return min(
        same, key=lambda s: (_differences(run.flat, s.flat, loose), _differences(run.flat, s.flat, MIXER_FIELDS))
    )


def group_fields(runs: Sequence[RunInfo]) -> list[str]:
    """The fields that name a cell: the experiments' usual ones (kernel, task, length, ...), then every other
    field that still tells runs apart (seed excepted: seeds are averaged)."""
    fields = ["experiment"] if len({r.experiment for r in runs}) > 1 else []
    fields += [k for r in runs for k in GROUP[r.experiment] if k not in fields]
    fields = list(dict.fromkeys(fields))
    flats = [r.flat for r in runs]
    for key in sorted({k for f in flats for k in f} - {*fields, "seed"}):
        values: dict[tuple, set] = {}
        for f in flats:
            values.setdefault(tuple(f.get(k) for k in fields), set()).add(f.get(key))
        if any(len(v) > 1 for v in values.values()):
            fields.append(key)
    return fields


def _headers(fields: Sequence[str]) -> list[str]:
    short = [f.split(".")[-1] for f in fields]
    return [s if short.count(s) == 1 else f for s, f in zip(short, fields)]


def _cell_names(fields: Sequence[str], values: Sequence) -> dict:
    """A cell's field values as table columns (floats as ``0.001``, not the table's fixed decimals)."""
    return {h: f"{v:g}" if isinstance(v, float) else v for h, v in zip(_headers(fields), values)}


def _ci(values) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return mean_ci(values).format(3) if values else "–"


def iou_table(records: Sequence[dict], fields: Sequence[str]) -> str:
    """One row per cell with a softmax reference: per layer, head-mean and best-head IoU, mean ± 95% CI."""
    cells: dict[tuple, list[dict]] = {}
    for r in records:
        if r["reference"]:
            cells.setdefault(tuple(r["group"].values()), []).append(r)
    if not cells:
        return "(no softmax run of this sweep has the config and seed of a kernel run: no IoU to report)\n"
    labels = list(dict.fromkeys(label for rs in cells.values() for r in rs for label in r["iou_by_layer"]))
    rows = []
    for key in sorted(cells, key=lambda k: tuple(str(v) for v in k)):
        rs = cells[key]
        row = {**_cell_names(fields, key), "seeds": len(rs)}
        for label in labels:
            row[f"{label}: IoU (head mean)"] = _ci([r["iou_by_layer"].get(label) for r in rs])
            row[f"{label}: best head"] = _ci([(r["best_head_iou_by_layer"].get(label) or {}).get("iou") for r in rs])
        rows.append(row)
    return markdown_table(rows)


def gamma_beta_table(records: Sequence[dict], fields: Sequence[str]) -> str:
    """Mean and std of each learned gamma/beta per cell, averaged over layers and seeds."""
    cells: dict[tuple, list[dict]] = {}
    for r in records:
        for row in r["gamma_beta"]:
            cells.setdefault((*r["group"].values(), row["param"]), []).append(row)
    rows = []
    for key in sorted(cells, key=lambda k: tuple(str(v) for v in k)):
        vals = cells[key]
        row = {**_cell_names(fields, key[:-1]), "param": key[-1], "n": len(vals)}
        row.update(mean=sum(v["mean"] for v in vals) / len(vals), std=sum(v["std"] for v in vals) / len(vals))
        rows.append(row)
    return markdown_table(rows, digits=3) if rows else "(no kernel with learned gamma/beta)\n"


def layers_line(records: Sequence[dict]) -> str:
    """``Attention layers: rebased: blocks.1 KernelAttention (4 heads), ...; softmax: ...`` (one run per kernel)."""
    kinds: dict[str, str] = {}
    for r in records:
        layers = [f"{k} {v} ({r['layers'][k]} heads)" for k, v in r["layer_kinds"].items()]
        kinds.setdefault(r["kernel"], ", ".join(layers))
    return "Attention layers: " + "; ".join(f"{kernel}: {text}" for kernel, text in kinds.items()) + "."


def sweep_report(sweep_dir: Path, records: Sequence[dict], fields: Sequence[str], num_examples: int, mass: float):
    alone = sorted({r["kernel"] for r in records if r["kernel"] != "softmax" and not r["reference"]})
    lines = [
        f"# Attention analysis of {sweep_dir}",
        "",
        f"IoU of each attention layer's top-mass sets with the softmax model's on the same inputs ({num_examples} "
        f"examples per run; per query row the smallest key set holding >= {mass:g} of the head-averaged weight; "
        "averaged over the query-mask rows of each example, then over the examples with such a row; mean ± 95% "
        "CI over seeds). Reference: the softmax run of this sweep with the same config and seed apart from the "
        "kernel and the kernel's own settings (MQAR: the lr may differ where no softmax run has the same lr). "
        "`best head`: the kernel model's single head that overlaps most with the softmax head mean.",
        "",
        iou_table(records, fields),
    ]
    lines += [layers_line(records), ""]
    if alone:
        lines += [f"No softmax reference for: {', '.join(alone)}.", ""]
    lines += ["## Learned gamma and beta (ReBased-like kernels)", "", gamma_beta_table(records, fields)]
    lines += spectra_section(records)
    figures = [r for r in records if r.get("figure")]
    if figures:
        lines += ["## Attention maps (example 0 of each cell's lowest seed; every layer and head)", ""]
        lines += [f"![{r['figure']}]({r['figure']})" for r in figures]
    return "\n".join(lines) + "\n"


def analyze_sweep(sweep_dir: Path, out: Path, num_examples: int, mass: float) -> str:
    runs = sweep_runs(sweep_dir)
    fields = group_fields(runs)
    softmax = [r for r in runs if r.config.get("kernel") == "softmax"]
    lowest: dict[tuple, int] = {}
    for run in runs:
        key = tuple(run.flat.get(k) for k in fields)
        lowest[key] = min(lowest.get(key, run.config["seed"]), run.config["seed"])
    records, drawn = [], set()
    for run in runs:
        ref = reference_for(run, softmax) if run.config.get("kernel") != "softmax" else None
        ref_loaded = load(ref, None) if ref is not None else (None, None)
        loaded = load(run, num_examples)
        record, acc = run_record(run, loaded, mass, ref, ref_loaded)
        record["group"] = {k: run.flat.get(k) for k in fields}
        key = tuple(record["group"].values())
        if key not in drawn and run.config["seed"] == lowest[key]:
            draw_run(record, acc["example"], out / f"maps_{readable_id(record['group'])}.png")
            add_spectra(record, loaded[1], initial_builder(run), out / f"spectra_{readable_id(record['group'])}")
            drawn.add(key)
        records.append(record)
    write_json_atomic(records, out / "analysis.json")
    text = sweep_report(sweep_dir, records, fields, num_examples, mass)
    write_text_atomic(text, out / "analysis.md")
    return text


# -- CLI -------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="kernelized analyze", description=__doc__.split("\n")[0])
    p.add_argument("path", help="a trained run folder (mqar, lra or lm), or a sweep folder holding many")
    p.add_argument("--reference", default=None, help="softmax run folder to compare one run with")
    p.add_argument("--examples", type=int, default=16, help="analysis examples per run")
    p.add_argument("--mass", type=float, default=0.9, help="share of each row's weight in its top-mass set")
    p.add_argument("--out", default=None, help="output folder (default: <path>/analysis)")
    return p.parse_args(list(argv))


def _print_run(record: dict) -> None:
    print(json.dumps({k: v for k, v in record.items() if k != "gamma_beta"}, indent=2))
    for row in record["gamma_beta"]:
        print(f"  {row['layer']}.{row['param']}: mean {row['mean']:.3f}, std {row['std']:.3f}")


@command
def main(argv: list[str]) -> int:
    args = parse_args(argv)
    path = Path(args.path)
    if args.examples < 1:
        raise ValueError(f"--examples must be >= 1, got {args.examples}")
    if not 0 < args.mass <= 1:
        raise ValueError(f"--mass must be in (0, 1], got {args.mass}")
    if not path.is_dir():
        raise ValueError(f"{path} is not a folder")
    is_run = (path / "config.yaml").is_file()
    if args.reference and not is_run:
        raise ValueError(f"--reference compares one run folder; {path} has no config.yaml")
    out = Path(args.out) if args.out else path / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    if is_run:
        _print_run(analyze_run(path, Path(args.reference) if args.reference else None, out, args.examples, args.mass))
    else:
        print(analyze_sweep(path, out, args.examples, args.mass))
    print(f"written to {out}")
    return 0

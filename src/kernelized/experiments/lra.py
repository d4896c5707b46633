"""`kernelized lra`: Long Range Arena with any kernel, one task or the whole grid.

    kernelized lra --task listops --kernel gmm-prf --preset small     # one cell: accuracy, steps/s, peak memory
    kernelized lra --all --preset small                                # kernels x tasks x seeds, table + figure
    kernelized lra --task text --kernel performer                      # the task's full preset, configs/lra/text.yaml

A preset (``configs/lra/<name>.yaml``) is fixed fields plus a grid over ``task``, ``kernel`` and ``seed``;
``per_task`` and ``per_kernel`` sections are merged into a run's config when its task / kernel matches, so one
preset can hold settings for several tasks (data sizes, lengths, widths) and kernels (feature counts).
``--task``, ``--kernel`` and ``--seeds`` narrow the grid without changing run ids, so a run has one folder
whichever command reaches it: ``runs/lra/<preset>/task=<t>_kernel=<k>_seed=<s>/`` holds ``config.yaml``,
``train/{metrics.jsonl, checkpoint.pt, summary.json}`` (the Trainer's) and ``result.json`` (with the test accuracy),
plus ``results.csv``, ``report.md`` and ``figure.png`` in ``runs/lra/<preset>/``. Killed runs resume from their
checkpoint with the same command; finished ones are not run again.

ListOps and Pathfinder data are generated once per settings into ``data.cache_dir`` unless ``data.path`` points
at files (LRA's ``listops-1000`` folder works as is). Text, Retrieval and Image read ``data.path`` or the hub.
Reported: test accuracy of the final model (mean and 95% Student-t CI over seeds), the best validation accuracy
over the run's evaluations, training steps per second and peak memory (CUDA allocator peak; on CPU the run's peak
RSS: the process's peak is reset before training, on Linux).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import sys
from pathlib import Path

import torch
from torch.utils.data import Subset, TensorDataset

from kernelized import kernels as kernel_registry
from kernelized.data import listops, lra, pathfinder
from kernelized.experiments.common import (
    expand_grid,
    get_key,
    load_preset,
    markdown_table,
    reduce_runs,
    run_sweep,
    with_ci_column,
    write_markdown_table,
)
from kernelized.models.classifier import DualEncoderClassifier, EncoderClassifier, encoder_config
from kernelized.train import TrainConfig, Trainer
from kernelized.train.checkpoint import write_text_atomic
from kernelized.train.memory import peak_rss_mb, reset_peak_rss

# Every field a preset may set; empty mappings are free-form.
DEFAULTS = {
    "task": "listops",
    "kernel": "softmax",
    "seed": 0,
    "threads": None,  # torch threads per run (None = torch's default); 1 is fastest for small CPU runs
    "data": {
        "path": None,  # folder with the task's files; None = generate (listops, pathfinder) or the hub
        "cache_dir": "runs/lra/data",  # where generated data goes
        "max_len": None,  # tokens per input; None = the generator's longest or LRA's length
        "train_examples": None,  # use only the first N training examples (None = all)
        "eval_examples": None,  # ... and validation / test examples
        "generate": {},  # listops: num_examples, seed and ListOpsConfig fields; pathfinder: num_examples, seed,
        #                  preset (pf32 | pf16) and PathfinderConfig fields
    },
    "model": {
        "d_model": 64,
        "num_layers": 2,
        "num_heads": 4,
        "feature_dim": None,  # per-head query/key size fed to the kernel; None = d_model // num_heads
        "mlp_hidden": None,  # None = 4 * d_model
        "head_hidden": None,  # classifier head width; None = 2 * d_model
        "pooling": "cls",
        "positions": "sinusoidal",
        "dropout": 0.0,
        "mode": "chunk",  # linear attention form (bidirectional)
        "chunk_size": 64,
    },
    "kernel_options": {},  # options of the feature map, e.g. {num_features: 256}
    "train": TrainConfig().to_dict(),
    "per_task": {},  # {task: {any of the fields above}} merged when the run's task matches
    "per_kernel": {},  # {kernel: {...}} merged when the run's kernel matches (after per_task)
}

# LRA-paper Table 1 (Tay et al. 2021), test accuracy %; from shared/reference/benchmarks.md section 1.3.
PUBLISHED = {
    "Transformer (softmax)": {"listops": 36.37, "text": 64.27, "retrieval": 57.46, "image": 42.44, "pathfinder": 71.40},
    "Performer": {"listops": 18.01, "text": 65.40, "retrieval": 53.82, "image": 42.77, "pathfinder": 77.05},
    "Linear Trans. (elu+1)": {"listops": 16.13, "text": 65.90, "retrieval": 53.09, "image": 42.34, "pathfinder": 75.30},
}
TASK_ORDER = ["listops", "text", "retrieval", "image", "pathfinder"]


# -- config --------------------------------------------------------------------------------------------
def _deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and out[key]:
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve(config: dict) -> dict:
    """A run's effective config: ``per_task[task]`` then ``per_kernel[kernel]`` merged over the fixed fields."""
    task, kernel = config["task"], config["kernel"]
    lra.task_info(task)
    kernel_names = ["softmax", *kernel_registry.available()]
    if kernel not in kernel_names:
        raise ValueError(f"kernel must be one of {kernel_names}, got {kernel!r}")
    out = {k: v for k, v in config.items() if k not in ("per_task", "per_kernel")}
    for section, key in (("per_task", task), ("per_kernel", kernel)):
        update = (config.get(section) or {}).get(key) or {}
        unknown = sorted(set(update) - set(DEFAULTS) - {"per_task", "per_kernel"})
        if unknown:
            raise ValueError(f"{section}.{key} has unknown field(s) {unknown}; valid: {sorted(DEFAULTS)}")
        out = _deep_merge(out, update)
    return out


# -- data ----------------------------------------------------------------------------------------------
def _generated_dir(task: str, data: dict) -> Path:
    gen = dict(data.get("generate") or {})
    key = hashlib.sha1(json.dumps({"task": task, **gen}, sort_keys=True).encode()).hexdigest()[:10]
    return Path(data["cache_dir"]) / f"{task}-{key}"


def prepare_data(task: str, data: dict, progress: bool = True) -> Path | None:
    """The folder a run reads: ``data.path``, or generated data (written once, atomically) for ListOps and
    Pathfinder; None for the hub."""
    if data.get("path") is not None:
        path = Path(data["path"])
        if not path.exists():
            raise FileNotFoundError(f"data.path {path} does not exist")
        return path
    if task not in ("listops", "pathfinder"):
        return None
    folder = _generated_dir(task, data)
    if (folder / "done").exists():
        return folder
    gen = dict(data.get("generate") or {})
    num, seed = gen.pop("num_examples", 10_000), gen.pop("seed", 0)
    tmp = folder.with_name(folder.name + ".tmp")
    if task == "listops":
        cfg = listops.ListOpsConfig(**gen)
        listops.write_splits(tmp, num, seed=seed, config=cfg, progress=progress)
    else:
        cfg = pathfinder.PathfinderConfig.preset(gen.pop("preset", "pf32"))
        for key, value in gen.items():
            if not hasattr(cfg, key):
                raise ValueError(f"data.generate.{key} is not a Pathfinder setting; valid: {sorted(vars(cfg))}")
            setattr(cfg, key, value)
        pathfinder.write_splits(tmp, num, seed=seed, config=cfg, progress=progress)
    (tmp / "done").write_text(json.dumps({"task": task, **(data.get("generate") or {})}))
    if folder.exists():  # another process finished first
        import shutil

        shutil.rmtree(tmp)
    else:
        tmp.rename(folder)
    return folder


def default_max_len(task: str, data: dict) -> int:
    if data.get("max_len"):
        return int(data["max_len"])
    gen = data.get("generate") or {}
    if task == "listops" and data.get("path") is None:
        return int(gen.get("max_length", listops.ListOpsConfig().max_length)) - 1  # lengths are exclusive
    if task == "pathfinder" and data.get("path") is None:
        size = gen.get("size", pathfinder.PathfinderConfig.preset(gen.get("preset", "pf32")).size)
        return int(size) ** 2
    return lra.task_info(task).max_len


def load_splits(task: str, data: dict, path: Path | None) -> dict[str, TensorDataset]:
    max_len = default_max_len(task, data)
    out = {}
    for split in ("train", "val", "test"):
        ds = lra.load_task(task, split, max_len=max_len, path=path)
        limit = data.get("train_examples" if split == "train" else "eval_examples")
        if limit is not None and limit < len(ds):
            ds = Subset(ds, range(int(limit)))
        out[split] = ds
    return out


# -- model ---------------------------------------------------------------------------------------------
def mixer_spec(kernel: str, model: dict, kernel_options: dict) -> dict:
    """The mixer of every layer: softmax attention, or kernel attention with ``kernel`` (bidirectional)."""
    heads = model["num_heads"]
    if kernel == "softmax":
        return {"mixer": "softmax", "num_heads": heads, "dropout": 0.0}
    return {
        "mixer": "kernel",
        "kernel": kernel,
        "num_heads": heads,
        "feature_dim": model.get("feature_dim") or model["d_model"] // heads,
        "mode": model["mode"],
        "chunk_size": model["chunk_size"],
        "kernel_options": dict(kernel_options or {}),
    }


def build_model(config: dict) -> torch.nn.Module:
    """The classifier (or two-tower model for retrieval) a resolved config describes."""
    task, m, data = config["task"], config["model"], config["data"]
    info = lra.task_info(task)
    max_len = default_max_len(task, data) + (1 if m["pooling"] == "cls" else 0)
    cfg = encoder_config(
        info.vocab_size,
        m["d_model"],
        m["num_layers"],
        mixer_spec(config["kernel"], m, config.get("kernel_options")),
        mlp_hidden=m.get("mlp_hidden"),
        max_len=max_len,
        positions=m["positions"],
        dropout=m["dropout"],
    )
    cls = DualEncoderClassifier if info.dual else EncoderClassifier
    return cls(cfg, info.num_classes, pooling=m["pooling"], head_hidden=m.get("head_hidden"))


# -- one run -------------------------------------------------------------------------------------------
def run_one(config: dict, run_dir: Path) -> dict:
    """Train one (task, kernel, seed) and evaluate on the test split; returns the summary (resumable)."""
    config = resolve(config)
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    train_cfg = TrainConfig.from_dict({**config["train"], "seed": config["seed"]})
    task = config["task"]
    path = prepare_data(task, config["data"], progress=train_cfg.progress)
    splits = load_splits(task, config["data"], path)
    torch.manual_seed(config["seed"])
    model = build_model(config)
    trainer = Trainer(model, train_cfg, splits["train"], splits["val"], run_dir=Path(run_dir) / "train")
    memory_file = Path(run_dir) / "train" / "peak_rss.json"
    measured = reset_peak_rss() and not (Path(run_dir) / "train" / "summary.json").exists()
    summary = trainer.fit()
    if measured:  # this call trained: the peak RSS of the training (data and model included), kept for re-reads
        write_text_atomic(json.dumps({"peak_rss_mb": peak_rss_mb()}), memory_file)
    trainer.load_weights()  # the final model, also when fit() found the run already finished
    test = trainer.evaluate(splits["test"])
    if summary.get("peak_memory_mb"):
        peak, kind = summary["peak_memory_mb"], "cuda"
    elif memory_file.exists():
        peak, kind = json.loads(memory_file.read_text())["peak_rss_mb"], "cpu_rss_run"
    else:  # the process's lifetime peak (earlier runs in the same worker included)
        peak, kind = summary.get("peak_rss_mb"), "cpu_rss_process"
    return {
        **summary,
        "task": task,
        "kernel": config["kernel"],
        "seed": config["seed"],
        "test": test,
        "val_best_accuracy": summary["best"].get("accuracy"),
        "peak_memory_mb": peak,
        "peak_memory_kind": kind,
        "num_train": len(splits["train"]),
        "num_test": len(splits["test"]),
        "max_len": default_max_len(task, config["data"]),
    }


# -- report --------------------------------------------------------------------------------------------
def summarize(records: list[dict]) -> list[dict]:
    """Rows per (task, kernel): test accuracy mean ± 95% CI over seeds, plus mean val accuracy, steps/s, memory."""
    rows = reduce_runs(records, cell_keys=["task", "kernel"], metric="test.accuracy", lr_key=None)
    rows = with_ci_column(rows, "test acc % (95% CI)", digits=1, scale=100.0)
    by_cell: dict[tuple, list[dict]] = {}
    for rec in records:
        if rec.get("summary"):
            by_cell.setdefault((rec["config"]["task"], rec["config"]["kernel"]), []).append(rec["summary"])
    for row in rows:
        sums = by_cell.get((row["task"], row["kernel"]), [])

        def mean(key, sums=sums):
            vals = [get_key(s, key) for s in sums if get_key(s, key) is not None]
            return sum(vals) / len(vals) if vals else math.nan

        row["val acc %"] = 100 * mean("val_best_accuracy")
        row["steps/s"] = mean("steps_per_s")
        row["peak MB"] = mean("peak_memory_mb")
        row["seconds"] = mean("wall_time_s")
    order = {t: i for i, t in enumerate(TASK_ORDER)}
    return sorted(rows, key=lambda r: (order.get(r["task"], 99), -r["mean"] if not math.isnan(r["mean"]) else 0))


def write_figure(rows: list[dict], path: Path, title: str) -> None:
    """Test accuracy per kernel, one panel per task, with 95% CI bars and the chance level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TASK_ORDER if any(r["task"] == t for r in rows)]
    per_task = max(sum(r["task"] == t for r in rows) for t in tasks)
    width = 1.5 + len(tasks) * (1.0 + 0.35 * per_task)
    fig, axes = plt.subplots(1, len(tasks), figsize=(width, 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        sub = [r for r in rows if r["task"] == task]
        names = [r["kernel"] for r in sub]
        means = [100 * r["mean"] for r in sub]
        errs = [0.0 if math.isnan(r["half_width"]) else 100 * r["half_width"] for r in sub]
        colors = ["tab:gray" if n == "softmax" else "tab:blue" for n in names]
        ax.bar(range(len(sub)), means, yerr=errs, capsize=3, color=colors)
        ax.axhline(100 / lra.task_info(task).num_classes, color="k", ls="--", lw=0.8, label="chance")
        ax.set_xticks(range(len(sub)), names, rotation=60, ha="right", fontsize=8)
        ax.set_title(task)
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def published_table() -> str:
    rows = [{"model": name, **{t: f"{v:.2f}" for t, v in accs.items()}} for name, accs in PUBLISHED.items()]
    return markdown_table(rows, ["model", *TASK_ORDER], ["published (LRA paper, Table 1)", *TASK_ORDER])


def write_report(records: list[dict], out_dir: Path, preset_name: str, preset: dict) -> list[dict]:
    rows = summarize(records)
    columns = ["task", "kernel", "test acc % (95% CI)", "n", "val acc %", "steps/s", "peak MB", "seconds"]
    note = (
        f"Preset `{preset_name}`; test accuracy of the final model, mean and 95% Student-t interval over seeds "
        "(n = seeds). Peak MB is the CUDA allocator peak on GPU; on CPU the run's peak RSS (Linux VmHWM reset before "
        "training; where that was not possible, the worker process's lifetime peak).\n\n"
        "For orientation only, the published LRA numbers (different sizes and lengths, not comparable to a small "
        "preset):\n\n" + published_table()
    )
    write_markdown_table(out_dir / "report.md", rows, columns, title=f"LRA ({preset_name})", note=note, digits=2)
    write_figure(rows, out_dir / "figure.png", f"LRA, preset {preset_name}: test accuracy, 95% CI over seeds")
    write_text_atomic(json.dumps(rows, indent=1, default=str), out_dir / "table.json")
    return rows


# -- CLI -----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kernelized lra", description=__doc__.splitlines()[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--task", help=f"one of {list(lra.TASKS)}")
    what.add_argument("--all", action="store_true", help="every task x kernel x seed of the preset")
    p.add_argument("--kernel", help="kernel name (softmax = softmax attention); default: the preset's list")
    p.add_argument("--kernels", help="comma-separated kernels (with --all)")
    p.add_argument("--seeds", help="comma-separated seeds (default: the preset's)")
    p.add_argument(
        "--preset", help="configs/lra/<name>.yaml or a path; default: the task's preset, or small with --all"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset field")
    p.add_argument("--out", help="output folder (default runs/lra/<preset>)")
    p.add_argument("--workers", type=int, default=1, help="runs in parallel processes")
    p.add_argument("--device", help="auto | cpu | cuda[:N] (sets train.device)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _csv(text: str, cast=str) -> list:
    return [cast(v.strip()) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.task is not None:
        lra.task_info(args.task)  # unknown task: a clear error before anything runs
    preset_name = args.preset or (args.task if args.task else "small")
    overrides = list(args.set)
    if args.device:
        overrides.append(f"train.device={args.device}")
    if args.no_progress or args.workers > 1:
        overrides.append("train.progress=false")
    preset = load_preset("lra", preset_name, overrides, defaults=DEFAULTS)
    # task, kernel and seed are always grid axes (in that order), so run ids and folders never depend on which
    # command reached a run; --task / --kernel(s) / --seeds narrow an axis
    grid = preset["grid"]
    narrow = {
        "task": [args.task] if args.task else None,
        "kernel": [args.kernel] if args.kernel else (_csv(args.kernels) if args.kernels else None),
        "seed": _csv(args.seeds, int) if args.seeds else None,
    }
    axes = {axis: narrow[axis] or grid.get(axis) or [preset[axis]] for axis in narrow}
    preset["grid"] = {**axes, **{k: v for k, v in grid.items() if k not in axes}}
    runs = expand_grid(preset)
    for run in runs:
        resolve(run.config)  # unknown task or kernel, bad per_task/per_kernel keys: fail before training
    stem = Path(preset_name).stem
    out_dir = Path(args.out) if args.out else Path("runs/lra") / stem
    for task in sorted({run.config["task"] for run in runs}):  # generate shared data once, before any worker
        first = resolve(next(r.config for r in runs if r.config["task"] == task))
        prepare_data(task, first["data"], progress=not args.no_progress)
    records = run_sweep(runs, run_one, out_dir, workers=args.workers, progress=not args.no_progress)
    rows = write_report(records, out_dir, stem, preset)
    cols = ["task", "kernel", "test acc % (95% CI)", "n", "val acc %", "steps/s", "peak MB"]
    print(markdown_table(rows, cols, digits=2))
    print(f"results: {out_dir / 'results.csv'}, {out_dir / 'report.md'}, {out_dir / 'figure.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

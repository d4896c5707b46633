"""`kernelized lra`: Long Range Arena with any kernel, one task or the whole grid.

    kernelized data fetch fashion-mnist && kernelized data fetch bbc-news   # once: the CPU tier's real corpora
    kernelized lra --preset cpu --task listops --workers 2             # one task's sweep: 13 kernels x 3 seeds
    kernelized lra --task text --kernel gmm-prf --seeds 0              # one cell of the cpu preset (the default)
    kernelized lra --preset text --kernels performer,elu --seeds 0,1   # LRA's full Text task (sized for a GPU)
    kernelized lra --preset text --scaling                             # time and memory of a step at T = 1k..4k

A preset (``configs/lra/<name>.yaml``, default ``cpu``) is fixed fields plus a grid over ``task``, ``kernel``
and ``seed``; ``per_task`` and ``per_kernel`` sections are merged into a run's config when its task / kernel
matches (a task's section may hold its own ``per_kernel``), so one preset can hold settings for several tasks
(data sizes, lengths, widths) and kernels (feature counts); every key inside them is checked against the
preset's fields. ``--task``, ``--kernel(s)`` and ``--seeds`` narrow the grid without changing run ids. A run is
its resolved config: its folder ``runs/lra/<preset>/task=<t>_kernel=<k>_seed=<s>-<hash>/`` holds ``config.yaml``
(resolved), ``train/{metrics.jsonl, checkpoint.pt, summary.json}`` (the Trainer's) and ``result.json`` (with the
test accuracy and the test split's majority-class rate); ``runs/lra/<preset>/`` gets ``results.csv`` and the
report (:mod:`kernelized.experiments.lra_report`). Killed runs resume from their checkpoint with the same
command; finished ones are not run again. The full-size presets name ``cpu`` as their ``cpu_preset``: started on
a CPU they print their estimated time first.

Data (``data.source``, :data:`kernelized.data.lra.SOURCES`): ListOps and Pathfinder are generated once per
settings into the data cache (``$KERNELIZED_DATA``, default ``~/.cache/kernelized/data``, or ``data.cache_dir``)
unless ``data.path`` points at files (LRA's ``listops-1000`` folder works as is); ``fashion-mnist`` and
``bbc-news`` are read from the data cache after ``kernelized data fetch`` (a missing corpus is one error line
naming that command, before any training); IMDB, AAN and CIFAR-10 from ``data.path`` or the hub.
Reported: test accuracy of the final model (mean and 95% Student-t CI over seeds) beside the majority class and
chance, paired tests, the best validation accuracy, training steps per second and peak memory (CUDA allocator
peak; on CPU the run's peak RSS: the process's peak is reset before training, on Linux).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Subset, TensorDataset

from kernelized.data import fetch, listops, lra, pathfinder
from kernelized.data.cache import cache_path
from kernelized.experiments import lra_scaling
from kernelized.experiments.framework import cli
from kernelized.experiments.framework.grid import Run, config_hash, expand_grid, narrow
from kernelized.experiments.framework.presets import load_preset, parse_list
from kernelized.experiments.framework.schema import (
    ExperimentConfig,
    check_keys,
    check_types,
    deep_update,
    defaults_of,
    train_defaults,
)
from kernelized.experiments.framework.sweep import load_trained_run, other_runs
from kernelized.experiments.framework.tables import markdown_table
from kernelized.experiments.lra_report import write_report
from kernelized.kernels import reference_kl
from kernelized.layers.mixers import attention_names, attention_spec
from kernelized.models.classifier import DualEncoderClassifier, EncoderClassifier, encoder_config
from kernelized.train import TrainConfig, Trainer
from kernelized.train.checkpoint import write_text_atomic
from kernelized.train.memory import peak_rss_mb, reset_peak_rss


@dataclass
class Data:
    path: str | None = None  # folder with the task's files; None = generate (listops, pathfinder), the data
    # cache (fetched sources) or the hub
    source: str | None = None  # None = LRA's data; text / retrieval: bbc-news; image: fashion-mnist (data.lra.SOURCES)
    split_seed: int = 0  # bbc-news: the stratified train/val/test split (fixed across run seeds: paired tests)
    pairs_per_document: int = 1  # bbc-news retrieval: rounds of (same-topic, other-topic) pairs per document
    cache_dir: str | None = None  # where generated data goes; None = the data cache ($KERNELIZED_DATA/lra)
    max_len: int | None = None  # tokens per input; None = the generator's longest or LRA's length
    train_examples: int | None = None  # use only the first N training examples (None = all)
    eval_examples: int | None = None  # ... and validation / test examples
    # listops: num_examples, seed and ListOpsConfig fields; pathfinder: num_examples, seed, preset (pf32 | pf16)
    # and PathfinderConfig fields
    generate: dict = field(default_factory=dict)


@dataclass
class Model:
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    feature_dim: int | None = None  # per-head query/key size fed to the kernel; None = d_model // num_heads
    mlp_hidden: int | None = None  # None = 4 * d_model
    head_hidden: int | None = None  # classifier head width; None = 2 * d_model
    pooling: str = "cls"
    positions: str = "sinusoidal"
    dropout: float = 0.0
    embed_std: float = 1.0  # token embedding init std (LRA's 1.0; 0.02 drowns tokens under sinusoidal positions)
    mode: str = "auto"  # kernel attention form: auto (the cheapest exact form per call) | parallel | chunk
    chunk_size: int = 64


@dataclass
class LRASettings(ExperimentConfig):
    """Every field of an LRA preset; ``per_task`` / ``per_kernel`` hold any of the others, per task / kernel."""

    task: str = "listops"
    kernel: str = "softmax"  # softmax, or a kernel name or alias
    threads: int | None = None  # torch threads per run (None = torch's default); 1 is fastest for small CPU runs
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)
    kernel_options: dict = field(default_factory=dict)  # options of the feature map, e.g. {num_features: 256}
    train: dict = field(default_factory=train_defaults, metadata={"types": TrainConfig})
    per_task: dict = field(default_factory=dict)  # {task: {any of the fields above}} merged when the task matches
    per_kernel: dict = field(default_factory=dict)  # {kernel: {...}} merged when the kernel matches (after per_task)


DEFAULTS = defaults_of(LRASettings)
SECTION_SCHEMA = {k: v for k, v in DEFAULTS.items() if k not in ("per_task", "per_kernel", "task", "kernel")}
IGNORE = ("data.cache_dir",)  # where generated data lives does not change a result

LRA_TRAIN_SIZES = {"listops": 96_000, "text": 25_000, "retrieval": 147_086, "image": 45_000, "pathfinder": 160_000}


# -- config --------------------------------------------------------------------------------------------
def check_sections(config: dict, source: str) -> None:
    """``per_task`` keys are tasks, ``per_kernel`` keys attention names, and every field inside them, at any
    depth, a field of the preset (named with its section's valid keys otherwise)."""
    for section, valid in (("per_task", list(lra.TASKS)), ("per_kernel", attention_names())):
        entries = config.get(section) or {}
        if not isinstance(entries, dict):
            raise ValueError(f"{section} in {source} must map names to settings, got {entries!r}")
        for key, update in entries.items():
            if key not in valid:
                raise ValueError(f"{section}.{key} in {source}: {key!r} is not one of {valid}")
            update = dict(update or {})
            if section == "per_task" and "per_kernel" in update:  # a task's own per-kernel settings
                check_sections({"per_kernel": update.pop("per_kernel")}, f"{source}, per_task.{key}")
            check_keys(SECTION_SCHEMA, update, source, f"{section}.{key}.")


def resolve(config: dict) -> dict:
    """A run's effective config: ``per_task[task]``, then ``per_kernel[kernel]``, then the task's own
    ``per_task[task].per_kernel[kernel]`` merged over the fixed fields (idempotent: a resolved config has no
    per_* sections left)."""
    task, kernel = config["task"], config["kernel"]
    lra.task_info(task)
    attention_spec(kernel)  # an unknown kernel name fails here, listing the valid ones
    out = {k: v for k, v in config.items() if k not in ("per_task", "per_kernel")}
    task_update = dict((config.get("per_task") or {}).get(task) or {})
    task_kernels = task_update.pop("per_kernel", None) or {}
    for update in (task_update, (config.get("per_kernel") or {}).get(kernel), task_kernels.get(kernel)):
        out = deep_update(out, update or {})
    check_types(out, LRASettings, f"the run's config (task {task}, kernel {kernel})")
    return out


# -- data ----------------------------------------------------------------------------------------------
def _generated_dir(task: str, data: dict) -> Path:
    gen = dict(data.get("generate") or {})
    root = Path(data["cache_dir"]) if data.get("cache_dir") else cache_path("lra")
    return root / f"{task}-{config_hash({'task': task, **gen})}"


def prepare_data(task: str, data: dict, progress: bool = True) -> Path | None:
    """The folder a run reads: ``data.path``, or generated data (written once, atomically) for ListOps and
    Pathfinder; None for the hub."""
    source = data.get("source")
    lra.task_info(task, source)  # a source the task does not have fails here
    if source in lra.FETCHED:
        return fetch.verified_folder(source, data.get("path"))  # missing: one error naming the fetch command
    if data.get("path") is not None:
        path = Path(data["path"])
        if not path.exists():
            raise ValueError(f"data.path: {path} does not exist (a folder with the {task} files was expected)")
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
        ds = lra.load_task(
            task,
            split,
            max_len=max_len,
            path=path,
            source=data.get("source"),
            split_seed=data.get("split_seed", 0),
            pairs_per_document=data.get("pairs_per_document", 1),
        )
        limit = data.get("train_examples" if split == "train" else "eval_examples")
        if limit is not None and limit < len(ds):
            ds = Subset(ds, range(int(limit)))
        out[split] = ds
    return out


# -- model ---------------------------------------------------------------------------------------------
def mixer_spec(kernel: str, model: dict, kernel_options: dict, task: str | None = None) -> dict:
    """The mixer of every layer: softmax attention, or kernel attention with ``kernel`` (bidirectional). With
    ``kernel_options.reference: kl`` the KL code's sizes for ``task`` apply unless ``reference_task`` says else."""
    spec = attention_spec(kernel)
    heads = model["num_heads"]
    if spec["mixer"] == "softmax":
        return {**spec, "num_heads": heads, "dropout": 0.0}
    kernel_options = dict(kernel_options or {})
    if kernel_options.get("reference") and task in reference_kl.TASKS:
        kernel_options.setdefault("reference_task", task)
    return {
        **spec,
        "num_heads": heads,
        "feature_dim": model.get("feature_dim") or model["d_model"] // heads,
        "mode": model["mode"],
        "chunk_size": model["chunk_size"],
        "kernel_options": kernel_options,
    }


def build_model(config: dict) -> torch.nn.Module:
    """The classifier (or two-tower model for retrieval) a resolved config describes."""
    task, m, data = config["task"], config["model"], config["data"]
    info = lra.task_info(task, data.get("source"))
    max_len = default_max_len(task, data) + (1 if m["pooling"] == "cls" else 0)
    cfg = encoder_config(
        info.vocab_size,
        m["d_model"],
        m["num_layers"],
        mixer_spec(config["kernel"], m, config.get("kernel_options"), task),
        mlp_hidden=m.get("mlp_hidden"),
        max_len=max_len,
        positions=m["positions"],
        dropout=m["dropout"],
        embed_std=m["embed_std"],
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
        "majority": majority_rate(splits["test"]),
        "num_train": len(splits["train"]),
        "num_test": len(splits["test"]),
        "max_len": default_max_len(task, config["data"]),
    }


def majority_rate(ds) -> float:
    """The share of the most frequent label in a dataset whose last tensor is the labels (a Subset too)."""
    if isinstance(ds, Subset):
        labels = ds.dataset.tensors[-1][torch.as_tensor(list(ds.indices), dtype=torch.long)]
    else:
        labels = ds.tensors[-1]
    return float(torch.bincount(labels).max()) / max(1, len(labels))


def train_flops(runs: list[Run]) -> float:
    """6 x parameters x training tokens, summed over the runs."""
    total = 0.0
    for run in runs:
        c = run.config
        with torch.device("meta"):
            params = sum(p.numel() for p in build_model(c).parameters())
        t, data = c["train"], c["data"]
        examples = data.get("train_examples") or (data.get("generate") or {}).get("num_examples")
        examples = examples or LRA_TRAIN_SIZES[c["task"]]
        steps = t.get("max_steps") or t["epochs"] * math.ceil(examples / t["batch_size"])
        total += 6 * params * steps * t["batch_size"] * default_max_len(c["task"], data)
    return total


def validate(runs: list[Run]) -> None:
    """Every run's model builds (on the meta device) and its training settings are valid, before any training."""
    built = set()
    for run in runs:
        try:
            TrainConfig.from_dict({**run.config["train"], "seed": run.config["seed"]})
            key = json.dumps({k: run.config[k] for k in ("task", "kernel", "model", "kernel_options", "data")})
            if key not in built:
                with torch.device("meta"):
                    build_model(run.config)
                built.add(key)
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"run {run.run_id}: {e}") from None


# -- what kernelized analyze needs ---------------------------------------------------------------------
def initial_model(config: dict) -> torch.nn.Module:
    """The run's model as :func:`run_one` built it before training (same seed): what training started from."""
    config = resolve(config)
    torch.manual_seed(config["seed"])
    return build_model(config)


def load_trained(run_dir: str | Path) -> tuple[dict, torch.nn.Module]:
    """A run's (resolved) config and its model with the final checkpoint's weights, in eval mode."""
    return load_trained_run(run_dir, build_model, "train/checkpoint.pt", resolve)


def analysis_batch(config: dict, num_examples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first test examples: ``inputs [N, L]`` (the first input of a two-input task) and ``query_mask [N, L]``
    (True at tokens that are not padding; a [CLS] model's maps are over [CLS] + the tokens)."""
    path = prepare_data(config["task"], config["data"], progress=False)
    test = load_splits(config["task"], config["data"], path)["test"]
    inputs = torch.stack([test[i][0] for i in range(min(num_examples, len(test)))])  # retrieval: (x1, x2, y)[0]
    return inputs, inputs != 0


# -- CLI -----------------------------------------------------------------------------------------------
def prepare_runs(config: dict, args, source: str) -> list[Run]:
    """The grid narrowed by --task / --kernel(s) / --seeds (task, kernel, seed always in the run id), resolved
    (per_task, per_kernel) and validated."""
    check_sections(config, source)
    args.kernels = args.kernels or args.kernel
    cli.narrow_axes(config, args)
    tasks = parse_list(args.task, "--task")
    for task in tasks or []:
        lra.task_info(task)
    narrow(config, "task", tasks)
    runs = expand_grid(config, always=("task", "kernel", "seed"), ignore=IGNORE, resolve=resolve)
    validate(runs)
    return runs


def scaling(args, runs: list[Run]) -> int:
    """``--scaling``: :mod:`kernelized.experiments.lra_scaling` on the first run of each kernel (one task)."""
    tasks = sorted({r.config["task"] for r in runs})
    if len(tasks) != 1:
        raise ValueError(f"--scaling measures one task; the runs have {tasks} (pass --task)")
    lengths = [int(x) for x in parse_list(args.scaling_lengths, "--scaling-lengths")]
    configs = {}
    for run in runs:
        configs.setdefault(run.config["kernel"], run.config)
    out_dir = (Path(args.out) if args.out else Path("runs") / "lra" / Path(str(args.preset)).stem) / "scaling"
    rows = lra_scaling.measure_scaling(configs, lengths, args.scaling_batch, args.scaling_steps, build_model,
                                       progress=not args.no_progress)  # fmt: skip
    header = (f"# LRA {tasks[0]} model (preset {Path(str(args.preset)).stem}): one AdamW step, batch "
              f"{args.scaling_batch}, {torch.get_num_threads()} threads, median of {args.scaling_steps}")  # fmt: skip
    print(lra_scaling.write(rows, out_dir, header))
    print(f"results: {out_dir / 'scaling.md'}, scaling.csv, scaling.png")
    return 0


@cli.command
def main(argv: list[str]) -> int:
    parser = cli.experiment_parser("lra", __doc__, default_preset="cpu")
    parser.add_argument("--task", help=f"comma-separated tasks of {list(lra.TASKS)} (default: the preset's)")
    parser.add_argument("--kernel", help="one kernel (the same as --kernels with one name)")
    parser.add_argument("--all", action="store_true", help="every task x kernel x seed of the preset (the default)")
    parser.add_argument("--scaling", action="store_true", help="time and memory of a training step vs T, no training")
    parser.add_argument("--scaling-lengths", default="1024,2048,4096", help="comma-separated T for --scaling")
    parser.add_argument("--scaling-batch", type=int, default=1, help="batch size for --scaling")
    parser.add_argument("--scaling-steps", type=int, default=3, help="timed steps per cell for --scaling")
    args = parser.parse_args(argv)
    config = load_preset("lra", args.preset, cli.overrides(args), defaults=DEFAULTS)
    runs = prepare_runs(config, args, f"preset {args.preset}")
    if args.scaling:
        return scaling(args, runs)
    stem, out_dir, workers, todo = cli.start(args, config, "lra", runs, train_flops)
    if args.dry_run:
        print("\n".join(f"  {run.run_id}" for run in runs))
        return 0
    for task in [] if args.report_only else sorted({run.config["task"] for run in todo}):
        first = next(r.config for r in todo if r.config["task"] == task)  # shared data once, before any worker
        prepare_data(task, first["data"], progress=not args.no_progress)
    start = time.perf_counter()
    records = cli.sweep(args, runs, run_one, out_dir, workers, "lra")
    if not args.report_only:
        print(f"wall time {time.perf_counter() - start:.0f} s")
    rows = write_report(records, out_dir, stem, other_runs(runs, out_dir))
    cols = ["task", "kernel", "test acc % (95% CI)", "n", "majority %", "val acc %", "steps/s", "peak MB"]
    print(markdown_table(rows, cols, digits=2))
    print(f"results: {out_dir / 'results.csv'}, {out_dir / 'report.md'}, {out_dir / 'figure.png'}, curves.png")
    return cli.finish(records)


if __name__ == "__main__":
    sys.exit(main())

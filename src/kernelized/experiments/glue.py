"""`kernelized glue`: the KL-Transformer paper's GLUE protocol with any kernel: masked-LM pretraining, then
fine-tuning on GLUE tasks (or Rotten Tomatoes offline), dev-set scores, the GLUE average, paired tests.

    kernelized data fetch ptb && kernelized data fetch rotten-tomatoes    # once: the CPU tier's real corpora
    kernelized glue --preset cpu --workers 2                  # pretrain on PTB, fine-tune on Rotten Tomatoes
    kernelized glue --preset cpu --stage pretrain             # only the pretraining runs
    kernelized glue --preset cpu --kernels softmax,gmm-prf --seeds 0
    kernelized glue --preset paper --set finetune.data.path=glue_data   # WikiText-103 + all nine GLUE tasks (GPU)

A preset (``configs/glue/<name>.yaml``) is fixed fields plus a grid over ``kernel``, ``task``,
``finetune.train.lr`` and ``seed``; ``per_kernel`` sections (any field) merge when the kernel matches. Two kinds
of runs come out of it, each a run of the framework (resolved config, hash in the id, exact resume):

- one **pretraining run** per kernel, ``runs/glue/<preset>/pretrain/kernel=<k>-<hash>/``, whose config is the
  ``tokenizer``, ``model``, ``kernel_options`` and ``pretrain`` sections (:mod:`.glue_pretrain`);
- one **fine-tuning run** per (task, kernel, lr, seed), ``runs/glue/<preset>/finetune/...-<hash>/``, whose config
  holds the ``finetune`` section and the id of the pretraining run it starts from (``pretrain_run``), so a
  changed pretraining config gives new fine-tuning runs (:mod:`.glue_finetune`).

``--stage pretrain | finetune | all`` (default all) picks which runs to do; fine-tuning runs whose pretraining
run has not finished fail with one error naming it. The report (:mod:`.glue_report`) gives the pretraining
perplexity and masked accuracy per kernel, per task the dev score (best lr by mean dev score over seeds, as
the papers select) and, where a task has labelled test data, the test score at that lr, each with 95% CIs over
seeds, paired tests against softmax and a non-inferiority test of "competitive with softmax".
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from kernelized.data import glue as glue_data
from kernelized.experiments import glue_report
from kernelized.experiments.framework import cli
from kernelized.experiments.framework.grid import Run, expand_grid, narrow
from kernelized.experiments.framework.presets import load_preset, parse_list
from kernelized.experiments.framework.schema import (
    ExperimentConfig,
    check_keys,
    check_types,
    deep_update,
    defaults_of,
    train_defaults,
)
from kernelized.experiments.framework.sweep import run_sweep
from kernelized.experiments.glue_finetune import run_finetune
from kernelized.experiments.glue_pretrain import check_config, corpus_lines, run_pretrain
from kernelized.layers.mixers import attention_names
from kernelized.train import TrainConfig

STAGES = ("all", "pretrain", "finetune")
INITS = ("pretrained", "scratch")


@dataclass
class Tokenizer:
    vocab_size: int = 8192  # WordPiece entries trained on the pretraining corpus
    name: str | None = None  # a Hugging Face WordPiece tokenizer instead (e.g. bert-base-uncased; hub access)


@dataclass
class Model:
    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 4
    feature_dim: int | None = None  # per-head query/key size fed to the kernel; None = d_model // num_heads
    mlp_hidden: int | None = None  # None = 4 * d_model
    max_len: int = 128  # positions; pretrain.seq_len and finetune.max_len must fit
    positions: str = "learned"  # BERT's; or sinusoidal
    embed_std: float = 0.02
    dropout: float = 0.1
    num_segments: int = 2  # BERT's sentence A / B embeddings
    mode: str = "auto"  # kernel attention form: auto (the cheapest exact form per call) | parallel | chunk
    chunk_size: int = 64
    pattern: list | None = None  # hybrids: mixer specs cycled over the layers; "attention" = the run's kernel


@dataclass
class Corpus:
    source: str = "ptb"  # ptb | wikitext-103 | a local .txt/.jsonl file or folder | hf:<dataset id>
    config: str | None = None  # the datasets config of an hf: source
    text_field: str = "text"
    max_lines: int | None = None  # read at most this many lines / records per split


@dataclass
class Pretrain:
    corpus: Corpus = field(default_factory=Corpus)
    seq_len: int = 128  # tokens per window, [CLS] and [SEP] included
    mask_prob: float = 0.15
    mask_copies: int = 4  # differently masked copies of the training windows (BERT's dupe_factor)
    eval_windows: int = 512  # held-out windows scored (val, and test where the corpus has one)
    seed: int = 0  # one pretraining per kernel; the fine-tuning seeds vary on top of it
    train: dict = field(
        default_factory=lambda: train_defaults(max_steps=1000, batch_size=64, lr=1e-3), metadata={"types": TrainConfig}
    )


@dataclass
class FinetuneData:
    path: str | None = None  # GLUE's TSV folder (glue_data/<Task>/{train,dev}.tsv) or a rotten-tomatoes file
    source: str = "auto"  # auto: path, else the data cache (rotten-tomatoes) or the hub (GLUE); hub: the hub
    split_seed: int = 0  # rotten-tomatoes' stratified train / dev / test split (fixed across seeds: paired tests)
    train_examples: int | None = None  # use only the first N training examples


@dataclass
class Finetune:
    data: FinetuneData = field(default_factory=FinetuneData)
    max_len: int = 128  # tokens per example, [CLS] and [SEP]s included; the longer sentence is cut first
    head_hidden: int | None = None  # None = 2 * d_model
    init: str = "pretrained"  # pretrained | scratch (the no-pretraining control)
    train: dict = field(
        default_factory=lambda: train_defaults(epochs=3, batch_size=32, lr=1e-4), metadata={"types": TrainConfig}
    )


@dataclass
class GlueSettings(ExperimentConfig):
    """Every field of a GLUE preset; ``per_kernel`` holds any of the others, per kernel."""

    kernel: str = "softmax"
    task: str = "rotten-tomatoes"
    threads: int | None = None  # torch threads per run (None = torch's default); 1 is fastest for small CPU runs
    tokenizer: Tokenizer = field(default_factory=Tokenizer)
    model: Model = field(default_factory=Model)
    kernel_options: dict = field(default_factory=dict)
    pretrain: Pretrain = field(default_factory=Pretrain)
    finetune: Finetune = field(default_factory=Finetune)
    equivalence_margin: float = 0.02  # "competitive": the kernel's score is at most this far below softmax's
    per_kernel: dict = field(default_factory=dict)


DEFAULTS = defaults_of(GlueSettings)
SECTION_SCHEMA = {k: v for k, v in DEFAULTS.items() if k not in ("per_kernel", "kernel")}
PRETRAIN_KEYS = ("kernel", "threads", "tokenizer", "model", "kernel_options", "pretrain")
FINETUNE_KEYS = ("kernel", "task", "seed", "threads", "finetune")
# where the pretraining run lies does not change a result (its id does), nor do the trainers' progress and logging
IGNORE = ("pretrain_dir", *(f"{s}.train.{k}" for s in ("pretrain", "finetune") for k in ("progress", "log_every")))


# -- config --------------------------------------------------------------------------------------------
def check_sections(config: dict, source: str) -> None:
    entries = config.get("per_kernel") or {}
    if not isinstance(entries, dict):
        raise ValueError(f"per_kernel in {source} must map kernel names to settings, got {entries!r}")
    for key, update in entries.items():
        if key not in attention_names():
            raise ValueError(f"per_kernel.{key} in {source}: {key!r} is not one of {attention_names()}")
        check_keys(SECTION_SCHEMA, dict(update or {}), source, f"per_kernel.{key}.")


def resolve(config: dict) -> dict:
    """The fixed fields with ``per_kernel[kernel]`` merged over them (idempotent), checked."""
    out = {k: v for k, v in config.items() if k != "per_kernel"}
    out = deep_update(out, (config.get("per_kernel") or {}).get(config["kernel"]) or {})
    check_types(out, GlueSettings, f"the run's config (kernel {config['kernel']})")
    glue_data.get_task(out["task"])
    check_config(out)
    if out["finetune"]["init"] not in INITS:
        raise ValueError(f"finetune.init must be one of {list(INITS)}, got {out['finetune']['init']!r}")
    if out["finetune"]["max_len"] > out["model"]["max_len"]:
        raise ValueError(
            f"finetune.max_len ({out['finetune']['max_len']}) must be <= model.max_len ({out['model']['max_len']})"
        )
    return out


def plan(config: dict, out_dir: Path) -> tuple[list[Run], list[Run]]:
    """``(pretraining runs, fine-tuning runs)`` of a preset whose grid is already narrowed."""
    grid = dict(config.get("grid") or {})
    kernels = grid.get("kernel", [config["kernel"]])
    pre_base = {**{k: config[k] for k in PRETRAIN_KEYS if k != "kernel"}, "per_kernel": config.get("per_kernel")}
    pre_base.update(kernel=config["kernel"], task=config["task"], finetune=config["finetune"], seed=0)

    def pre_resolve(c: dict) -> dict:
        return {k: v for k, v in resolve(c).items() if k in PRETRAIN_KEYS}

    pretrain = expand_grid(
        {**pre_base, "grid": {"kernel": kernels}}, always=("kernel",), ignore=IGNORE, resolve=pre_resolve
    )
    by_kernel = {r.config["kernel"]: r for r in pretrain}

    def ft_resolve(c: dict) -> dict:
        resolved = resolve(c)
        run = by_kernel[resolved["kernel"]]
        out = {k: v for k, v in resolved.items() if k in FINETUNE_KEYS}
        return {**out, "pretrain_run": run.run_id, "pretrain_dir": str(out_dir / "pretrain" / run.run_id)}

    finetune = expand_grid(config, always=("task", "kernel", "seed"), ignore=IGNORE, resolve=ft_resolve)
    return pretrain, finetune


def overrides(args) -> list[str]:
    """``--set`` items, with what ``--device`` and ``--no-progress`` mean for both trainers."""
    items = []
    for item in cli.overrides(args):
        if item.startswith("train."):  # the framework's train.device / train.progress: both stages' trainers
            items += [f"pretrain.{item}", f"finetune.{item}"]
        else:
            items.append(item)
    return items


def prepare(args, source: str) -> tuple[dict, list[Run], list[Run], Path]:
    config = load_preset("glue", args.preset, overrides(args), defaults=DEFAULTS)
    check_sections(config, source)
    cli.narrow_axes(config, args)
    tasks = parse_list(args.task, "--task")
    for task in tasks or []:
        glue_data.get_task(task)
    narrow(config, "task", tasks)
    out_dir = Path(args.out) if args.out else Path("runs") / "glue" / Path(str(args.preset)).stem
    pretrain, finetune = plan(config, out_dir)
    for run in finetune:
        TrainConfig.from_dict({**run.config["finetune"]["train"], "seed": run.config["seed"]})
    for run in pretrain:
        TrainConfig.from_dict({**run.config["pretrain"]["train"], "seed": run.config["pretrain"]["seed"]})
    return config, pretrain, finetune, out_dir


def check_data(pretrain: list[Run], finetune: list[Run]) -> None:
    """The corpora are there (one error naming the fetch command otherwise), before any training."""
    for corpus in {str(r.config["pretrain"]["corpus"]): r.config["pretrain"]["corpus"] for r in pretrain}.values():
        if corpus["source"] == "ptb":
            corpus_lines(corpus, "val")
    for run in finetune:
        d = run.config["finetune"]["data"]
        if run.config["task"] == "rotten-tomatoes" and d["source"] == "auto" and d.get("path") is None:
            from kernelized.data.fetch import verified_folder

            verified_folder("rotten-tomatoes")
            return


def train_flops(pretrain: list[Run], finetune: list[Run]) -> float:
    """6 x parameters x training tokens over the runs (fine-tuning at full length: an upper bound)."""
    import math

    import torch

    from kernelized.experiments.glue_pretrain import model_config
    from kernelized.models.backbone import LanguageModel

    total, params = 0.0, {}
    for run in pretrain:
        c = run.config
        with torch.device("meta"):
            vocab = c["tokenizer"]["vocab_size"] if not c["tokenizer"].get("name") else 30_522
            params[run.run_id] = sum(p.numel() for p in LanguageModel(model_config(c, vocab)).parameters())
        t = c["pretrain"]["train"]
        total += 6 * params[run.run_id] * t["max_steps"] * t["batch_size"] * c["pretrain"]["seq_len"]
    for run in finetune:
        t, f = run.config["finetune"]["train"], run.config["finetune"]
        n = f["data"].get("train_examples") or glue_data.TRAIN_SIZES[run.config["task"]]
        steps = t.get("max_steps") or t["epochs"] * math.ceil(n / t["batch_size"])
        total += 6 * params.get(run.config["pretrain_run"], 0) * steps * t["batch_size"] * f["max_len"]
    return total


def check_pretrained(finetune: list[Run]) -> None:
    """``--stage finetune``: every pretraining run the fine-tuning runs name has finished (one error otherwise)."""
    for run in finetune:
        folder = Path(run.config["pretrain_dir"])
        if not (folder / "result.json").is_file():
            raise FileNotFoundError(
                f"pretraining run {folder} does not exist or has not finished (fine-tuning run {run.run_id} starts "
                "from it): run `kernelized glue --stage pretrain` with the same preset and settings first"
            )


# -- CLI -----------------------------------------------------------------------------------------------
@cli.command
def main(argv: list[str]) -> int:
    parser = cli.experiment_parser("glue", __doc__, default_preset="cpu")
    parser.add_argument("--task", help=f"comma-separated tasks of {list(glue_data.TASKS)} (default: the preset's)")
    parser.add_argument("--stage", default="all", choices=STAGES, help="pretraining, fine-tuning or both")
    args = parser.parse_args(argv)
    config, pretrain, finetune, out_dir = prepare(args, f"preset {args.preset}")
    name, workers = Path(str(args.preset)).stem, cli.workers(args, config)
    print(
        f"glue/{name}: {len(pretrain)} pretraining + {len(finetune)} fine-tuning runs -> {out_dir} "
        f"({workers} worker{'s' if workers > 1 else ''})"
    )
    if args.dry_run:
        print(
            "\n".join(f"  pretrain/{r.run_id}" for r in pretrain)
            + "\n"
            + "\n".join(f"  finetune/{r.run_id}" for r in finetune)
        )
        return 0
    if not args.report_only:
        cli.warn_if_gpu_sized(config, name, "glue", lambda: train_flops(pretrain, finetune))
        check_data(pretrain, finetune)
    if args.stage == "finetune" and not args.report_only:
        check_pretrained(finetune)
    records = {}
    for stage, runs, fn in (("pretrain", pretrain, run_pretrain), ("finetune", finetune, run_finetune)):
        start = time.perf_counter()
        if args.report_only or args.stage not in ("all", stage):
            from kernelized.experiments.framework.sweep import collect

            records[stage] = collect(runs, out_dir / stage)
            continue
        records[stage] = run_sweep(runs, fn, out_dir / stage, workers, args.launcher, not args.no_progress, "glue")
        print(f"{stage}: wall time {time.perf_counter() - start:.0f} s")
    tables = glue_report.write_report(
        records["pretrain"], records["finetune"], out_dir, name, config.get("equivalence_margin", 0.02)
    )
    print(tables)
    print(f"results: {out_dir / 'report.md'}, pretrain.csv, finetune.csv, figure.png")
    return cli.finish(records["pretrain"] + records["finetune"])


if __name__ == "__main__":
    sys.exit(main())

"""MQAR sweeps: ``kernelized mqar --preset demo`` trains every (kernel, length, width, lr, seed) of a preset.

The model is the ReBased paper's MQAR model (Aksenov et al., 2024, Figure 1): ``num_layers`` = 2 layers,
BaseConv(kernel 3) then the mixer. The authors' ``Hybrid`` alternates its mixers over the layers, so their
2-layer model is [BaseConv -> mixer]; ``num_layers: 4`` gives [BaseConv, mixer, BaseConv, mixer]. Blocks are
pre-norm and residual, no MLP; learned token and position embeddings; tied output head. The mixer is any
registered kernel through ``KernelAttention`` (12 heads x feature dim 16, value head dim ``d_model // 12``)
or softmax attention (1 head, as zoology's baseline). ReBased normalises q and k over all heads jointly
(``norm_scope="all"``), as the authors' MQAR code does.

Protocol (the paper's): each run keeps its best test accuracy over epochs (evaluation every epoch, early
stop at 0.99); the seeds of a cell are averaged at the learning rate with the best mean; the report adds
95% intervals over seeds and paired comparisons of every two kernels in every cell (same seeds: same data,
same data order). Seed ``s`` generates the data with ``task.data_seed + s`` and initialises the model with
``s``, so kernels are paired on identical data.

Outputs ``--out`` (default ``runs/mqar/<preset>/``): one folder per run, named by its grid values and a hash of
its whole resolved config (config.yaml, run.json, metrics.jsonl, checkpoint.pt, summary.json, result.json), and
``results.csv``, ``report.md`` and ``figure.png`` of the current config's runs. Re-running skips finished runs and
resumes interrupted ones; a changed setting is a new run. A preset names every field of :class:`MQARSettings`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from kernelized.data.mqar import MQARConfig, check_mqar, mqar_datasets, paper_num_kv_pairs
from kernelized.experiments.framework import cli
from kernelized.experiments.framework.grid import Run, expand_grid
from kernelized.experiments.framework.presets import load_preset
from kernelized.experiments.framework.reduce import comparisons, reduce_runs
from kernelized.experiments.framework.schema import ExperimentConfig, check_types, defaults_of, train_defaults
from kernelized.experiments.framework.sweep import load_trained_run, other_runs
from kernelized.experiments.framework.tables import markdown_table, status_section, with_ci_column, write_figure
from kernelized.layers.mixers import attention_spec
from kernelized.models import LanguageModel, ModelConfig
from kernelized.train.checkpoint import write_text_atomic
from kernelized.train.config import TrainConfig
from kernelized.train.trainer import Trainer

#: Variants a preset can name in ``grid.kernel`` besides ``softmax`` and every registered kernel name or alias
#: (``based`` = ``taylor``); a preset's ``kernels:`` section adds or replaces variants.
KERNEL_VARIANTS: dict[str, dict] = {
    "rebased": {"kernel": "rebased", "kernel_options": {"norm_scope": "all"}},  # the authors' MQAR code
}


@dataclass
class Task:
    """The MQAR data (zoology's generator); seed s draws its data with ``data_seed + s``."""

    vocab_size: int = 8192
    num_kv_pairs: int | str | dict = "paper"  # an int, "paper" (16 at L = 128, else L/4), or {seq_len: pairs}
    power_a: float = 0.01
    random_non_queries: bool = False
    num_train: int = 100_000
    num_test: int = 3_000
    data_seed: int = 42


@dataclass
class Model:
    """The ReBased paper's MQAR model: blocks alternating BaseConv and the mixer."""

    d_model: int = 64
    num_layers: int = 2  # 2: the authors' [BaseConv, mixer]
    conv_kernel: int = 3
    num_heads: int = 12  # kernel attention
    feature_dim: int = 16
    mode: str = "auto"  # kernel attention form: auto (the cheapest exact form per call) | parallel | chunk
    chunk_size: int = 64
    eps: float = 1e-6
    softmax_heads: int = 1
    dropout: float = 0.0


def _train() -> dict:
    return train_defaults(
        epochs=64, batch_size=512, lr=1e-3, weight_decay=0.1, schedule="cosine",
        early_stop_metric="accuracy", early_stop_threshold=0.99,
    )  # fmt: skip


@dataclass
class MQARSettings(ExperimentConfig):
    """Every field of an MQAR preset (``configs/mqar/*.yaml``)."""

    kernel: str = "rebased"  # softmax, a kernel name or alias, or a name of the preset's kernels:
    seq_len: int = 64
    task: Task = field(default_factory=Task)
    model: Model = field(default_factory=Model)
    kernels: dict = field(default_factory=dict)  # extra variants: name -> mixer spec fields
    micro_batch_tokens: int | None = None  # cap micro-batches at this many tokens (gradient accumulation)
    train: dict = field(default_factory=_train, metadata={"types": TrainConfig})


DEFAULTS: dict = defaults_of(MQARSettings)
CELL_KEYS = ["seq_len", "model.d_model", "kernel"]


# -- building blocks --------------------------------------------------------------------------------
def resolve_num_kv_pairs(spec, seq_len: int) -> int:
    """Pairs for a length: an int, ``"paper"`` (ReBased Figure 1), or a mapping ``{seq_len: pairs}``."""
    if spec == "paper":
        return paper_num_kv_pairs(seq_len)
    if isinstance(spec, dict):
        table = {int(k): v for k, v in spec.items()}
        if seq_len not in table:
            raise ValueError(f"task.num_kv_pairs has no entry for seq_len={seq_len}; it maps {sorted(table)}")
        return table[seq_len]
    if isinstance(spec, int) and not isinstance(spec, bool):
        return spec
    raise ValueError(f"task.num_kv_pairs must be an int, 'paper' or a mapping {{seq_len: pairs}}, got {spec!r}")


def kernel_variants(config: dict) -> dict[str, dict]:
    """Built-in variants updated by the preset's ``kernels:`` section."""
    variants = copy.deepcopy(KERNEL_VARIANTS)
    for name, spec in (config.get("kernels") or {}).items():
        if not isinstance(spec, dict):
            raise ValueError(f"kernels.{name} must be a mapping of mixer options, got {spec!r}")
        variants[name] = copy.deepcopy(spec)
    return variants


def mixer_spec(config: dict) -> dict:
    """The attention mixer spec of a run's ``kernel``; unknown names list the valid ones."""
    name, m = config["kernel"], config["model"]
    variants = kernel_variants(config)
    if name in variants:
        spec = copy.deepcopy(variants[name])
        spec.setdefault("mixer", "kernel")
        if spec["mixer"] == "kernel":
            spec["kernel"] = attention_spec(spec.get("kernel"))["kernel"]
    else:
        try:
            spec = attention_spec(name)
        except ValueError as e:
            raise ValueError(f"{e} (or a name of the preset's kernels: {sorted(variants)})") from None
    if spec["mixer"] == "softmax":
        spec.setdefault("num_heads", m["softmax_heads"])
    elif spec["mixer"] == "kernel":
        for key in ("num_heads", "feature_dim", "mode", "chunk_size", "eps"):
            spec.setdefault(key, m[key])
    return spec


def model_config(config: dict) -> ModelConfig:
    """The ReBased MQAR model for a run config: blocks alternating BaseConv and the mixer, no MLP, tied head."""
    m, task = config["model"], config["task"]
    if isinstance(m["num_layers"], bool) or not isinstance(m["num_layers"], int) or m["num_layers"] < 2:
        raise ValueError(f"model.num_layers must be an integer >= 2 (BaseConv, then mixer), got {m['num_layers']!r}")
    conv = {"mixer": {"mixer": "baseconv", "kernel_size": m["conv_kernel"]}}
    attention = {"mixer": mixer_spec(config)}
    return ModelConfig(
        vocab_size=task["vocab_size"],
        d_model=m["d_model"],
        blocks=[copy.deepcopy(conv if i % 2 == 0 else attention) for i in range(m["num_layers"])],
        max_len=config["seq_len"],
        positions="learned",
        dropout=m["dropout"],
        causal=True,
        tie_embeddings=True,
    )


def task_config(config: dict) -> MQARConfig:
    t = config["task"]
    kv = resolve_num_kv_pairs(t["num_kv_pairs"], config["seq_len"])
    return MQARConfig(t["vocab_size"], config["seq_len"], kv, t["power_a"], t["random_non_queries"])


def train_config(config: dict) -> TrainConfig:
    values = dict(config["train"])
    values["seed"] = config["seed"]
    tokens = config.get("micro_batch_tokens")
    if tokens:
        values["micro_batch_size"] = max(1, min(values["batch_size"], int(tokens) // config["seq_len"]))
    return TrainConfig.from_dict(values)


@lru_cache(maxsize=2)
def _datasets(task: MQARConfig, num_train: int, num_test: int, seed: int):
    return mqar_datasets(task, num_train, num_test, seed)


def datasets(config: dict):
    t = config["task"]
    return _datasets(task_config(config), t["num_train"], t["num_test"], t["data_seed"] + config["seed"])


def build_model(config: dict) -> LanguageModel:
    torch.manual_seed(config["seed"])
    return LanguageModel(model_config(config))


def validate(runs: Sequence[Run], source: str) -> None:
    """Every error a run could hit before training, raised now (ValueError naming the run and the field)."""
    built = set()
    for run in runs:
        config = run.config
        try:  # types were checked by resolve() when the grid was expanded
            task = task_config(config)
            check_mqar(task.vocab_size, task.seq_len, task.num_kv_pairs, task.power_a)
            for key in ("num_train", "num_test"):
                if config["task"][key] < 1:
                    raise ValueError(f"task.{key} must be an integer >= 1, got {config['task'][key]!r}")
            device = train_config(config).device
            if device.startswith("cuda") and not torch.cuda.is_available():
                raise ValueError(f"train.device is {device!r} but CUDA is not available here; use auto or cpu")
            signature = (config["kernel"], config["seq_len"], repr(config["model"]), repr(config["kernels"]))
            if signature not in built:
                with torch.device("meta"):  # checks every option without allocating weights
                    LanguageModel(model_config(config))
                built.add(signature)
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"run {run.run_id}: {e}") from None


def resolve(config: dict) -> dict:
    """A run's config as it runs: the number of kv pairs made concrete for its length."""
    check_types(config, MQARSettings, "the preset")
    config["task"]["num_kv_pairs"] = task_config(config).num_kv_pairs
    return config


def prepare_runs(config: dict, source: str = "the preset") -> list[Run]:
    """Expand the grid (kernel and seed always in the run id), resolve and validate every run."""
    runs = expand_grid(config, always=("kernel", "seed"), resolve=resolve)
    validate(runs, source)
    return runs


def run_one(config: dict, run_dir: Path) -> dict:
    """Train one MQAR run (resuming from run_dir) and return its summary (the Trainer's)."""
    train, test = datasets(config)
    model = build_model(config)
    trainer = Trainer(model, train_config(config), train, test, run_dir=run_dir)
    return trainer.fit()


def train_flops(runs: Sequence[Run]) -> float:
    """6 x parameters x training tokens, summed over the runs (no early stop assumed)."""
    total = 0.0
    for run in runs:
        c = run.config
        with torch.device("meta"):
            params = LanguageModel(model_config(c)).num_parameters()
        total += 6 * params * c["train"]["epochs"] * c["task"]["num_train"] * c["seq_len"]
    return total


# -- what kernelized analyze needs ----------------------------------------------------------------
def initial_model(config: dict) -> torch.nn.Module:
    """The run's model before training (:func:`build_model` seeds itself with the run's seed)."""
    return build_model(config)


def load_trained(run_dir: str | Path) -> tuple[dict, torch.nn.Module]:
    """A run's config and its model with the checkpoint's weights, in eval mode."""
    return load_trained_run(run_dir, build_model)


def analysis_batch(config: dict, num_examples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first test examples: ``inputs [N, L]`` and ``query_mask [N, L]`` (True where a value is asked)."""
    _, test = datasets(config)
    inputs, labels = test.tensors
    return inputs[:num_examples], labels[:num_examples] != -100


# -- report ---------------------------------------------------------------------------------------
def _pivot(rows: list[dict]) -> list[dict]:
    """One line per (length, width), one column per kernel: "mean ± CI"."""
    table: dict[tuple, dict] = {}
    for row in with_ci_column(rows, "cell"):
        key = (row["seq_len"], row["model.d_model"])
        line = table.setdefault(key, {"seq_len": key[0], "d_model": key[1]})
        line[row["kernel"]] = row["cell"]
    return [table[k] for k in sorted(table)]


def kernel_order(config: dict, records: Sequence[dict]) -> list[str]:
    names = config.get("grid", {}).get("kernel") or []
    seen = [r["config"]["kernel"] for r in records]
    return list(dict.fromkeys([*names, *seen]))


def draw_figure(path: Path, rows: list[dict], order: list[str], title: str) -> None:
    """Accuracy vs d_model, one panel per length, one line per kernel (ReBased Figure 1), 95% CI bars, seeds as
    dots; cells without a finished run are left out."""
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["n"] > 0]
    if not rows:
        raise ValueError("no finished run to draw")
    lengths = sorted({r["seq_len"] for r in rows})
    fig, axes = plt.subplots(1, len(lengths), figsize=(3.4 * len(lengths) + 1.2, 3.2), squeeze=False, sharey=True)
    for ax, L in zip(axes[0], lengths):
        for i, name in enumerate(order):
            mine = sorted(
                (r for r in rows if r["seq_len"] == L and r["kernel"] == name), key=lambda r: r["model.d_model"]
            )
            if not mine:
                continue
            dodge = 2 ** (0.07 * (i - (len(order) - 1) / 2))  # side by side on the log axis, bars apart
            x = [r["model.d_model"] * dodge for r in mine]
            err = [0.0 if math.isnan(r["half_width"]) else r["half_width"] for r in mine]
            ax.errorbar(x, [r["mean"] for r in mine], yerr=err, marker="o", ms=4, capsize=3, label=name, color=f"C{i}")
            seeds_x = [xi for xi, r in zip(x, mine) for _ in r["values"]]
            seeds_y = [v for r in mine for v in r["values"]]
            ax.scatter(seeds_x, seeds_y, s=8, color=f"C{i}", alpha=0.35, linewidths=0)  # the seeds themselves
        ax.set_xscale("log", base=2)
        ax.margins(x=0.15)
        widths = sorted({r["model.d_model"] for r in rows})
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.set_title(f"sequence length {L}", fontsize=9)
        ax.set_xlabel("d_model")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (best over epochs)")
    axes[0][-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _significance(rows: list[dict], order: list[str]) -> str:
    pairs = comparisons(rows, "kernel", order)
    pairs.sort(key=lambda c: (c["seq_len"], c["model.d_model"], order.index(c["a"]), order.index(c["b"])))
    return markdown_table(
        pairs,
        ["seq_len", "model.d_model", "a", "b", "n", "diff (95% bootstrap CI)", "p_ttest", "p_permutation", "verdict"],
        ["L", "d_model", "a", "b", "seeds", "mean(a - b) [95% CI]", "p (paired t)", "p (sign-flip)", "verdict"],
        digits=3,
    )


def _setup(config: dict, records: list[dict], elapsed: float | None) -> list[str]:
    t, m, tr = config["task"], config["model"], config["train"]
    kv = sorted({(r["config"]["seq_len"], r["config"]["task"]["num_kv_pairs"]) for r in records})
    times = [r["summary"].get("wall_time_s") or 0.0 for r in records if r["summary"]]
    ran = f"; the command that wrote this report ran {elapsed:.0f} s (finished runs are not rerun)" if elapsed else ""
    return [
        f"- Task: vocab {t['vocab_size']}, (length, kv pairs) = {', '.join(f'({a}, {b})' for a, b in kv)}, "
        f"query gaps power law a = {t['power_a']}, random fillers: {t['random_non_queries']}; "
        f"{t['num_train']} train / {t['num_test']} test examples per seed (data seed = {t['data_seed']} + seed).",
        f"- Model: {m['num_layers']} layers alternating BaseConv(k={m['conv_kernel']}) and the mixer, pre-norm "
        "residual blocks, no MLP, "
        f"learned positions, tied head; kernel attention {m['num_heads']} heads x feature dim {m['feature_dim']} "
        f"(value head dim d_model // {m['num_heads']}), form `{m['mode']}`; softmax {m['softmax_heads']} head(s). "
        "ReBased normalises q, k over all heads jointly (norm_scope='all', the authors' MQAR code).",
        f"- Training: AdamW (wd {tr['weight_decay']}), {tr['schedule']} schedule, batch {tr['batch_size']}, "
        f"up to {tr['epochs']} epochs, evaluation every epoch, early stop at accuracy >= {tr['early_stop_threshold']}.",
        f"- Grid: {', '.join(f'{k} {v}' for k, v in config.get('grid', {}).items())}.",
        f"- Run time {sum(times):.0f} s summed over finished runs{ran}.",
    ]


def write_report(
    config: dict, preset_name: str, records: list[dict], out_dir: Path, elapsed: float | None, ignored=()
) -> str:
    """report.md (status, table, significance, protocol) and figure.png from a sweep's records; returns the table.

    Only ``records`` (the runs of the current config) are read; ``ignored`` names other run folders in out_dir."""
    rows = reduce_runs(records, CELL_KEYS, metric="best.accuracy", lr_key="train.lr", seed_key="seed")
    order = kernel_order(config, records)
    table = markdown_table(_pivot(rows), ["seq_len", "d_model", *order], ["L", "d_model", *order])
    details = markdown_table(
        rows,
        ["seq_len", "model.d_model", "kernel", "lr", "n", "values", "lr_means"],
        ["L", "d_model", "kernel", "best lr", "seeds", "accuracy per seed (best lr)", "mean by lr"],
        digits=3,
    )
    figure_error = write_figure(draw_figure, out_dir / "figure.png", rows, order, f"MQAR ({preset_name})")
    lines = [
        f"# MQAR: {preset_name}",
        "",
        (config.get("description") or "").strip(),
        "",
        status_section(records, ignored),
        "Accuracy on held-out MQAR examples (share of queries whose value is predicted exactly): each run's "
        "best evaluation over epochs, mean ± 95% Student-t interval over seeds, at the learning rate with the "
        "best mean (the ReBased protocol). `–` = no finished run in that cell.",
        "",
        table,
        f"({figure_error})" if figure_error else "![accuracy vs d_model](figure.png)",
        "",
        "## Setup",
        "",
        *_setup(config, records, elapsed),
        "",
        "## Significance: paired comparisons across seeds",
        "",
        "For every cell and every two kernels: the mean difference of their accuracies over the seeds they "
        "share (seed s: same data and data order), a paired bootstrap 95% interval of that difference, a paired "
        "t-test and an exact sign-flip permutation test. With n seeds the sign-flip test cannot go below "
        "2 / 2^n (0.25 for 3 seeds), so the t-test carries the evidence at small n; verdict: `a > b` or `a < b` "
        "when the bootstrap interval excludes 0 and p (t) < 0.05, `tie` when all seeds agree exactly, else `n.s.`.",
        "",
        _significance(rows, order),
        "## Per-cell details",
        "",
        details,
    ]
    write_text_atomic("\n".join(lines) + "\n", out_dir / "report.md")
    return table


# -- CLI --------------------------------------------------------------------------------------------
@cli.command
def main(argv: list[str]) -> int:
    args = cli.experiment_parser("mqar", __doc__, default_preset="demo").parse_args(argv)
    config = load_preset("mqar", args.preset, cli.overrides(args), defaults=DEFAULTS)
    cli.narrow_axes(config, args)
    runs = prepare_runs(config, f"preset {args.preset}")
    name, out_dir, workers, _ = cli.start(args, config, "mqar", runs, train_flops)
    if args.dry_run:
        for run in runs:
            print(f"  {run.run_id}  (kv pairs {run.config['task']['num_kv_pairs']})")
        return 0
    start = time.perf_counter()
    records = cli.sweep(args, runs, run_one, out_dir, workers, "mqar")
    elapsed = None if args.report_only else time.perf_counter() - start
    table = write_report(config, name, records, out_dir, elapsed, other_runs(runs, out_dir))
    print(f"\n{table}")
    if elapsed is not None:
        print(f"wall time {elapsed:.0f} s")
    print(f"report: {out_dir / 'report.md'}\nfigure: {out_dir / 'figure.png'}\nruns:   {out_dir / 'results.csv'}")
    return cli.finish(records)


__all__ = [
    "DEFAULTS",
    "KERNEL_VARIANTS",
    "MQARSettings",
    "analysis_batch",
    "initial_model",
    "build_model",
    "datasets",
    "load_trained",
    "main",
    "model_config",
    "prepare_runs",
    "run_one",
    "write_report",
]

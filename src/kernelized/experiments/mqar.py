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

Outputs ``<out_dir>/<preset>/``: one folder per run (config.yaml, metrics.jsonl, checkpoint.pt,
summary.json), ``results.csv``, ``report.md`` and ``figure.png``. Re-running skips finished runs and resumes
interrupted ones.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch

from kernelized import kernels
from kernelized.data.mqar import MQARConfig, check_mqar, mqar_datasets, paper_num_kv_pairs
from kernelized.experiments.common import (
    Run,
    expand_grid,
    get_key,
    load_preset,
    markdown_table,
    pairwise_comparisons,
    reduce_runs,
    run_sweep,
    with_ci_column,
)
from kernelized.models import LanguageModel, ModelConfig
from kernelized.train.checkpoint import write_text_atomic
from kernelized.train.config import TrainConfig
from kernelized.train.trainer import Trainer

#: Mixers every preset can name in ``grid.kernel``; a preset's ``kernels:`` adds or replaces variants.
#: Any registered kernel name not listed here is used as ``{"kernel": name}``.
KERNEL_VARIANTS: dict[str, dict] = {
    "softmax": {"mixer": "softmax"},
    "based": {"kernel": "taylor"},
    "rebased": {"kernel": "rebased", "kernel_options": {"norm_scope": "all"}},
    "elu": {"kernel": "elu"},
}

_TRAIN = {k: v for k, v in TrainConfig().to_dict().items() if k not in ("seed", "extra")}
_TRAIN.update(
    epochs=64,
    batch_size=512,
    lr=1e-3,
    weight_decay=0.1,
    schedule="cosine",
    early_stop_metric="accuracy",
    early_stop_threshold=0.99,
)

DEFAULTS: dict = {
    "description": "",
    "kernel": "rebased",  # a name of KERNEL_VARIANTS, of the preset's kernels:, or a registered kernel
    "seq_len": 64,
    "seed": 0,
    "task": {
        "vocab_size": 8192,
        "num_kv_pairs": "paper",  # an int, "paper" (16 at L = 128, else L/4), or a mapping {seq_len: pairs}
        "power_a": 0.01,
        "random_non_queries": False,
        "num_train": 100_000,
        "num_test": 3_000,
        "data_seed": 42,
    },
    "model": {
        "d_model": 64,
        "num_layers": 2,  # blocks, alternating BaseConv and the mixer (2: the authors' [BaseConv, mixer])
        "conv_kernel": 3,
        "num_heads": 12,  # kernel attention
        "feature_dim": 16,
        "mode": "parallel",  # kernel attention form for training: parallel | chunk
        "chunk_size": 64,
        "eps": 1e-6,
        "softmax_heads": 1,
        "dropout": 0.0,
    },
    "kernels": {},  # extra variants: name -> mixer spec fields ({"kernel": ..., "kernel_options": {...}})
    "micro_batch_tokens": None,  # cap micro-batches at this many tokens (gradient accumulation), e.g. 131072
    "train": _TRAIN,
}

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
    elif name in kernels.available():
        spec = {"kernel": name}
    else:
        valid = sorted(set(variants) | set(kernels.available()))
        raise ValueError(f"kernel must be one of {valid}, got {name!r}")
    spec.setdefault("mixer", "kernel")
    if spec["mixer"] == "softmax":
        spec.setdefault("num_heads", m["softmax_heads"])
    elif spec["mixer"] == "kernel":
        if spec.get("kernel") not in kernels.available():
            got = spec.get("kernel")
            raise ValueError(f"kernel variant {name!r}: kernel must be one of {kernels.available()}, got {got!r}")
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


def validate(runs: Sequence[Run]) -> None:
    """Every error a run could hit before training, raised now (ValueError naming the run and the field)."""
    built = set()
    for run in runs:
        config = run.config
        try:
            for key in ("seq_len", "seed"):
                if isinstance(config[key], bool) or not isinstance(config[key], int):
                    raise ValueError(f"{key} must be an integer, got {config[key]!r}")
            task = task_config(config)
            check_mqar(task.vocab_size, task.seq_len, task.num_kv_pairs, task.power_a)
            for key in ("num_train", "num_test"):
                value = config["task"][key]
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"task.{key} must be an integer >= 1, got {value!r}")
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


def prepare_runs(config: dict) -> list[Run]:
    """Expand the grid, write each run's resolved pairs into its config, validate everything."""
    runs = expand_grid(config)
    for run in runs:
        try:
            run.config["task"]["num_kv_pairs"] = task_config(run.config).num_kv_pairs
        except ValueError as e:
            raise ValueError(f"run {run.run_id}: {e}") from None
    validate(runs)
    return runs


def run_one(config: dict, run_dir: Path) -> dict:
    """Train one MQAR run (resuming from run_dir) and return its summary (the Trainer's)."""
    train, test = datasets(config)
    model = build_model(config)
    trainer = Trainer(model, train_config(config), train, test, run_dir=run_dir)
    return trainer.fit()


# -- report ---------------------------------------------------------------------------------------
def _pivot(rows: list[dict], kernels_order: list[str]) -> list[dict]:
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


def write_figure(rows: list[dict], order: list[str], path: Path, title: str) -> Path:
    """Accuracy vs d_model, one panel per length, one line per kernel (ReBased Figure 1), 95% CI bars, seeds as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
            y = [r["mean"] for r in mine]
            err = [0.0 if math.isnan(r["half_width"]) else r["half_width"] for r in mine]
            ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=3, label=name, color=f"C{i}", alpha=0.9)
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
    return path


def write_report(config: dict, preset_name: str, records: list[dict], out_dir: Path, elapsed: float | None) -> str:
    """report.md (table, significance, protocol) and figure.png from a sweep's records; returns the table."""
    rows = reduce_runs(records, CELL_KEYS, metric="best.accuracy", lr_key="train.lr", seed_key="seed")
    order = kernel_order(config, records)
    pivot = _pivot(rows, order)
    table = markdown_table(pivot, ["seq_len", "d_model", *order], ["L", "d_model", *order])
    comparisons = [_oriented(c, order) for c in pairwise_comparisons(rows, method_key="kernel")]
    comparisons.sort(key=lambda c: (c["seq_len"], c["model.d_model"], order.index(c["a"]), order.index(c["b"])))
    for c in comparisons:
        c["diff (95% bootstrap CI)"] = f"{c['mean_diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
        c["verdict"] = _verdict(c)
    sig = markdown_table(
        comparisons,
        ["seq_len", "model.d_model", "a", "b", "n", "diff (95% bootstrap CI)", "p_ttest", "p_permutation", "verdict"],
        ["L", "d_model", "a", "b", "seeds", "mean(a - b) [95% CI]", "p (paired t)", "p (sign-flip)", "verdict"],
        digits=3,
    )
    details = markdown_table(
        rows,
        ["seq_len", "model.d_model", "kernel", "lr", "n", "values", "lr_means"],
        ["L", "d_model", "kernel", "best lr", "seeds", "accuracy per seed (best lr)", "mean by lr"],
        digits=3,
    )
    runs = [r for r in records if r["summary"]]
    times = [r["summary"].get("wall_time_s") or 0.0 for r in runs]
    kv = sorted({(r["config"]["seq_len"], r["config"]["task"]["num_kv_pairs"]) for r in records})
    t = config["task"]
    m = config["model"]
    tr = config["train"]
    lines = [
        f"# MQAR: {preset_name}",
        "",
        (config.get("description") or "").strip(),
        "",
        "Accuracy on held-out MQAR examples (share of queries whose value is predicted exactly): each run's "
        "best evaluation over epochs, mean ± 95% Student-t interval over seeds, at the learning rate with the "
        "best mean (the ReBased protocol). `– ` = no finished run.",
        "",
        table,
        "![accuracy vs d_model](figure.png)",
        "",
        "## Setup",
        "",
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
        f"- {len(runs)} runs finished; run time {sum(times):.0f} s summed over runs"
        + (
            f"; the command that wrote this report ran {elapsed:.0f} s (finished runs are not rerun)."
            if elapsed
            else "."
        ),
        "",
        "## Significance: paired comparisons across seeds",
        "",
        "For every cell and every two kernels: the mean difference of their accuracies over the seeds they "
        "share (seed s: same data and data order), a paired bootstrap 95% interval of that difference, a paired "
        "t-test and an exact sign-flip permutation test. With n seeds the sign-flip test cannot go below "
        "2 / 2^n (0.25 for 3 seeds), so the t-test carries the evidence at small n; verdict: `a > b` or `a < b` "
        "when the bootstrap interval excludes 0 and p (t) < 0.05, `tie` when all seeds agree exactly, else `n.s.`.",
        "",
        sig,
        "## Per-cell details",
        "",
        details,
    ]
    text = "\n".join(lines) + "\n"
    write_text_atomic(text, out_dir / "report.md")
    write_figure(rows, order, out_dir / "figure.png", f"MQAR ({preset_name}): accuracy vs d_model")
    return table


def _oriented(c: dict, order: list[str]) -> dict:
    """A comparison with ``a`` the kernel listed first in the preset (differences and intervals negated)."""
    if order.index(c["a"]) < order.index(c["b"]):
        return c
    c = dict(c)
    c["a"], c["b"], c["mean_a"], c["mean_b"] = c["b"], c["a"], c["mean_b"], c["mean_a"]
    c["mean_diff"] = -c["mean_diff"]
    c["ci_low"], c["ci_high"] = -c["ci_high"], -c["ci_low"]
    c["t_ci_low"], c["t_ci_high"] = -c["t_ci_high"], -c["t_ci_low"]
    c["t_stat"] = -c["t_stat"]
    return c


def _verdict(c: dict) -> str:
    if c["mean_diff"] == 0 and c["ci_low"] == c["ci_high"]:
        return "tie"
    p = c["p_ttest"]
    separated = c["ci_low"] > 0 or c["ci_high"] < 0
    if separated and (math.isnan(p) or p < 0.05):  # NaN p: every seed differs by the same amount
        return "a > b" if c["mean_diff"] > 0 else "a < b"
    return "n.s."


# -- CLI --------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="kernelized mqar", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="demo", help="a name in configs/mqar/ or a path to a YAML file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset field")
    p.add_argument("--workers", type=int, default=None, help="parallel runs (processes); default: 1 or the preset's")
    p.add_argument("--device", default=None, help="auto | cpu | cuda[:N] (train.device)")
    p.add_argument("--out", default="runs/mqar", help="output root; results go to <out>/<preset name>/")
    p.add_argument("--dry-run", action="store_true", help="validate the preset and list its runs, train nothing")
    p.add_argument("--report-only", action="store_true", help="rebuild report.md and figure.png from finished runs")
    return p.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    overrides = list(args.set)
    if args.device:
        overrides.append(f"train.device={args.device}")
    defaults = {**DEFAULTS, "workers": 1}
    try:
        config = load_preset("mqar", args.preset, overrides, defaults=defaults)
        runs = prepare_runs(config)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    name = Path(str(args.preset)).stem
    out_dir = Path(args.out) / name
    workers = args.workers or config.get("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        print(f"error: workers must be an integer >= 1, got {workers!r}", file=sys.stderr)
        return 2
    print(f"mqar/{name}: {len(runs)} runs -> {out_dir} ({workers} worker{'s' if workers > 1 else ''})")
    if args.dry_run:
        for run in runs:
            print(f"  {run.run_id}  (kv pairs {run.config['task']['num_kv_pairs']})")
        return 0
    start = time.perf_counter()
    if workers > 1:
        for run in runs:  # bars of parallel runs would interleave
            run.config["train"]["progress"] = False
    if args.report_only:
        records = _finished_records(runs, out_dir)
    else:
        try:
            records = run_sweep(runs, run_one, out_dir, workers=workers)
        except RuntimeError as e:  # some runs failed: report the others, then fail
            print(f"error: {e}", file=sys.stderr)
            records = _finished_records(runs, out_dir)
            write_report(config, name, records, out_dir, time.perf_counter() - start)
            return 1
    elapsed = None if args.report_only else time.perf_counter() - start
    table = write_report(config, name, records, out_dir, elapsed)
    print()
    print(table)
    if elapsed is not None:
        print(f"wall time {elapsed:.0f} s")
    print(f"report: {out_dir / 'report.md'}\nfigure: {out_dir / 'figure.png'}\nruns:   {out_dir / 'results.csv'}")
    return 0


def _finished_records(runs: Sequence[Run], out_dir: Path) -> list[dict]:
    import json

    records = []
    for run in runs:
        path = out_dir / run.run_id / "summary.json"
        summary = json.loads(path.read_text()) if path.exists() else None
        records.append({"run_id": run.run_id, "params": run.params, "config": run.config, "summary": summary})
    return records


__all__ = [
    "DEFAULTS",
    "KERNEL_VARIANTS",
    "build_model",
    "datasets",
    "get_key",
    "main",
    "model_config",
    "prepare_runs",
    "run_one",
    "write_report",
]

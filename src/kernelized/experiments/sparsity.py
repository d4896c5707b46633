"""`kernelized sparsity`: do RKS kernels struggle on sparse queries and keys where PRF kernels converge?

    kernelized sparsity --preset cpu --workers 2          # 9 kernels x 3 densities x 3 seeds -> runs/sparsity/cpu/
    kernelized sparsity --preset cpu --report-only        # rebuild report.md, results.csv, curves.png

The task (ours; the KL paper's is not public) is :class:`kernelized.data.sparse_attention.SparseAttentionTask`: a
one-layer student attention (the grid's kernel, bidirectional, its own q/k/v/o projections) learns to reproduce a
fixed random softmax attention over inputs whose coordinates are nonzero with probability ``density``. One run per
(kernel, density, seed); each records

* the normalised error ``MSE / Var(y)`` on a fixed evaluation set every ``eval_every`` steps (the curve), its final
  value, and the first step at which it reached ``target`` (``steps_to_target``; none: not reached);
* the gradient noise of the attention parameters (q/k projections and the feature map's own parameters) across
  ``grad_batches`` minibatches at the start, middle and end of training: ``noise_ratio = E|g - mean g|^2 /
  |mean g|^2`` (per-minibatch gradients at one set of weights; large = the gradient direction is mostly noise).

The report pairs runs by seed (same teacher, same data, same initial projections per seed) and tests every RKS map
against its PRF twin (GMM, FastFood, Generator) at every density, plus each kernel against softmax.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kernelized.data.sparse_attention import SparseAttentionTask
from kernelized.experiments.framework import cli
from kernelized.experiments.framework.cli import command
from kernelized.experiments.framework.grid import Run
from kernelized.experiments.framework.schema import ExperimentConfig, defaults_of
from kernelized.experiments.framework.sweep import other_runs
from kernelized.experiments.sparsity_report import write_report
from kernelized.layers.mixers import attention_spec, build_mixer


@dataclass
class SparsityConfig(ExperimentConfig):
    """One run: a student with ``kernel`` trained on the task at ``density`` (see the module docstring)."""

    kernel: str = "gmm-rks"
    density: float = 0.1
    d_model: int = 32
    num_heads: int = 2
    seq_len: int = 32
    sharpness: float = 1.0
    teacher_seed: int = 0
    kernel_options: dict = field(default_factory=dict)
    steps: int = 1500
    batch_size: int = 32
    lr: float = 3.0e-3
    eval_every: int = 100
    eval_batch: int = 256
    target: float = 0.5  # the normalised error that counts as "converged"
    grad_batches: int = 8  # minibatches for the gradient-noise estimate
    threads: int = 1


DEFAULTS = defaults_of(SparsityConfig)


def check_values(config: dict, source: str) -> None:
    """The task's own checks, a known kernel, and positive sizes (two minibatches at least for a variance)."""
    task_of(config)
    attention_spec(config["kernel"])
    for key, least in (("steps", 1), ("batch_size", 1), ("eval_every", 1), ("eval_batch", 1), ("grad_batches", 2)):
        if config[key] < least:
            raise ValueError(f"{key} in {source} must be >= {least}, got {config[key]!r}")
    if not (config["lr"] > 0 and config["target"] > 0):
        raise ValueError(f"lr and target in {source} must be > 0, got {config['lr']!r} and {config['target']!r}")


def task_of(config: dict) -> SparseAttentionTask:
    keys = ("d_model", "num_heads", "seq_len", "density", "sharpness", "teacher_seed")
    return SparseAttentionTask(**{k: config[k] for k in keys})


def build_student(config: dict) -> torch.nn.Module:
    spec = {**attention_spec(config["kernel"]), "num_heads": config["num_heads"]}
    if spec["mixer"] == "kernel":
        spec["kernel_options"] = dict(config["kernel_options"] or {})
    return build_mixer(spec, config["d_model"], causal=False)


def attention_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters that shape the attention weights: q/k projections and the feature map's own."""
    return [p for n, p in model.named_parameters() if n.startswith(("q_proj", "k_proj", "feature_map"))]


def normalised_loss(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``MSE / Var(y)`` of the student on ``(x, y)``: the training loss and the reported error."""
    return ((model(x) - y) ** 2).mean() / y.var()


def normalised_error(model, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(normalised_loss(model, x, y))


def gradient_noise(model, task: SparseAttentionTask, config: dict, generator: torch.Generator) -> dict:
    """Per-minibatch gradients of the attention parameters at the current weights: trace of their covariance,
    squared norm of their mean and the ratio (noise over signal)."""
    params = attention_parameters(model)
    grads = []
    for _ in range(config["grad_batches"]):
        loss = normalised_loss(model, *task.sample(config["batch_size"], generator))
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]))
    g = torch.stack(grads)
    var = float(g.var(0).sum())
    mean_sq = float(g.mean(0).square().sum())
    return {"grad_var": var, "grad_mean_sq": mean_sq, "noise_ratio": var / mean_sq if mean_sq > 0 else math.inf}


def run_one(config: dict, run_dir: Path) -> dict:
    """Train the student; the curve, the final error, steps to the target and the gradient noise (no files)."""
    torch.set_num_threads(int(config["threads"]))
    task = task_of(config)
    torch.manual_seed(config["seed"])
    model = build_student(config)
    data = torch.Generator().manual_seed(1000 + config["seed"])
    x_eval, y_eval = task.sample(config["eval_batch"], torch.Generator().manual_seed(12345))
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    curve, noise, reached = [(0, normalised_error(model, x_eval, y_eval))], {}, None
    checkpoints = {0: "start", config["steps"] // 2: "middle"}  # "end" is measured after the loop
    for step in range(1, config["steps"] + 1):
        if step - 1 in checkpoints:
            noise[checkpoints[step - 1]] = gradient_noise(model, task, config, data)
        loss = normalised_loss(model, *task.sample(config["batch_size"], data))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % config["eval_every"] == 0 or step == config["steps"]:
            curve.append((step, normalised_error(model, x_eval, y_eval)))
            if reached is None and curve[-1][1] <= config["target"]:
                reached = step
    noise["end"] = gradient_noise(model, task, config, data)
    finite = math.isfinite(curve[-1][1])
    return {"curve": curve, "final_error": curve[-1][1] if finite else math.inf, "steps_to_target": reached,
            "noise": noise, "diverged": not finite}  # fmt: skip


def prepare_runs(args: argparse.Namespace) -> tuple[dict, list[Run]]:
    return cli.checked_runs("sparsity", args, list(args.set), DEFAULTS, SparsityConfig, check_values)


@command
def main(argv: list[str]) -> int:
    parser = cli.experiment_parser("sparsity", __doc__, default_preset="cpu")
    args = parser.parse_args(argv)
    config, runs = prepare_runs(args)
    name, out, workers, _ = cli.start(args, config, "sparsity", runs, lambda todo: 0.0)
    if args.dry_run:
        print("\n".join(f"  {run.run_id}" for run in runs))
        return 0
    records = cli.sweep(args, runs, run_one, out, workers, "sparsity")
    text = write_report(records, out, name, "kernelized sparsity " + " ".join(argv), other_runs(runs, out))
    print(text.split("## Paired tests")[0][-3000:])
    print(f"wrote {out / 'report.md'}, results.csv, curves.png", file=sys.stderr)
    return cli.finish(records)

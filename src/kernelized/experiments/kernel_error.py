"""`kernelized kernel-error`: the random-feature estimators' error against M, as a table and a plot.

    kernelized kernel-error                                   # preset `default` -> runs/kernel-error/
    kernelized kernel-error --out docs --no-progress          # the published docs/kernel_error.md
    kernelized kernel-error --kernels rff,performer --num-features 8,32,128 --set draws=50

The settings are a preset, ``configs/kernel-error/<name>.yaml`` (``--preset``, default ``default``), validated
against :class:`KernelErrorConfig`; ``--set key=value`` overrides a field (repeatable), and ``--kernels`` /
``--num-features`` are shortcuts for the ``kernels`` and ``num_features`` fields. ``--out`` defaults to
``runs/kernel-error``.

A kernel that cannot take one of the Ms (FastFood needs whole blocks: M a multiple of the padded head dim;
generators need M >= 2) has that (kernel, M) cell skipped with a ``note:``; the report lists the skipped cells
and every other cell is still measured.

Writes ``OUT/kernel_error.csv`` (one row per kernel and M), ``OUT/kernel_error.md`` (the table, the fitted log-log
slope per kernel, the setup, the skipped cells) and ``OUT/kernel_error.png`` (log-log MSE against M, one line per
kernel, dotted closed-form MSE where one exists), each atomically. See :mod:`kernelized.eval.kernel_error` for the
quantities.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from kernelized.eval.kernel_error import DEFAULT_SPECS, fit_slope, kernel_error
from kernelized.experiments.framework.cli import command
from kernelized.experiments.framework.presets import load_preset, parse_list
from kernelized.experiments.framework.schema import check_types, defaults_of
from kernelized.experiments.framework.tables import markdown_table, write_figure
from kernelized.train.checkpoint import write_text_atomic

COLUMNS = [
    "kernel", "num_features", "feature_dim", "draws", "mse", "mse_se", "variance", "bias2", "rel_rmse", "mse_theory",
]  # fmt: skip
DEFAULT_OUT = "runs/kernel-error"


@dataclass
class KernelErrorConfig:
    """A kernel-error preset: pairs ``q, k ~ N(0, input_scale^2 I)`` of shape ``[pairs, num_heads, head_dim]``."""

    kernels: list[str] = field(default_factory=lambda: list(DEFAULT_SPECS))  # names of DEFAULT_SPECS
    num_features: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])  # the Ms (random frequencies)
    head_dim: int = 16
    num_heads: int = 2
    pairs: int = 64  # (q, k) pairs per head
    input_scale: float = 0.5  # q, k ~ N(0, scale^2 I) before the d^-1/4 scaling
    draws: int = 200  # independent draws per kernel and M
    seed: int = 0
    standardize: bool = True  # GMM spectra set to mu = 0, Sigma = I (False: keep their initialisation)


def check_values(config: dict, source: str) -> None:
    """Kernels known, Ms and sizes >= 1, draws >= 2 (a variance needs two), the input scale positive."""
    unknown = [n for n in config["kernels"] if n not in DEFAULT_SPECS]
    if unknown or not config["kernels"]:
        raise ValueError(
            f"kernels in {source}: unknown {unknown or 'none given'}; the kernels are {list(DEFAULT_SPECS)}"
        )
    if not config["num_features"] or min(config["num_features"]) < 1:
        raise ValueError(f"num_features in {source} must be integers >= 1, got {config['num_features']!r}")
    for key, least in (("head_dim", 1), ("num_heads", 1), ("pairs", 1), ("draws", 2)):
        if config[key] < least:
            raise ValueError(f"{key} in {source} must be >= {least}, got {config[key]!r}")
    if not config["input_scale"] > 0:
        raise ValueError(f"input_scale in {source} must be > 0, got {config['input_scale']!r}")


def load_config(args: argparse.Namespace) -> dict:
    """The preset over :class:`KernelErrorConfig`'s defaults, then ``--set``, ``--kernels``, ``--num-features``."""
    config = load_preset("kernel-error", args.preset, args.set, defaults=defaults_of(KernelErrorConfig))
    source = f"kernel-error preset {args.preset!r}"
    if config.pop("grid"):
        raise ValueError(f"{source}: kernel-error takes no grid (kernels and num_features are its axes)")
    config["kernels"] = parse_list(args.kernels, "--kernels") or config["kernels"]
    config["num_features"] = parse_list(args.num_features, "--num-features", int) or config["num_features"]
    check_types(config, KernelErrorConfig, source)
    check_values(config, source)
    return config


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="kernelized kernel-error", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--preset", default="default", help="a name in configs/kernel-error/ or a YAML path")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset field, e.g. draws=50 or standardize=false (repeatable)")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--kernels", default=None, help=f"comma-separated, some of {','.join(DEFAULT_SPECS)}")
    p.add_argument("--num-features", default=None, help="the Ms, comma-separated (the preset's num_features)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def measure(config: dict, progress: bool) -> tuple[list[dict], list[dict]]:
    """The rows of :func:`kernel_error` per (kernel, M), and the skipped cells ``{kernel, num_features, reason}``:
    those where building or evaluating the kernel at that M raised ValueError (a note on stderr says why)."""
    g = torch.Generator().manual_seed(config["seed"])
    shape = (config["pairs"], config["num_heads"], config["head_dim"])
    q = config["input_scale"] * torch.randn(*shape, generator=g, dtype=torch.float64)
    k = config["input_scale"] * torch.randn(*shape, generator=g, dtype=torch.float64)
    cells = [(name, M) for name in config["kernels"] for M in config["num_features"]]
    rows, skipped = [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny draws: threads only contend
    try:
        for name, M in tqdm(cells, desc="kernel error", disable=not progress):
            try:
                rows += kernel_error(name, q, k, [M], config["draws"], config["seed"], DEFAULT_SPECS[name],
                                     config["standardize"])  # fmt: skip
            except ValueError as e:  # this kernel cannot take this M (e.g. FastFood's whole blocks)
                print(f"note: skipped {name} at M={M}: {e}", file=sys.stderr)
                skipped.append({"kernel": name, "num_features": M, "reason": str(e)})
    finally:
        torch.set_num_threads(threads)
    return rows, skipped


def write_csv(rows: list[dict], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    for r in rows:
        writer.writerow({c: r[c] for c in COLUMNS})
    write_text_atomic(buf.getvalue(), path)


def draw_plot(path: Path, rows: list[dict], title: str) -> None:
    """Log-log MSE (bars: 2 s.e.) and relative RMSE against M, one line per kernel; dotted: closed-form MSE."""
    import matplotlib.pyplot as plt

    fig, (ax, ax_rel) = plt.subplots(1, 2, figsize=(12, 5))
    names = list(dict.fromkeys(r["kernel"] for r in rows))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(names):
        rs = [r for r in rows if r["kernel"] == name]
        Ms = [r["num_features"] for r in rs]
        style = {"color": colors[i % len(colors)], "ls": "-" if name.endswith("prf") or name == "performer" else "--"}
        ax.errorbar(
            Ms, [r["mse"] for r in rs], yerr=[2 * r["mse_se"] for r in rs], marker="o", ms=3, capsize=2, label=name,
            **style,
        )  # fmt: skip
        ax_rel.plot(Ms, [r["rel_rmse"] for r in rs], marker="o", ms=3, label=name, **style)
        theory = [r["mse_theory"] for r in rs]
        if not any(math.isnan(t) for t in theory):
            ax.plot(Ms, theory, ls=":", lw=2, color=style["color"], alpha=0.7, label=f"{name} (closed form)")
    for a, ylabel in ((ax, "MSE of <phi(q), phi(k)> (bars: 2 s.e.)"), (ax_rel, "sqrt(MSE) / mean |kernel|")):
        a.set_xscale("log", base=2)
        a.set_yscale("log")
        a.set_xlabel("M (random frequencies)")
        a.set_ylabel(ylabel)
        a.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _slopes_and_checks(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """Per kernel: the fitted log-log slope of MSE against M, and measured / closed-form MSE where one exists."""
    names = list(dict.fromkeys(r["kernel"] for r in rows))
    slopes, checks = [], []
    for name in names:
        rs = [r for r in rows if r["kernel"] == name]
        s, se = fit_slope(rs)
        slopes.append({"kernel": name, "slope": s, "± 2 se": 2 * se})
        exact = [r for r in rs if not math.isnan(r["mse_theory"])]
        if exact:
            ratios = ", ".join(f"{r['mse'] / r['mse_theory']:.3f} (M={r['num_features']})" for r in exact)
            checks.append(f"- {name}: measured / closed-form MSE = {ratios}")
    return slopes, checks


def _skipped_section(skipped: list[dict]) -> list[str]:
    if not skipped:
        return []
    lines = ["## Skipped cells", "", "Kernels that cannot take these numbers of features (not measured):", ""]
    return [*lines, *(f"- {s['kernel']} at M={s['num_features']}: {s['reason']}" for s in skipped), ""]


def write_markdown(rows: list[dict], skipped: list[dict], path: Path, config: dict, command: str,
                   figure_error: str | None = None) -> str:  # fmt: skip
    slopes, checks = _slopes_and_checks(rows)
    setup = (
        f"q, k ~ N(0, {config['input_scale']}^2 I), {config['pairs']} pairs x {config['num_heads']} heads, head dim "
        f"d = {config['head_dim']} (inputs scaled by d^-1/4 inside each map), {config['draws']} independent draws "
        f"per kernel and M, seed {config['seed']}, float64."
    )
    text = "\n".join(
        [
            "# Random-feature kernel error against the number of features",
            "",
            f"Generated by `{command}`.",
            "",
            setup + (" GMM spectra set to mu = 0, Sigma = I." if config["standardize"] else ""),
            "",
            f"({figure_error})" if figure_error else "![MSE against M](kernel_error.png)",
            "",
            *_skipped_section(skipped),
            "## Log-log slope of MSE against M (-1 for an unbiased estimator with independent draws)",
            "",
            markdown_table(slopes, digits=3),
            "## Measured against the closed-form MSE",
            "",
            "The standard formulas (the KL paper's own MSE theorem is not available to us; see "
            "`kernelized.eval.kernel_error`): rff `(1/2M)(1 - exp(-|q~ - k~|^2))^2`, gmm-prf "
            "`(1/M) K^2 (exp(t' Sigma t) - 1)` with `t = q~ + k~`. The ratio of the measured MSE to the formula (PRF "
            "squared errors are heavy-tailed, so a finite sample of draws tends to fall below their expectation):",
            "",
            *(checks or ["- (no kernel with a closed-form MSE in this run)"]),
            "",
            "## Per kernel and M",
            "",
            "`mse`: mean squared error of one draw's estimate against `kernel(q, k)`; `mse_se`: its standard error; "
            "`variance`: across draws, averaged over pairs; `bias2`: squared error of the mean estimate (noise-level "
            "for unbiased estimators); `rel_rmse`: sqrt(mse) / mean |kernel|; `mse_theory`: the closed-form MSE "
            "where one exists (rff with i.i.d. draws; gmm-prf with C = 1). M counts frequencies: features are 2M+1 "
            "(RKS with smoothing), 4M+1 (GMM-RKS, whose every noise row gives the pair L'eps +- mu), 2M (Performer's "
            "hyperbolic pair) or M (PRF). FastFood and generator kernels have no closed form: their reference is a "
            "fixed-seed large-sample estimate (16384 frequencies).",
            "",
            markdown_table(rows, COLUMNS, digits=4),
        ]
    )
    write_text_atomic(text, path)
    return text


@command
def main(argv: list[str]) -> int:
    args = parse_args(argv)
    config = load_config(args)
    rows, skipped = measure(config, progress=not args.no_progress)
    if not rows:
        raise ValueError("every (kernel, M) cell was skipped (see the notes above); nothing to write")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "kernel_error.csv")
    title = f"random-feature kernel error, d = {config['head_dim']}"
    figure_error = write_figure(draw_plot, out / "kernel_error.png", rows, title)
    if figure_error:
        print(f"note: {figure_error}", file=sys.stderr)
    write_markdown(rows, skipped, out / "kernel_error.md", config, "kernelized kernel-error " + " ".join(argv),
                   figure_error)  # fmt: skip
    for slope in _slopes_and_checks(rows)[0]:
        print(f"{slope['kernel']:>15}: log-log slope {slope['slope']:+.3f} ± {slope['± 2 se']:.3f}")
    print(f"wrote {out / 'kernel_error.md'}, .csv, .png" + (f"; skipped {len(skipped)} cell(s)" if skipped else ""))
    return 0

"""`kernelized kernel-error`: the random-feature estimators' error against M, as a table and a plot.

    kernelized kernel-error                                   # preset `default` -> runs/kernel-error/default/
    kernelized kernel-error --out docs --no-progress          # the published docs/kernel_error.md
    kernelized kernel-error --kernels rff,performer --num-features 8,32,128 --set draws=50 --seeds 0,1,2

A sweep of the experiment framework: one run per (kernel, seed), the grid's axes (``--kernels``, ``--seeds``
narrow them); each run measures its kernel at every M of ``num_features`` and is kept in ``OUT/runs/<run-id>/``
(config.yaml, result.json), so a rerun computes only what changed and ``--report-only`` rebuilds the report.
The settings are a preset, ``configs/kernel-error/<name>.yaml`` (``--preset``, default ``default``), validated
against :class:`KernelErrorConfig`; ``--set key=value`` overrides a field; ``--num-features`` is a shortcut for
the ``num_features`` field. ``--out`` defaults to ``runs/kernel-error/<preset>``.

A kernel that cannot take one of the Ms (FastFood needs whole blocks: M a multiple of the padded head dim;
generators need M >= 2) has that (kernel, M) cell skipped with a ``note:``; the report lists the skipped cells
and every other cell is still measured.

Writes ``OUT/kernel_error.csv`` (one row per kernel, M and seed), ``OUT/kernel_error.md`` (the table, the fitted
log-log slope per kernel, with a 95% interval over seeds when there are several, the setup, the skipped cells)
and ``OUT/kernel_error.png`` (log-log MSE against M, one line per kernel, dotted closed-form MSE where one
exists), each atomically. See :mod:`kernelized.eval.kernel_error` for the quantities.
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

from kernelized.eval.kernel_error import DEFAULT_SPECS, fit_slope, kernel_error
from kernelized.eval.stats import mean_ci
from kernelized.experiments import kernel_variance
from kernelized.experiments.framework import cli
from kernelized.experiments.framework.cli import command
from kernelized.experiments.framework.grid import Run
from kernelized.experiments.framework.launchers import torch_threads
from kernelized.experiments.framework.presets import parse_list
from kernelized.experiments.framework.schema import ExperimentConfig, defaults_of
from kernelized.experiments.framework.sweep import other_runs
from kernelized.experiments.framework.tables import markdown_table, status_section, write_figure
from kernelized.train.checkpoint import write_text_atomic

COLUMNS = [
    "kernel", "num_features", "seed", "feature_dim", "draws", "mse", "mse_se", "variance", "bias2", "rel_rmse",
    "mse_theory",
]  # fmt: skip
DEFAULT_OUT = "runs/kernel-error"


@dataclass
class KernelErrorConfig(ExperimentConfig):
    """A kernel-error run: pairs ``q, k ~ N(0, input_scale^2 I)`` of shape ``[pairs, num_heads, head_dim]``."""

    kernel: str = "rff"  # a name of DEFAULT_SPECS; the preset's grid.kernel lists the kernels of a sweep
    num_features: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])  # the Ms (random frequencies)
    head_dim: int = 16
    num_heads: int = 2
    pairs: int = 64  # (q, k) pairs per head
    input_scale: float = 0.5  # q, k ~ N(0, scale^2 I) before the d^-1/4 scaling
    draws: int = 200  # independent draws per kernel and M
    standardize: bool = True  # GMM spectra set to mu = 0, Sigma = I (False: keep their initialisation)
    # the variance section (GMM-RKS / GMM-PRF closed-form MSE against Sigma = factor x I, norms and M); [] skips it
    variance_eigenvalues: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0])
    variance_norms: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])  # |q| = |k|
    variance_num_features: list[int] = field(default_factory=lambda: [16, 64, 256])
    variance_draws: int = 200  # draws of the Monte-Carlo check per cell


DEFAULTS = defaults_of(KernelErrorConfig)


def check_values(config: dict, source: str) -> None:
    """Kernel known, Ms and sizes >= 1, draws >= 2 (a variance needs two), the input scale positive."""
    if config["kernel"] not in DEFAULT_SPECS:
        raise ValueError(f"kernel in {source} must be one of {list(DEFAULT_SPECS)}, got {config['kernel']!r}")
    if not config["num_features"] or min(config["num_features"]) < 1:
        raise ValueError(f"num_features in {source} must be integers >= 1, got {config['num_features']!r}")
    for key, least in (("head_dim", 1), ("num_heads", 1), ("pairs", 1), ("draws", 2)):
        if config[key] < least:
            raise ValueError(f"{key} in {source} must be >= {least}, got {config[key]!r}")
    if not config["input_scale"] > 0:
        raise ValueError(f"input_scale in {source} must be > 0, got {config['input_scale']!r}")
    for key in ("variance_eigenvalues", "variance_norms", "variance_num_features"):
        if any(not v > 0 for v in config[key]):
            raise ValueError(f"{key} in {source} must be numbers > 0, got {config[key]!r}")
    if config["variance_eigenvalues"] and not (config["variance_norms"] and config["variance_num_features"]):
        raise ValueError(f"variance_norms and variance_num_features in {source} must not be empty")


def prepare_runs(args: argparse.Namespace) -> tuple[dict, list[Run]]:
    """The preset over :class:`KernelErrorConfig`'s defaults, ``--set``, ``--kernels``, ``--seeds`` and
    ``--num-features`` applied; one run per (kernel, seed), each checked."""
    num_features = parse_list(args.num_features, "--num-features", int)
    overrides = [*args.set, *([f"num_features={num_features}"] if num_features else [])]
    return cli.checked_runs("kernel-error", args, overrides, DEFAULTS, KernelErrorConfig, check_values)


def run_one(config: dict, run_dir: Path) -> dict:
    """One kernel and seed at every M: ``{"rows": [...], "skipped": [{kernel, num_features, reason}]}``; a cell
    where building or evaluating the kernel at that M raised ValueError is skipped (a note on stderr says why)."""
    g = torch.Generator().manual_seed(config["seed"])
    shape = (config["pairs"], config["num_heads"], config["head_dim"])
    q = config["input_scale"] * torch.randn(*shape, generator=g, dtype=torch.float64)
    k = config["input_scale"] * torch.randn(*shape, generator=g, dtype=torch.float64)
    name, rows, skipped = config["kernel"], [], []
    with torch_threads(1):  # thousands of tiny draws: threads only contend
        for M in config["num_features"]:
            try:
                rows += kernel_error(name, q, k, [M], config["draws"], config["seed"], DEFAULT_SPECS[name],
                                     config["standardize"])  # fmt: skip
            except ValueError as e:  # this kernel cannot take this M (e.g. FastFood's whole blocks)
                print(f"note: skipped {name} at M={M}: {e}", file=sys.stderr)
                skipped.append({"kernel": name, "num_features": M, "reason": str(e)})
    return {"rows": [{**r, "seed": config["seed"]} for r in rows], "skipped": skipped}


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


def seed_means(rows: list[dict]) -> list[dict]:
    """One row per (kernel, M): the mean over seeds of every measured column (the rows themselves for one seed)."""
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["kernel"], r["num_features"]), []).append(r)
    out = []
    for group in cells.values():
        mean = {c: sum(r[c] for r in group) / len(group) for c in COLUMNS[4:]}
        out.append({**group[0], **mean, "seed": len(group) if len(group) > 1 else group[0]["seed"]})
    return out


def _slopes_and_checks(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """Per kernel: the fitted log-log slope of MSE against M (one seed: ± 2 s.e. of the fit; several: mean and
    95% interval over seeds), and measured / closed-form MSE where one exists."""
    names = list(dict.fromkeys(r["kernel"] for r in rows))
    slopes, checks = [], []
    for name in names:
        rs = [r for r in rows if r["kernel"] == name]
        seeds = list(dict.fromkeys(r["seed"] for r in rs))
        if len(seeds) > 1:
            ci = mean_ci([fit_slope([r for r in rs if r["seed"] == s])[0] for s in seeds])
            slopes.append({"kernel": name, "slope": ci.mean, "± (95% CI over seeds)": ci.half_width, "seeds": ci.n})
        else:
            s, se = fit_slope(rs)
            slopes.append({"kernel": name, "slope": s, "± 2 se": 2 * se})
        exact = [r for r in seed_means(rs) if not math.isnan(r["mse_theory"])]
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
                   figure_error: str | None = None, records: list[dict] | None = None,
                   ignored: list[str] = (), variance: list[str] = ()) -> str:  # fmt: skip
    slopes, checks = _slopes_and_checks(rows)
    seeds = sorted({r["seed"] for r in rows})
    setup = (
        f"q, k ~ N(0, {config['input_scale']}^2 I), {config['pairs']} pairs x {config['num_heads']} heads, head dim "
        f"d = {config['head_dim']} (inputs scaled by d^-1/4 inside each map), {config['draws']} independent draws "
        f"per kernel and M, seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}, float64."
    )
    text = "\n".join(
        [
            "# Random-feature kernel error against the number of features",
            "",
            f"Generated by `{command}`.",
            "",
            *([status_section(records, ignored)] if records else []),
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
            "The closed forms of `estimator_mse` (i.i.d. Gaussian and Gaussian-mixture spectra; see "
            "`kernelized.kernels.random_features`), e.g. rff `(1/2M)(1 - exp(-|q~ - k~|^2))^2`, gmm-prf "
            "`(1/M) K^2 (exp(t' Sigma t) - 1)` with `t = q~ + k~`. The ratio of the measured MSE to the formula (PRF "
            "squared errors are heavy-tailed, so a finite sample of draws tends to fall below their expectation):",
            "",
            *(checks or ["- (no kernel with a closed-form MSE in this run)"]),
            "",
            *variance,
            "",
            "## Per kernel and M",
            "",
            "`mse`: mean squared error of one draw's estimate against `kernel(q, k)`; `mse_se`: its standard error; "
            "`variance`: across draws, averaged over pairs; `bias2`: squared error of the mean estimate (noise-level "
            "for unbiased estimators); `rel_rmse`: sqrt(mse) / mean |kernel|; `mse_theory`: the closed-form MSE "
            "where one exists (i.i.d. rff and gmm maps; Performer's default orthogonal rows have none). M counts "
            "frequencies: features are 2M+1 "
            "(RKS with smoothing), 4M+1 (GMM-RKS, whose every noise row gives the pair L'eps +- mu), 2M (Performer's "
            "hyperbolic pair) or M (PRF). FastFood and generator kernels have no closed form: their reference is a "
            "fixed-seed large-sample estimate (16384 frequencies).",
            "",
            markdown_table(rows, COLUMNS, digits=4),
        ]
    )
    write_text_atomic(text, path)
    return text


def write_report(records: list[dict], out: Path, config: dict, command: str, ignored=()) -> list[dict]:
    """kernel_error.{csv,md,png} from the finished runs of the current config; returns the slope rows."""
    done = [r for r in records if r["status"] == "finished"]
    rows = [row for r in done for row in r["summary"]["rows"]]
    skipped = [s for r in done for s in r["summary"]["skipped"]]
    if not rows:
        raise ValueError("no (kernel, M) cell was measured (every run failed or was skipped; see the notes above)")
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "kernel_error.csv")
    title = f"random-feature kernel error, d = {config['head_dim']}"
    figure_error = write_figure(draw_plot, out / "kernel_error.png", seed_means(rows), title)
    if figure_error:
        print(f"note: {figure_error}", file=sys.stderr)
    variance = kernel_variance.write(kernel_variance.measure(config), out) if config["variance_eigenvalues"] else []
    write_markdown(rows, skipped, out / "kernel_error.md", config, command, figure_error, records, ignored, variance)
    return _slopes_and_checks(rows)[0]


@command
def main(argv: list[str]) -> int:
    parser = cli.experiment_parser("kernel-error", __doc__, default_preset="default")
    parser.add_argument("--num-features", default=None, help="the Ms, comma-separated (the preset's num_features)")
    args = parser.parse_args(argv)
    config, runs = prepare_runs(args)
    name, out, workers, _ = cli.start(args, config, "kernel-error", runs, lambda todo: 0.0)
    sweep = out / "runs"
    if args.dry_run:
        print("\n".join(f"  {run.run_id}" for run in runs))
        return 0
    records = cli.sweep(args, runs, run_one, sweep, workers, "kernel-error")
    command_line = "kernelized kernel-error " + " ".join(argv)
    slopes = write_report(records, out, config, command_line, other_runs(runs, sweep))
    for slope in slopes:
        spread = slope.get("± 2 se", slope.get("± (95% CI over seeds)"))
        print(f"{slope['kernel']:>15}: log-log slope {slope['slope']:+.3f} ± {spread:.3f}")
    print(f"wrote {out / 'kernel_error.md'}, .csv, .png")
    return cli.finish(records)

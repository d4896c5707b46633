"""`kernelized kernel-error --out DIR`: the random-feature estimators' error against M, as a table and a plot.

Writes ``DIR/kernel_error.csv`` (one row per kernel and M), ``DIR/kernel_error.md`` (the table, the fitted log-log
slope per kernel, the setup) and ``DIR/kernel_error.png`` (log-log MSE against M, one line per kernel, dashed
closed-form MSE where one exists). See :mod:`kernelized.eval.kernel_error` for the quantities.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from pathlib import Path

import torch

from kernelized.eval.kernel_error import DEFAULT_SPECS, fit_slope, kernel_error_table
from kernelized.experiments.common import markdown_table
from kernelized.train.checkpoint import write_text_atomic

COLUMNS = [
    "kernel", "num_features", "feature_dim", "draws", "mse", "mse_se", "variance", "bias2", "rel_rmse", "mse_theory",
]  # fmt: skip


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="kernelized kernel-error", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--kernels", default=",".join(DEFAULT_SPECS), help="comma-separated kernel names")
    p.add_argument("--num-features", type=_int_list, default=[16, 32, 64, 128, 256], help="the Ms, comma-separated")
    p.add_argument("--head-dim", type=int, default=16)
    p.add_argument("--num-heads", type=int, default=2)
    p.add_argument("--pairs", type=int, default=64, help="(q, k) pairs per head")
    p.add_argument("--input-scale", type=float, default=0.5, help="q, k ~ N(0, scale^2 I) before the d^-1/4 scaling")
    p.add_argument("--draws", type=int, default=200, help="independent draws per kernel and M")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-standardize", action="store_true", help="keep GMM spectra at their initialisation")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    for name in ("head_dim", "num_heads", "pairs", "draws"):
        if getattr(args, name) < (2 if name == "draws" else 1):
            p.error(f"--{name.replace('_', '-')} must be >= {2 if name == 'draws' else 1}, got {getattr(args, name)}")
    names = [n.strip() for n in args.kernels.split(",") if n.strip()]
    unknown = [n for n in names if n not in DEFAULT_SPECS]
    if unknown or not names:
        p.error(f"--kernels must name some of {list(DEFAULT_SPECS)}, got {args.kernels!r}")
    args.kernel_names = names
    return args


def write_csv(rows: list[dict], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    for r in rows:
        writer.writerow({c: r[c] for c in COLUMNS})
    write_text_atomic(buf.getvalue(), path)


def write_plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def write_markdown(rows: list[dict], path: Path, args: argparse.Namespace, command: str) -> str:
    names = list(dict.fromkeys(r["kernel"] for r in rows))
    slopes = []
    for name in names:
        s, se = fit_slope([r for r in rows if r["kernel"] == name])
        slopes.append({"kernel": name, "slope": s, "± 2 se": 2 * se})
    checks = []
    for name in names:
        rs = [r for r in rows if r["kernel"] == name and not math.isnan(r["mse_theory"])]
        if rs:
            ratios = ", ".join(f"{r['mse'] / r['mse_theory']:.3f} (M={r['num_features']})" for r in rs)
            checks.append(f"- {name}: measured / closed-form MSE = {ratios}")
    setup = (
        f"q, k ~ N(0, {args.input_scale}^2 I), {args.pairs} pairs x {args.num_heads} heads, head dim d = "
        f"{args.head_dim} (inputs scaled by d^-1/4 inside each map), {args.draws} independent draws per kernel and "
        f"M, seed {args.seed}, float64."
    )
    text = "\n".join(
        [
            "# Random-feature kernel error against the number of features",
            "",
            f"Generated by `{command}`.",
            "",
            setup + (" GMM spectra set to mu = 0, Sigma = I." if not args.no_standardize else ""),
            "",
            "![MSE against M](kernel_error.png)",
            "",
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


def main(argv: list[str] | None = None) -> int:
    argv = list(argv or [])
    args = parse_args(argv)
    g = torch.Generator().manual_seed(args.seed)
    shape = (args.pairs, args.num_heads, args.head_dim)
    q = args.input_scale * torch.randn(*shape, generator=g, dtype=torch.float64)
    k = args.input_scale * torch.randn(*shape, generator=g, dtype=torch.float64)
    specs = {n: DEFAULT_SPECS[n] for n in args.kernel_names}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny draws: threads only contend
    try:
        rows = kernel_error_table(
            q, k, args.num_features, specs, draws=args.draws, seed=args.seed, standardize=not args.no_standardize,
            progress=not args.no_progress,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    out = args.out
    command = "kernelized kernel-error " + " ".join(argv)
    write_csv(rows, out / "kernel_error.csv")
    write_plot(rows, out / "kernel_error.png", f"random-feature kernel error, d = {args.head_dim}")
    write_markdown(rows, out / "kernel_error.md", args, command)
    for name in specs:
        s, se = fit_slope([r for r in rows if r["kernel"] == name])
        print(f"{name:>15}: log-log slope {s:+.3f} ± {2 * se:.3f}")
    print(f"wrote {out / 'kernel_error.md'}, .csv, .png")
    return 0

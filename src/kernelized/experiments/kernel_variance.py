"""The variance section of `kernelized kernel-error`: GMM-RKS and GMM-PRF MSE against the covariance's
eigenvalues, the input norms and M (closed form, with a Monte-Carlo check), as a CSV, a figure and markdown.

The quantities are :mod:`kernelized.eval.estimator_variance`'s; the preset's ``variance_*`` fields choose the grid.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from kernelized.eval.estimator_variance import variance_sweep
from kernelized.experiments.framework.launchers import torch_threads
from kernelized.experiments.framework.tables import markdown_table, write_figure
from kernelized.train.checkpoint import write_text_atomic

COLUMNS = [
    "kernel", "eigenvalue", "norm", "num_features", "kernel_sq", "mse_theory", "rel_mse_theory", "mse_measured",
    "mse_se",
]  # fmt: skip


def measure(config: dict) -> list[dict]:
    """The sweep of the config's ``variance_*`` fields (one thread: thousands of tiny draws)."""
    with torch_threads(1):
        return variance_sweep(
            config["variance_eigenvalues"], config["variance_norms"], config["variance_num_features"],
            head_dim=config["head_dim"], num_heads=config["num_heads"], pairs=config["pairs"],
            draws=config["variance_draws"], seed=config["seed"],
        )  # fmt: skip


def draw_plot(path: Path, rows: list[dict], M: int) -> None:
    """Left: MSE against the eigenvalue factor (one line per kernel and norm); right: MSE / kernel^2."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    cells = [r for r in rows if r["num_features"] == M]
    colors = {"gmm-rks": "tab:blue", "gmm-prf": "tab:red"}
    norms = sorted({r["norm"] for r in cells})
    styles = dict(zip(norms, ["-", "--", ":", "-."] * 4))
    for name in dict.fromkeys(r["kernel"] for r in cells):
        for norm in norms:
            rs = sorted((r for r in cells if r["kernel"] == name and r["norm"] == norm), key=lambda r: r["eigenvalue"])
            x = [r["eigenvalue"] for r in rs]
            kw = {
                "color": colors.get(name),
                "ls": styles[norm],
                "marker": "o",
                "ms": 3,
                "label": f"{name}, |q|=|k|={norm}",
            }
            axes[0].plot(x, [r["mse_theory"] for r in rs], **kw)
            axes[0].errorbar(x, [r["mse_measured"] for r in rs], yerr=[2 * r["mse_se"] for r in rs], fmt="none",
                             ecolor=colors.get(name), alpha=0.5)  # fmt: skip
            axes[1].plot(x, [r["rel_mse_theory"] for r in rs], **kw)
    for ax, label in ((axes[0], "MSE (lines: closed form; bars: measured ± 2 s.e.)"), (axes[1], "MSE / kernel²")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("eigenvalue of Sigma (Sigma = factor x I, mu = 0)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"GMM estimators' error against the covariance's eigenvalues, M = {M}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _m_rows(rows: list[dict]) -> list[dict]:
    """The M sweep (eigenvalue 1, first norm) with M x MSE, constant for an exact 1/M law."""
    first = rows[0]["norm"]
    cells = [r for r in rows if r["eigenvalue"] == 1.0 and r["norm"] == first]
    return [{**r, "M x mse_theory": r["num_features"] * r["mse_theory"]} for r in cells]


def _largest_relative(rows: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in rows:
        out[r["kernel"]] = max(out.get(r["kernel"], 0.0), r["rel_mse_theory"])
    return out


def write(rows: list[dict], out: Path) -> list[str]:
    """kernel_variance.{csv,png}; returns the markdown section for kernel_error.md."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows({c: r[c] for c in COLUMNS} for r in rows)
    write_text_atomic(buf.getvalue(), out / "kernel_variance.csv")
    M = rows[0]["num_features"]
    error = write_figure(draw_plot, out / "kernel_variance.png", rows, M)
    if error:
        print(f"note: {error}", file=sys.stderr)
    return [
        "## Variance against the spectrum (closed form, checked by Monte Carlo)",
        "",
        "`estimator_mse` (`kernelized.kernels.random_features.RandomFeatureMap.estimator_mse`) gives one draw's MSE "
        "in closed form: GMM-RKS per noise row `2 cos(mu.d)^2 (1 - exp(-d' Sigma d))^2` (`d = q~ - k~`; the pair "
        "`z +- mu` shares z), GMM-PRF per frequency `exp(2 mu.t + t' Sigma t)(exp(t' Sigma t) - 1) "
        "exp(-2(|q~|^2 + |k~|^2))` (`t = q~ + k~`), both over M. Below, Sigma = factor x I and mu = 0, so the "
        "eigenvalues are the factor; q, k have the given norm (before the d^-1/4 scaling) in random directions. "
        "`mse_measured` is over the draws of the config, with its standard error: PRF's squared errors are "
        "log-normal, so where the closed form is large a finite sample of draws falls far below it (the rare huge "
        "draws that carry the expectation are not seen) -- the closed form is the number to trust there.",
        "",
        f"({error})" if error else "![MSE against the eigenvalues](kernel_variance.png)",
        "",
        "The closed forms imply that both MSEs grow with the eigenvalues and the norms (the paper's claim), RKS's "
        "bounded by 2/M per unit of mixture weight, PRF's as exp(2 t' Sigma t) without bound. Largest MSE / "
        "kernel^2 in this grid: " + ", ".join(f"{k} {v:.3g}" for k, v in _largest_relative(rows).items()) + ".",
        "",
        markdown_table(rows, COLUMNS, digits=4),
        "MSE against M at eigenvalue 1 (`M x mse_theory` constant: the exact 1/M law of independent draws):",
        "",
        markdown_table(
            _m_rows(rows), ["kernel", "num_features", "mse_theory", "mse_measured", "M x mse_theory"], digits=5
        ),  # fmt: skip
    ]

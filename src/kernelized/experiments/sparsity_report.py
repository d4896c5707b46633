"""The report of `kernelized sparsity`: per density and kernel the final error, convergence and gradient noise;
paired tests RKS vs PRF of each spectral family and every kernel vs softmax (Holm per density); the curves."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from kernelized.eval.stats import holm, mean_ci
from kernelized.experiments.framework.reduce import comparisons, mean_of, reduce_runs
from kernelized.experiments.framework.tables import markdown_table, status_section, write_figure
from kernelized.kernels.registry import SPECTRAL_FAMILIES
from kernelized.train.checkpoint import write_text_atomic

RKS_OF = {rks: prf for prf, rks in SPECTRAL_FAMILIES.values()}
METRICS = {"final_error": "final MSE / Var(y)", "noise.end.noise_ratio": "gradient noise ratio (end)"}


def _finished(records: list[dict]) -> list[dict]:
    return [r for r in records if r["status"] == "finished"]


def summary_rows(records: list[dict]) -> list[dict]:
    """One row per (density, kernel): final error mean ± CI, runs that reached the target, their mean steps, and
    the gradient-noise ratio at the start and the end (mean over seeds)."""
    cells: dict[tuple, list[dict]] = {}
    for r in _finished(records):
        cells.setdefault((r["config"]["density"], r["config"]["kernel"]), []).append(r)
    rows = []
    for (density, kernel), rs in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        s = [r["summary"] for r in rs]
        err = mean_ci([x["final_error"] for x in s])
        hit = [x["steps_to_target"] for x in s if x["steps_to_target"] is not None]
        rows.append({
            "density": density, "kernel": kernel, "final error (95% CI)": f"{err.mean:.3f} ± {err.half_width:.3f}",
            "n": len(s), "reached target": f"{len(hit)}/{len(s)}",
            "steps to target": sum(hit) / len(hit) if hit else math.nan,
            "noise ratio, start": mean_of(x["noise"]["start"]["noise_ratio"] for x in s),
            "noise ratio, end": mean_of(x["noise"]["end"]["noise_ratio"] for x in s),
        })  # fmt: skip
    return rows


def _wanted(a: str, b: str) -> bool:
    return RKS_OF.get(b) == a or RKS_OF.get(a) == b or "softmax" in (a, b)


def _p(c: dict) -> float:
    """The t-test p for Holm; a difference that is the same on every seed (t undefined, verdict a > b or a < b)
    counts as p = 0, a tie as NaN (no test)."""
    if math.isnan(c["p_ttest"]) and c["verdict"] in ("a > b", "a < b"):
        return 0.0
    return c["p_ttest"]


def paired_tests(records: list[dict]) -> list[dict]:
    """RKS vs its PRF twin and every kernel vs softmax, per density and metric (lower is better for both), with
    Holm's correction over each (density, metric) family of tests."""
    order = sorted({r["config"]["kernel"] for r in records}, key=lambda k: (k == "softmax", k))
    out = []
    for metric, label in METRICS.items():
        rows = reduce_runs(_finished(records), ["density", "kernel"], metric=metric, lr_key=None, mode="min")
        keep = [{k: r[k] for k in ("density", "kernel", "mean", "n", "values", "seeds")} for r in rows if r["n"]]
        pairs = [{**c, "metric": label} for c in comparisons(keep, "kernel", order) if _wanted(c["a"], c["b"])]
        for density in {c["density"] for c in pairs}:
            mine = [c for c in pairs if c["density"] == density]
            for c, p in zip(mine, holm([_p(c) for c in mine])):
                c["p_holm"] = p
                c["after Holm"] = c["verdict"] if c["verdict"] != "n.s." and p < 0.05 else "n.s."
        out += sorted(pairs, key=lambda c: (c["density"], c["b"] == "softmax", c["a"]))
    return out


def _rks_higher(c: dict) -> bool:
    """The RKS map of a family pair has the significantly higher value (after Holm)."""
    return c["after Holm"] == ("a > b" if c["a"] in RKS_OF else "a < b")


def rks_vs_prf(pairs: list[dict]) -> list[dict]:
    """Per density: how many families have RKS worse (higher error / noisier) than PRF after Holm, and better."""
    rows = []
    for label in METRICS.values():
        for density in sorted({c["density"] for c in pairs}):
            mine = [c for c in pairs if c["metric"] == label and c["density"] == density and c["b"] != "softmax"]
            worse = sum(_rks_higher(c) for c in mine)
            better = sum(c["after Holm"] != "n.s." for c in mine) - worse
            rows.append({"metric": label, "density": density, "families": len(mine), "RKS worse": worse,
                         "RKS better": better, "n.s.": len(mine) - worse - better})  # fmt: skip
    return rows


def draw_curves(path: Path, records: list[dict]) -> None:
    """One panel per density: mean error curve over seeds per kernel; RKS dashed, PRF and the rest solid."""
    import matplotlib.pyplot as plt

    done = _finished(records)
    densities = sorted({r["config"]["density"] for r in done})
    kernels = sorted({r["config"]["kernel"] for r in done})
    fig, axes = plt.subplots(1, len(densities), figsize=(5 * len(densities), 4.2), squeeze=False)
    colors = dict(zip(kernels, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3))
    for ax, density in zip(axes[0], densities):
        for kernel in kernels:
            curves = [r["summary"]["curve"] for r in done if r["config"]["density"] == density
                      and r["config"]["kernel"] == kernel]  # fmt: skip
            if not curves:
                continue
            steps = [s for s, _ in curves[0]]
            mean = [mean_of(c[i][1] for c in curves) for i in range(len(steps))]
            ls = "--" if kernel.endswith("rks") or kernel == "rff" else "-"
            ax.plot(steps, mean, ls=ls, color=colors[kernel], label=kernel)
        ax.set_ylim(0, 1.1)  # linear: the kernels sit between 0.25 and 1; softmax (the teacher's family) drops to 0
        ax.set_title(f"density {density}")
        ax.set_xlabel("step")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("MSE / Var(y) (eval set, mean over seeds)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(records: list[dict], out: Path, preset: str, command: str, ignored=()) -> str:
    """report.md and curves.png in ``out``; returns the markdown."""
    error = write_figure(draw_curves, out / "curves.png", records)
    if error:
        print(f"note: {error}", file=sys.stderr)
    pairs = paired_tests(records)
    cols = ["metric", "density", "a", "b", "n", "diff (95% bootstrap CI)", "p_ttest", "p_holm", "verdict",
            "after Holm"]  # fmt: skip
    text = "\n".join([
        f"# Sparse queries and keys (`{preset}`)", "", f"Generated by `{command}`.", "",
        status_section(records, ignored),
        "Task: `kernelized.data.sparse_attention` (ours). Final error = MSE / Var(y) of the teacher's outputs on a "
        "fixed evaluation set after training; noise ratio = E|g - mean g|^2 / |mean g|^2 of the attention "
        "parameters' gradient over minibatches. Lower is better for both.", "",
        f"({error})" if error else "![error curves](curves.png)", "",
        markdown_table(summary_rows(records), digits=3),
        "## RKS against PRF, per spectral family (after Holm)", "",
        markdown_table(rks_vs_prf(pairs), digits=3),
        "## Paired tests", "",
        "a minus b on the seeds both finished (same teacher, data and initial projections per seed); `a > b` means "
        "a's error (or noise) is higher.", "",
        markdown_table(pairs, cols, digits=3),
    ])  # fmt: skip
    write_text_atomic(text, out / "report.md")
    return text

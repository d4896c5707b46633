"""The KL code's Performer (frequencies stuck at zero) beside ours, paired by task and seed on the `cpu` tier.

    kernelized lra --preset cpu --task listops,text --kernel performer \
        --set per_kernel.performer.kernel_options.reference=kl --out runs/lra/cpu-kl-performer --workers 2
    .venv/bin/python docs/results/lra_kl_performer/compare.py   # -> docs/results/lra_kl_performer/compare.md

Reads ``runs/lra/cpu/results.csv`` (our runs, every kernel) and ``runs/lra/cpu-kl-performer/results.csv``.
"""

import csv
import sys
from pathlib import Path

from kernelized.eval.stats import mean_ci, paired_comparison
from kernelized.experiments.framework.tables import markdown_table

KERNELS = ("performer", "elu", "softmax")  # the KL Performer against our Performer, the Linear Transformer, softmax


def read(path: str) -> dict[tuple[str, str, int], float]:
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "finished"]
    return {(r["task"], r["kernel"], int(r["seed"])): float(r["test.accuracy"]) for r in rows}


def main(ours_csv="runs/lra/cpu/results.csv", kl_csv="runs/lra/cpu-kl-performer/results.csv") -> str:
    ours, kl = read(ours_csv), read(kl_csv)
    rows = []
    for task in dict.fromkeys(t for t, _, _ in kl):
        seeds = sorted(s for t, _, s in kl if t == task)
        a = [100 * kl[task, "performer", s] for s in seeds]
        for b_name in KERNELS:
            b = [100 * ours[task, b_name, s] for s in seeds]
            c = paired_comparison(a, b)
            rows.append({
                "task": task, "KL performer %": f"{mean_ci(a).mean:.1f} ± {mean_ci(a).half_width:.1f}",
                "vs (ours)": b_name, "ours %": f"{mean_ci(b).mean:.1f} ± {mean_ci(b).half_width:.1f}",
                "seeds": len(seeds), "KL - ours [95% CI], points": f"{c['mean_diff']:+.1f} [{c['ci_low']:+.1f}, "
                f"{c['ci_high']:+.1f}]", "p (paired t)": c["p_ttest"], "p (sign-flip)": c["p_permutation"],
            })  # fmt: skip
    text = markdown_table(rows, digits=3)
    Path(__file__).with_name("compare.md").write_text(text)
    return text


if __name__ == "__main__":
    print(main(*sys.argv[1:]))

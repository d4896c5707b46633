"""The report of `kernelized glue`: pretraining per kernel, fine-tuning per (task, kernel) with 95% CIs, paired
tests of every kernel against softmax (Holm per task and split), a non-inferiority test of "competitive with
softmax", the GLUE average, and a figure.

Selection: per (task, kernel) the learning rate with the best mean dev score over seeds (the papers' protocol);
the dev numbers at that lr are therefore optimistic, the test numbers (tasks with labelled test data) are not.
Competitive is tested as non-inferiority: the kernel is competitive when the lower end of the 95% Student-t
interval of its paired difference to softmax (kernel - softmax, over shared seeds) lies above ``-margin``; it is
not when the upper end lies below ``-margin``; otherwise the seeds cannot decide.
"""

from __future__ import annotations

import math
from pathlib import Path

from kernelized.data.glue import get_task
from kernelized.eval.stats import holm, mean_ci
from kernelized.experiments.framework.reduce import comparisons, reduce_runs
from kernelized.experiments.framework.sweep import write_results_csv
from kernelized.experiments.framework.tables import markdown_table, status_section, write_figure
from kernelized.train.checkpoint import write_text_atomic

LR_KEY = "finetune.train.lr"


def _finished(records: list[dict]) -> list[dict]:
    return [r for r in records if r["status"] == "finished"]


def pretrain_rows(records: list[dict]) -> list[dict]:
    rows = []
    for r in _finished(records):
        s, held = r["summary"], r["summary"]["held_out"]
        test = held.get("test") or {}
        steps = s.get("steps")
        rows.append(
            {
                "kernel": s["kernel"],
                "masked acc % (val)": 100 * held["val"]["accuracy"],
                "perplexity (val)": held["val"]["perplexity"],
                "masked acc % (test)": 100 * test.get("accuracy", math.nan),
                "perplexity (test)": test.get("perplexity", math.nan),
                "steps": steps,
                "steps/s": s.get("steps_per_s") or math.nan,
                "minutes": s.get("wall_time_s", math.nan) / 60,
                "parameters": s.get("num_params"),
                "peak RSS MB": s.get("peak_rss_mb"),
            }
        )
    return sorted(rows, key=lambda row: (row["kernel"] != "softmax", row["kernel"]))


def finetune_cells(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """``(dev rows, test rows)`` of :func:`reduce_runs`: dev at each cell's best lr; test at that same lr."""
    dev = reduce_runs(records, ["task", "kernel"], metric="score", lr_key=LR_KEY)
    best = {(row["task"], row["kernel"]): row["lr"] for row in dev}
    at_best = [
        r
        for r in records
        if best.get((r["config"]["task"], r["config"]["kernel"])) == r["config"]["finetune"]["train"]["lr"]
    ]
    test = [row for row in reduce_runs(at_best, ["task", "kernel"], metric="test_score", lr_key=None) if row["n"]]
    for row in test:
        row["lr"] = best[(row["task"], row["kernel"])]
    return dev, test


def noninferiority(c: dict, margin: float) -> str:
    low, high = c["t_ci_low"], c["t_ci_high"]
    if math.isnan(low):
        return "undecided (no spread)" if c["mean_diff"] + margin <= 0 else "yes (same on every seed)"
    return "yes" if low > -margin else "no" if high < -margin else "undecided"


def versus_softmax(rows: list[dict], margin: float) -> list[dict]:
    """Every kernel against softmax per task (kernel - softmax), Holm-adjusted over the task's kernels."""
    out = []
    for task in sorted({r["task"] for r in rows}):
        cell = [r for r in rows if r["task"] == task and r["n"]]
        kernels = [r["kernel"] for r in cell]
        if "softmax" not in kernels:
            continue
        order = [k for k in kernels if k != "softmax"] + ["softmax"]
        cs = [c for c in comparisons(cell, "kernel", order) if c["b"] == "softmax"]
        for c, p in zip(cs, holm([c["p_ttest"] for c in cs])):
            c.update(task=task, kernel=c["a"], p_holm=p, competitive=noninferiority(c, margin))
            out.append(c)
    return out


def glue_average_rows(dev: list[dict]) -> list[dict]:
    """Per kernel, the mean of its GLUE tasks' dev scores (WNLI left out, as BERT's table), when >= 2 tasks."""
    by_kernel: dict[str, dict[str, float]] = {}
    for row in dev:
        if row["n"] and get_task(row["task"]).in_glue and row["task"] != "wnli":
            by_kernel.setdefault(row["kernel"], {})[row["task"]] = row["mean"]
    if max((len(v) for v in by_kernel.values()), default=0) < 2:
        return []
    return [
        {"kernel": k, "tasks": len(v), "GLUE average (dev)": 100 * sum(v.values()) / len(v)}
        for k, v in sorted(by_kernel.items())
    ]


def _score_table(rows: list[dict], split: str) -> list[dict]:
    out = []
    for r in rows:
        ci = mean_ci(r["values"]) if r["n"] else None
        cell = f"{100 * ci.mean:.2f} ± {100 * ci.half_width:.2f}" if ci and r["n"] > 1 else "–"
        out.append(
            {
                "task": r["task"],
                "kernel": r["kernel"],
                f"{split} score % (95% CI)": cell,
                "n": r["n"],
                "lr": r["lr"],
                "seeds": ", ".join(f"{100 * v:.1f}" for v in r["values"]),
            }
        )
    return sorted(out, key=lambda row: (row["task"], row["kernel"] != "softmax", row["kernel"]))


def _test_table(tests: list[dict], split: str, margin: float) -> list[dict]:
    return [
        {
            "task": c["task"],
            "split": split,
            "kernel": c["kernel"],
            "n": c["n"],
            "kernel - softmax (points)": 100 * c["mean_diff"],
            "95% t CI": f"[{100 * c['t_ci_low']:+.2f}, {100 * c['t_ci_high']:+.2f}]",
            "p (t)": c["p_ttest"],
            "p (Holm)": c["p_holm"],
            "verdict (p < 0.05, uncorrected)": {
                "a > b": f"{c['kernel']} > softmax",
                "a < b": f"{c['kernel']} < softmax",
            }.get(c["verdict"], c["verdict"]),
            f"competitive (margin {100 * margin:g} pts)": c["competitive"],
        }
        for c in tests
    ]


def draw(path: Path, pre: list[dict], dev: list[dict], test: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in dev})
    fig, axes = plt.subplots(1, 1 + len(tasks), figsize=(4.5 * (1 + len(tasks)), 3.8), squeeze=False)
    ax = axes[0][0]
    ax.barh([r["kernel"] for r in pre], [r["masked acc % (val)"] for r in pre], color="tab:gray")
    ax.set_xlabel("masked-token accuracy % (held-out)")
    ax.set_title("pretraining")
    for ax, task in zip(axes[0][1:], tasks):
        for offset, rows, label in ((-0.18, dev, "dev (best lr)"), (0.18, test, "test (at that lr)")):
            rs = sorted((r for r in rows if r["task"] == task and r["n"]), key=lambda r: r["kernel"])
            if not rs:
                continue
            ys = [i + offset for i in range(len(rs))]
            err = [100 * (r["half_width"] if r["n"] > 1 else 0) for r in rs]
            ax.errorbar([100 * r["mean"] for r in rs], ys, xerr=err, fmt="o", capsize=3, label=label)
            ax.set_yticks(range(len(rs)), [r["kernel"] for r in rs])
        ax.set_xlabel("score % (mean, 95% CI over seeds)")
        ax.set_title(f"fine-tuning: {task}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(pretrain: list[dict], finetune: list[dict], out_dir: Path, name: str, margin: float) -> str:
    """Write ``report.md``, ``pretrain.csv``, ``finetune.csv``, ``table.csv``-like markdown and ``figure.png``;
    return the main tables as markdown."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_results_csv(pretrain, out_dir / "pretrain.csv")
    write_results_csv(finetune, out_dir / "finetune.csv")
    pre = pretrain_rows(pretrain)
    dev, test = finetune_cells(_finished(finetune))
    tests = [
        *_test_table(versus_softmax(dev, margin), "dev", margin),
        *_test_table(versus_softmax(test, margin), "test", margin),
    ]
    average = glue_average_rows(dev)
    error = write_figure(draw, out_dir / "figure.png", pre, dev, test) if pre or dev else None
    parts = [
        "## Pretraining (masked LM, held-out windows)",
        markdown_table(pre, list(pre[0]) if pre else ["kernel"], digits=2),
        "## Fine-tuning: dev score (best lr per kernel by mean dev score)",
        markdown_table(_score_table(dev, "dev"), ["task", "kernel", "dev score % (95% CI)", "n", "lr", "seeds"]),
        "## Fine-tuning: test score at the dev-selected lr",
        markdown_table(_score_table(test, "test"), ["task", "kernel", "test score % (95% CI)", "n", "lr", "seeds"]),
        f"## Each kernel against softmax (paired over seeds; competitive = non-inferior by {100 * margin:g} points)",
        markdown_table(tests, list(tests[0]) if tests else ["task"], digits=3),
    ]
    if average:
        parts += ["## GLUE average (dev, WNLI left out)", markdown_table(average, list(average[0]), digits=2)]
    majority = sorted({(r["config"]["task"], r["summary"].get("dev_majority")) for r in _finished(finetune)
                       if r["summary"].get("dev_majority") is not None})  # fmt: skip
    if majority:
        parts.insert(2, "Majority class of the dev split: " + ", ".join(f"{t} {100 * m:.1f} %" for t, m in majority))
    tables = "\n\n".join(parts)
    status = status_section(pretrain + finetune, [])
    figure = "![figure](figure.png)" if error is None else f"(figure not drawn: {error})"
    text = f"# GLUE ({name})\n\n{__doc__.split(chr(10) + chr(10))[1]}\n\n{tables}\n\n{figure}\n\n{status}\n"
    write_text_atomic(text, out_dir / "report.md")
    return tables

"""The report of an LRA sweep: ``report.md``, ``figure.png`` (test accuracy), ``curves.png`` (training curves),
``table.json`` and ``comparisons.csv`` in the sweep folder.

Everything here reads the sweep's records (:func:`kernelized.experiments.framework.sweep.collect`) and the runs'
``train/metrics.jsonl``; nothing trains. The paired tests compare kernels on the seeds they share (the data and
its split are the same for every seed, so seed ``s`` of two kernels saw the same examples in the same order).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from kernelized.data import lra
from kernelized.eval.stats import holm
from kernelized.experiments.framework.presets import get_key
from kernelized.experiments.framework.reduce import comparisons, mean_of, reduce_runs
from kernelized.experiments.framework.tables import markdown_table, status_section, with_ci_column, write_figure
from kernelized.kernels.registry import SPECTRAL_FAMILIES
from kernelized.train.checkpoint import write_text_atomic

TASK_ORDER = ["listops", "text", "retrieval", "image", "pathfinder"]
FAMILIES = SPECTRAL_FAMILIES  # (PRF, RKS) of each spectral family
SPECTRAL = [k for pair in FAMILIES.values() for k in pair]

# LRA-paper Table 1 (Tay et al. 2021), test accuracy %; Tay et al., "Long Range Arena", ICLR 2021.
PUBLISHED = {
    "Transformer (softmax)": {"listops": 36.37, "text": 64.27, "retrieval": 57.46, "image": 42.44, "pathfinder": 71.40},
    "Performer": {"listops": 18.01, "text": 65.40, "retrieval": 53.82, "image": 42.77, "pathfinder": 77.05},
    "Linear Trans. (elu+1)": {"listops": 16.13, "text": 65.90, "retrieval": 53.09, "image": 42.34, "pathfinder": 75.30},
}
COLUMNS = [
    "task",
    "kernel",
    "test acc % (95% CI)",
    "n",
    "majority %",
    "chance %",
    "val acc %",
    "steps/s",
    "peak MB",
    "seconds",
]
PAIR_COLUMNS = [
    "task",
    "a",
    "b",
    "n",
    "diff (95% bootstrap CI)",
    "p_ttest",
    "p_permutation",
    "verdict",
    "p_holm",
    "holm",
]
PAIR_HEADERS = [
    "task",
    "a",
    "b",
    "seeds",
    "mean(a - b) [95% CI]",
    "p (paired t)",
    "p (sign-flip)",
    "verdict",
    "p (t, Holm per task)",
    "verdict after Holm",
]


def summarize(records: list[dict]) -> list[dict]:
    """Rows per (task, kernel): test accuracy mean ± 95% CI over seeds, the test split's majority-class rate and
    chance, mean val accuracy, steps/s, memory, seconds; a cell without a finished run has n = 0 and dashes."""
    rows = reduce_runs(records, cell_keys=["task", "kernel"], metric="test.accuracy", lr_key=None)
    rows = with_ci_column(rows, "test acc % (95% CI)", digits=1, scale=100.0)
    by_cell: dict[tuple, list[dict]] = {}
    sources = {}
    for rec in records:
        sources[rec["config"]["task"]] = rec["config"]["data"].get("source")
        if rec["status"] == "finished":
            by_cell.setdefault((rec["config"]["task"], rec["config"]["kernel"]), []).append(rec["summary"])
    for row in rows:
        sums = by_cell.get((row["task"], row["kernel"]), [])
        row["majority %"] = 100 * mean_of(s.get("majority") for s in sums)
        row["chance %"] = 100 / lra.task_info(row["task"], sources.get(row["task"])).num_classes
        row["val acc %"] = 100 * mean_of(s.get("val_best_accuracy") for s in sums)
        for col, key in (("steps/s", "steps_per_s"), ("peak MB", "peak_memory_mb"), ("seconds", "wall_time_s")):
            row[col] = mean_of(get_key(s, key) for s in sums)
    order = {t: i for i, t in enumerate(TASK_ORDER)}
    return sorted(rows, key=lambda r: (order.get(r["task"], 99), -r["mean"] if not math.isnan(r["mean"]) else 0))


def wide_table(rows: list[dict]) -> str:
    """Kernels x tasks: test accuracy % (mean ± 95% CI), with the majority class and the mean over tasks."""
    tasks = [t for t in TASK_ORDER if any(r["task"] == t and r["n"] > 0 for r in rows)]
    cells = {(r["task"], r["kernel"]): r for r in rows if r["n"] > 0}
    kernels = list(dict.fromkeys(r["kernel"] for r in sorted(rows, key=lambda r: r["kernel"] != "softmax")))
    out = [{"kernel": "majority class", **{t: _majority(rows, t) for t in tasks}, "mean": ""}]
    for kernel in kernels:
        mine = [cells.get((t, kernel)) for t in tasks]
        line = {"kernel": kernel}
        for task, r in zip(tasks, mine):
            line[task] = "–" if r is None else r["test acc % (95% CI)"].split(" (")[0]
        means = [100 * r["mean"] for r in mine if r is not None]
        line["mean"] = f"{sum(means) / len(means):.1f}" if len(means) == len(tasks) else "–"
        out.append(line)
    return markdown_table(out, ["kernel", *tasks, "mean"], ["test acc % (95% CI)", *tasks, "mean over tasks"])


def _majority(rows: list[dict], task: str) -> str:
    value = next((r["majority %"] for r in rows if r["task"] == task and r["n"] > 0), math.nan)
    return f"{value:.1f}"


def kernel_order(kernels) -> list[str]:
    """The orientation of the paired tests: PRF before RKS, spectral kernels before elu, every kernel before
    performer, softmax last."""
    last = ("elu", "performer", "softmax")
    first = [k for k in kernels if k not in last and not k.endswith("-rks")]
    return first + [k for k in kernels if k.endswith("-rks")] + [k for k in last if k in kernels]


def wanted(a: str, b: str) -> bool:
    """The comparisons the report shows: every kernel vs softmax and vs performer, PRF vs RKS of each family,
    spectral kernels vs elu+1 (the Linear Transformer)."""
    return b in ("softmax", "performer") or (a, b) in FAMILIES.values() or (a in SPECTRAL and b == "elu")


def _cells(rows: list[dict]) -> list[dict]:
    """The rows as cells (task, kernel) with their per-seed values, for the paired comparisons (which group rows
    by every key that is not a statistic)."""
    keep = ("task", "kernel", "mean", "n", "values", "seeds")
    return [{k: r[k] for k in keep} for r in rows if r["n"] > 0]


def paired_tests(rows: list[dict]) -> list[dict]:
    """Every wanted pair per task on test accuracy across shared seeds, oriented by :func:`kernel_order`."""
    order = kernel_order(sorted({r["kernel"] for r in rows}))
    pairs = [c for c in comparisons(_cells(rows), "kernel", order) if wanted(c["a"], c["b"])]
    for task in {c["task"] for c in pairs}:  # the family: every shown test of one task
        mine = [c for c in pairs if c["task"] == task]
        for c, adjusted in zip(mine, holm([c["p_ttest"] for c in mine])):
            c["p_holm"] = adjusted
            c["holm"] = c["verdict"] if c["verdict"] in ("a > b", "a < b") and adjusted < 0.05 else "n.s."
    tasks = {t: i for i, t in enumerate(TASK_ORDER)}
    return sorted(
        pairs,
        key=lambda c: (
            tasks.get(c["task"], 99),
            ("softmax", "performer").index(c["b"]) if c["b"] in ("softmax", "performer") else 2,
            order.index(c["a"]),
        ),
    )


CLAIMS = [
    ("learned spectral kernels beat Performer", lambda a, b: a in SPECTRAL and b == "performer"),
    ("learned spectral kernels beat the Linear Transformer (elu+1)", lambda a, b: a in SPECTRAL and b == "elu"),
    ("PRF beats RKS (each spectral family)", lambda a, b: (a, b) in FAMILIES.values()),
]
TEXT_EXCEPTION = "PRF beats RKS except on Text: on Text, PRF is not better than RKS"


def _label(up: int, down: int, total: int) -> str:
    """supports: every pair a > b; partly: some a > b, none a < b; contradicts: some a < b, none a > b; mixed:
    both; cannot decide: none significant."""
    if up == total:
        return "supports"
    if up and down:
        return "mixed"
    return "partly supports" if up else "contradicts" if down else "cannot decide"


def claim_rows(rows: list[dict], pairs: list[dict] | None = None) -> list[dict]:
    """Per task and claim of the KL-Transformer paper: how many of its paired tests say a > b, a < b or n.s.
    (uncorrected paired t, and after Holm over the task's shown tests) and what that makes of the claim (see
    :func:`_label`). On Text the paper's PRF/RKS claim is its exception: there a significant PRF > RKS
    contradicts it, and no significant difference is what it predicts."""
    pairs = paired_tests(rows) if pairs is None else pairs  # the report passes its own: no second bootstrap
    out = []
    for task in [t for t in TASK_ORDER if any(c["task"] == t for c in pairs)]:
        for claim, match in CLAIMS:
            mine = [c for c in pairs if c["task"] == task and match(c["a"], c["b"])]
            if not mine:
                continue
            counts = {}
            for key in ("verdict", "holm"):
                up, down = sum(c[key] == "a > b" for c in mine), sum(c[key] == "a < b" for c in mine)
                if task == "text" and claim.startswith("PRF"):
                    label = "contradicts" if up else "consistent (no family differs)" if not down else "supports"
                else:
                    label = _label(up, down, len(mine))
                counts[key] = (up, down, label)
            (up, down, label), (h_up, h_down, h_label) = counts["verdict"], counts["holm"]
            out.append({
                "task": task, "claim": TEXT_EXCEPTION if task == "text" and claim.startswith("PRF") else claim,
                "pairs": len(mine), "a > b": up, "a < b": down, "n.s.": len(mine) - up - down, "our runs": label,
                "after Holm": f"{h_label} ({h_up} >, {h_down} <)",
            })  # fmt: skip
    return out


def draw_figure(path: Path, rows: list[dict], title: str) -> None:
    """Test accuracy per kernel, one panel per task, with 95% CI bars, the seeds, and the majority class."""
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["n"] > 0]
    if not rows:
        raise ValueError("no finished run to draw")
    tasks = [t for t in TASK_ORDER if any(r["task"] == t for r in rows)]
    per_task = max(sum(r["task"] == t for r in rows) for t in tasks)
    fig, axes = plt.subplots(1, len(tasks), figsize=(1.5 + len(tasks) * (1.0 + 0.3 * per_task), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        sub = [r for r in rows if r["task"] == task]
        names = [r["kernel"] for r in sub]
        errs = [0.0 if math.isnan(r["half_width"]) else 100 * r["half_width"] for r in sub]
        colors = ["tab:gray" if n == "softmax" else "tab:orange" if n in SPECTRAL else "tab:blue" for n in names]
        ax.bar(range(len(sub)), [100 * r["mean"] for r in sub], yerr=errs, capsize=3, color=colors)
        for i, r in enumerate(sub):
            ax.scatter([i] * len(r["values"]), [100 * v for v in r["values"]], s=6, color="k", zorder=3)
        ax.axhline(sub[0]["majority %"], color="k", ls="--", lw=0.8, label="majority class")
        ax.set_xticks(range(len(sub)), names, rotation=60, ha="right", fontsize=8)
        ax.set_title(task)
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_curve(run_dir: str | Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """``(train [(step, loss)], eval [(step, accuracy)])`` from a run's ``train/metrics.jsonl``."""
    train, evals = [], []
    file = Path(run_dir) / "train" / "metrics.jsonl"
    for line in file.read_text().splitlines() if file.exists() else []:
        event = json.loads(line)
        if event.get("event") == "train" and "loss" in event:
            train.append((event["step"], event["loss"]))
        elif event.get("event") == "eval" and "accuracy" in event:
            evals.append((event["step"], event["accuracy"]))
    return train, evals


def draw_curves(path: Path, records: list[dict], title: str) -> None:
    """Training loss (top) and validation accuracy (bottom) against steps, one column per task, one line per
    kernel (its lowest finished seed)."""
    import matplotlib.pyplot as plt

    done = sorted((r for r in records if r["status"] == "finished"), key=lambda r: r["config"]["seed"])
    tasks = [t for t in TASK_ORDER if any(r["config"]["task"] == t for r in done)]
    if not tasks:
        raise ValueError("no finished run to draw")
    fig, axes = plt.subplots(2, len(tasks), figsize=(3.6 * len(tasks) + 1.6, 6.0), squeeze=False)
    for col, task in enumerate(tasks):
        seen = {}
        for rec in done:
            if rec["config"]["task"] == task and rec["config"]["kernel"] not in seen:
                seen[rec["config"]["kernel"]] = rec
        for i, (kernel, rec) in enumerate(seen.items()):
            train, evals = read_curve(rec["run_dir"])
            style = {"color": f"C{i % 10}", "ls": "-" if i < 10 else "--", "lw": 1.0, "label": kernel}
            if train:
                axes[0][col].plot(*zip(*train), **style)
            if evals:
                axes[1][col].plot(*zip(*[(s, 100 * a) for s, a in evals]), marker="o", ms=2, **style)
        majority = mean_of(rec["summary"].get("majority") for rec in seen.values())
        axes[1][col].axhline(100 * majority, color="k", ls=":", lw=0.8)
        axes[0][col].set_title(f"{task} (seed {min(r['config']['seed'] for r in seen.values())})", fontsize=9)
        axes[0][col].set_ylabel("training loss")
        axes[1][col].set_ylabel("val accuracy (%)  (dotted: majority class)")
        axes[1][col].set_xlabel("step")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.0))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def setup_rows(records: list[dict]) -> list[dict]:
    """One line per task: its data, length, sizes, model and budget, and the runs' summed time."""
    out = []
    for task in TASK_ORDER:
        mine = [r for r in records if r["config"]["task"] == task]
        if not mine:
            continue
        c, done = mine[0]["config"], [r["summary"] for r in mine if r["status"] == "finished"]
        m, t = c["model"], c["train"]
        secs = sum(s.get("wall_time_s") or 0.0 for s in done)
        out.append(
            {
                "task": task,
                "data": c["data"].get("source") or ("generated" if task in ("listops", "pathfinder") else "LRA's"),
                "tokens": done[0]["max_len"] if done else "–",
                "train / test": f"{done[0]['num_train']} / {done[0]['num_test']}" if done else "–",
                "model": f"{m['num_layers']}L d{m['d_model']} {m['num_heads']}h {m['pooling']}",
                "steps x batch": f"{t.get('max_steps') or str(t.get('epochs')) + ' ep'} x {t['batch_size']}",
                "lr": t["lr"],
                "runs": f"{len(done)}/{len(mine)}",
                "run time (s, summed)": round(secs),
                "per worker at 2 (min)": round(secs / 120, 1),
            }
        )
    return out


def published_table() -> str:
    rows = [{"model": name, **{t: f"{v:.2f}" for t, v in accs.items()}} for name, accs in PUBLISHED.items()]
    return markdown_table(rows, ["model", *TASK_ORDER], ["published (LRA paper, Table 1)", *TASK_ORDER])


def _csv(pairs: list[dict]) -> str:
    buf = io.StringIO()
    keys = [
        "task",
        "a",
        "b",
        "n",
        "mean_a",
        "mean_b",
        "mean_diff",
        "ci_low",
        "ci_high",
        "p_ttest",
        "p_permutation",
        "verdict",
        "p_holm",
        "holm",
    ]
    writer = csv.DictWriter(buf, keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(pairs)
    return buf.getvalue()


def write_report(records: list[dict], out_dir: Path, preset_name: str, ignored=()) -> list[dict]:
    """report.md, figure.png, curves.png, table.json and comparisons.csv from the current config's runs."""
    rows = summarize(records)
    title = f"LRA, preset {preset_name}: test accuracy, 95% CI over seeds"
    figure_error = write_figure(draw_figure, out_dir / "figure.png", rows, title)
    curves_error = write_figure(draw_curves, out_dir / "curves.png", records, f"LRA {preset_name}: training curves")
    pairs = paired_tests(rows)
    text = "\n".join(
        [
            f"# LRA ({preset_name})",
            "",
            status_section(records, ignored),
            markdown_table(setup_rows(records), digits=4),
            "",
            f"Preset `{preset_name}`; test accuracy of the final model, mean and 95% Student-t interval over seeds "
            "(n = seeds; `–` = no finished run); majority = the test split's most frequent class, chance = one over "
            "the number of classes. Peak MB is the CUDA allocator peak on GPU; on CPU the run's peak RSS (Linux VmHWM "
            "reset before training; where that was not possible, the worker process's lifetime peak).",
            "",
            markdown_table(rows, COLUMNS, digits=2),
            "At a glance (the same numbers, kernels x tasks):",
            "",
            wide_table(rows),
            "",
            f"({figure_error})" if figure_error else "![test accuracy](figure.png)",
            "",
            f"({curves_error})" if curves_error else "![training curves](curves.png)",
            "",
            "## Paired tests",
            "",
            "Test accuracy (fraction) of kernel a minus kernel b on the seeds both finished; 95% bootstrap interval "
            "of the mean difference, paired t-test and sign-flip permutation p; verdict `a > b` / `a < b` when the "
            "interval excludes 0 and p (t) < 0.05. Every kernel against softmax and performer, PRF against RKS, "
            "spectral kernels against elu+1. With 3 seeds the sign-flip test cannot go below p = 0.25, and a task "
            "has about 30 tests: the last column keeps only verdicts whose p survives Holm's correction over the "
            "task's tests.",
            "",
            markdown_table(pairs, PAIR_COLUMNS, PAIR_HEADERS, digits=3) if pairs else "(fewer than 2 shared seeds)",
            "",
            "## The KL-Transformer paper's claims, per task",
            "",
            markdown_table(claim_rows(rows, pairs)) if pairs else "(no paired tests yet)",
            "",
            "For orientation only, the published LRA numbers (full-size tasks, not comparable to a CPU preset):",
            "",
            published_table(),
        ]
    )
    write_text_atomic(text, out_dir / "report.md")
    write_text_atomic(json.dumps(rows, indent=1, default=str), out_dir / "table.json")
    write_text_atomic(_csv(pairs), out_dir / "comparisons.csv")
    return rows

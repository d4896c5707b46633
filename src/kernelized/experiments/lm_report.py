"""The report of `kernelized lm`: per kernel mean ± 95% CI over seeds of every perplexity (validation, and test
where the corpus has a test split: PTB), paired tests of every two kernels, every run, AR hits by the bigram's
training count and by how far back it occurred, and figures (AR hits vs other tokens; validation perplexity
against steps; AR-hit perplexity against the distance back)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from kernelized.eval.perplexity import DISTANCE_BUCKETS, FREQUENCY_BUCKETS, bucket_name
from kernelized.experiments.framework.reduce import comparisons, reduce_runs
from kernelized.experiments.framework.sweep import finished
from kernelized.experiments.framework.tables import markdown_table, status_section, with_ci_column, write_figure
from kernelized.train.checkpoint import write_text_atomic

METRICS = ["ppl", "ar_hit_ppl", "other_ppl"]
TEST_METRICS = ["test_ppl", "test_ar_hit_ppl", "test_other_ppl"]  # corpora with a test split (PTB)
BUCKETS = [bucket_name(lo, hi) for lo, hi in FREQUENCY_BUCKETS]
DISTANCES = [bucket_name(lo, hi, "dist") for lo, hi in DISTANCE_BUCKETS]
RUN_COLUMNS = ["kernel", "seed", "params", "ppl", "ar_hit_ppl", "other_ppl", "ar_hit_fraction", "accuracy", "steps"]
RUN_COLUMNS += ["train_time_s", "decode_state_growth_per_token", "decode_max_abs_diff"]


def metrics_of(records: list[dict]) -> list[str]:
    """The perplexities the runs have: validation, and test where any run has one."""
    has_test = any("test_ppl" in (r.get("summary") or {}) for r in records)
    return METRICS + (TEST_METRICS if has_test else [])


def per_kernel(records: list[dict], order: list[str]) -> tuple[list[dict], list[dict]]:
    """Mean ± 95% CI over seeds per kernel for each perplexity, and paired comparisons of every two kernels on
    the seeds they share (lower is better)."""
    table = {k: {"kernel": k} for k in order}
    pairs = []
    for metric in metrics_of(records):
        rows = reduce_runs(records, ["kernel"], metric=metric, lr_key=None, mode="min")
        for row in with_ci_column(rows, metric):
            table[row["kernel"]][metric] = row[metric]
            table[row["kernel"]].setdefault("seeds", row["n"])  # of the first metric, perplexity
        pairs += [{**c, "metric": metric} for c in comparisons(rows, "kernel", order)]
    return [table[k] for k in order], pairs


def _bucket_table(rows: list[dict]) -> list[str]:
    if not any(f"ar_hit_ppl_{BUCKETS[0]}" in r for r in rows):
        return []
    cells = []
    for r in rows:
        cell = {"kernel": r["kernel"], "seed": r["seed"]}
        for b in BUCKETS:
            cell[b] = f"{r.get(f'ar_hit_ppl_{b}', math.nan):.3f} ({r.get(f'ar_hit_share_{b}', 0):.3f})"
        cells.append(cell)
    headers = ["kernel", "seed"] + [f"seen {b.removeprefix('train')}x" for b in BUCKETS]
    return [
        "## AR hits by the bigram's count in the training tokens",
        "",
        "Perplexity (share of all validation targets) of AR hits whose bigram occurs that many times in the "
        "training tokens; Zoology: rare bigrams separate the architectures.",
        "",
        markdown_table(cells, ["kernel", "seed", *BUCKETS], headers),
    ]


def write_report(config: dict, name: str, records: list[dict], out: Path, ignored=()) -> str:
    """report.md (per-kernel means with 95% CIs, paired comparisons, every run, AR hits by bigram count) and
    ar_hit.png in ``out``; returns the per-kernel table."""
    rows = [r["summary"] for r in finished(records)]
    order = list(dict.fromkeys(r["config"]["kernel"] for r in records))
    groups, pairs = per_kernel(records, order)
    table = markdown_table(groups, ["kernel", "seeds", *metrics_of(records)], digits=3)
    sig = markdown_table(
        pairs,
        ["metric", "a", "b", "n", "diff (95% bootstrap CI)", "p_ttest", "p_permutation", "verdict"],
        ["metric", "a", "b", "seeds", "mean(a - b) [95% CI]", "p (paired t)", "p (sign-flip)", "verdict"],
        digits=3,
    )
    figure_error = write_figure(draw_figure, out / "ar_hit.png", records, order, name)
    curves_error = write_figure(draw_curves, out / "curves.png", records, order, name)
    distance_error = write_figure(draw_distance, out / "ar_hit_distance.png", records, order, name)
    lines = [
        f"# LM preset `{name}`",
        "",
        status_section(records, ignored),
        f"Corpus `{config['corpus']['source']}`, tokenizer `{config['tokenizer']}`, seq_len {config['seq_len']}. "
        "Perplexity on the validation windows; AR hits are targets completing a bigram seen earlier in the same "
        "window (Zoology), other = the rest. decode_max_abs_diff: max |logits| difference between "
        "prefill+recurrent decoding and the full forward.",
        "",
        "## Per kernel: mean ± 95% CI over seeds",
        "",
        table,
        f"({figure_error})" if figure_error else "![AR hits vs other tokens](ar_hit.png)",
        "",
        "## Paired differences (same seeds; lower perplexity is better, so `a < b` means a is better)",
        "",
        sig if pairs else "(fewer than two seeds shared by two kernels: no paired test)\n",
        f"({curves_error})" if curves_error else "![validation perplexity against steps](curves.png)",
        "",
        f"({distance_error})" if distance_error else "![AR-hit perplexity against distance](ar_hit_distance.png)",
        "",
        "## Every run",
        "",
        markdown_table(rows, RUN_COLUMNS + [c for c in TEST_METRICS if any(c in r for r in rows)])
        if rows
        else "(no finished run)\n",
        *_bucket_table(rows),
        *_distance_table(records, order),
    ]
    write_text_atomic("\n".join(lines) + "\n", out / "report.md")
    return table


def draw_figure(path: Path, records: list[dict], order: list[str], name: str) -> None:
    """Bars: AR-hit and other-token perplexity per kernel, mean and 95% CI over seeds."""
    import matplotlib.pyplot as plt

    stats = {}
    for key in ("ar_hit_ppl", "other_ppl"):
        stats[key] = {r["kernel"]: r for r in reduce_runs(records, ["kernel"], key, lr_key=None, mode="min")}
    kernels_ = [k for k in order if stats["ar_hit_ppl"].get(k, {}).get("n")]
    if not kernels_:
        raise ValueError("no finished run to draw")
    fig, ax = plt.subplots(figsize=(2.4 + 1.2 * len(kernels_), 3.4))
    for shift, key, label in ((-0.2, "ar_hit_ppl", "AR hits"), (0.2, "other_ppl", "other tokens")):
        rows = [stats[key][k] for k in kernels_]
        errs = [0.0 if math.isnan(r["half_width"]) else r["half_width"] for r in rows]
        bars = ax.bar([x + shift for x in range(len(rows))], [r["mean"] for r in rows], 0.4, yerr=errs, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
    ax.set_xticks(range(len(kernels_)), kernels_)
    ax.set_ylabel("validation perplexity")
    ax.legend(loc="upper center", ncols=2, fontsize=8)
    n = max(stats["ar_hit_ppl"][k]["n"] for k in kernels_)
    ax.set_title(f"lm/{name}: AR hits vs other tokens" + (f" (mean, 95% CI, {n} seeds)" if n > 1 else ""))
    ax.margins(y=0.25)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _eval_curve(run_dir: Path) -> tuple[list[int], list[float]]:
    """(steps, validation perplexity) of a run's evaluations (metrics.jsonl)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return [], []
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    evals = [e for e in events if e.get("event") == "eval" and "loss" in e]
    return [e["step"] for e in evals], [math.exp(min(e["loss"], 50.0)) for e in evals]


def draw_curves(path: Path, records: list[dict], order: list[str], name: str) -> None:
    """Validation perplexity against training steps, one line per kernel (mean over seeds, seeds faint)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    drawn = 0
    for i, kernel in enumerate(order):
        curves = [_eval_curve(r["run_dir"]) for r in finished(records) if r["config"]["kernel"] == kernel]
        curves = [c for c in curves if c[0]]
        if not curves:
            continue
        color = f"C{i % 10}"
        for steps, ppl in curves:
            ax.plot(steps, ppl, color=color, alpha=0.25, lw=0.8)
        n = min(len(c[0]) for c in curves)
        mean = [sum(c[1][j] for c in curves) / len(curves) for j in range(n)]
        ax.plot(curves[0][0][:n], mean, color=color, lw=1.8, label=f"{kernel} ({len(curves)} seeds)")
        drawn += 1
    if not drawn:
        raise ValueError("no finished run with evaluations to draw")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation perplexity")
    ax.set_title(f"lm/{name}: validation perplexity during training")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _distance_rows(records: list[dict], order: list[str]) -> dict[str, list[dict]]:
    out = {}
    for kernel in order:
        cells = [r for r in records if r["config"]["kernel"] == kernel]
        rows = [reduce_runs(cells, ["kernel"], f"ar_hit_ppl_{d}", lr_key=None, mode="min")[0] for d in DISTANCES]
        if cells and any(row["n"] for row in rows):
            out[kernel] = rows
    return out


def draw_distance(path: Path, records: list[dict], order: list[str], name: str) -> None:
    """AR-hit perplexity against how far back the bigram last occurred (mean and 95% CI over seeds)."""
    import matplotlib.pyplot as plt

    stats = _distance_rows(records, order)
    if not stats:
        raise ValueError("no run with AR-hit distances to draw")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for shift, (kernel, rows) in enumerate(stats.items()):
        xs = [i + 0.08 * (shift - len(stats) / 2) for i, r in enumerate(rows) if r["n"]]
        ys = [r["mean"] for r in rows if r["n"]]
        err = [0.0 if math.isnan(r["half_width"]) else r["half_width"] for r in rows if r["n"]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=2, label=kernel)
    ax.set_xticks(range(len(DISTANCES)), [d.removeprefix("dist") for d in DISTANCES])
    ax.set_xlabel("tokens back to the bigram's previous occurrence")
    ax.set_ylabel("AR-hit perplexity (validation)")
    ax.set_yscale("log")
    ax.set_title(f"lm/{name}: recall against distance")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _distance_table(records: list[dict], order: list[str]) -> list[str]:
    stats = _distance_rows(records, order)
    if not stats:
        return []
    cells = [{"kernel": k, **{d.removeprefix("dist"): (f"{r['mean']:.2f}" if r["n"] else "–")
                              for d, r in zip(DISTANCES, rows)}} for k, rows in stats.items()]  # fmt: skip
    return ["## AR hits by distance back (validation perplexity, mean over seeds)", "",
            "Columns: tokens between the hit and the previous occurrence of its bigram in the window.", "",
            markdown_table(cells, ["kernel", *[d.removeprefix("dist") for d in DISTANCES]])]  # fmt: skip

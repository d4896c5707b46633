"""`kernelized lra --preset text --scaling`: the KL paper's linear-memory claim, measured on this machine.

For each kernel of the preset's grid (or ``--kernels``) and each length T (``--scaling-lengths``, default 1k, 2k,
4k), one AdamW training step of the preset's model on random bytes ``[batch, T]`` is timed (median of
``--scaling-steps`` after a warm-up) and its peak memory measured (CPU: VmHWM - VmRSS around one step of a fresh
model in a process of its own, after all timings), every kernel one after another. The
growth from the shortest to the longest T is fitted as a power law: exponent ~1 is linear, ~2 quadratic.

Writes ``scaling.csv``, ``scaling.md`` and ``scaling.png`` into ``<out>/scaling/``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import torch
from tqdm import tqdm

from kernelized.data import lra as lra_data
from kernelized.experiments.bench import measure
from kernelized.experiments.framework.tables import markdown_table, write_figure
from kernelized.train.checkpoint import write_text_atomic

COLUMNS = ["kernel", "T", "step ms", "peak MB", "x softmax time", "x softmax memory"]


def _step(config: dict, T: int, batch: int, build_model) -> callable:
    """One AdamW step of a fresh model of ``config`` at length T on random tokens."""
    config = {**config, "data": {**config["data"], "max_len": T}}
    torch.manual_seed(0)
    model = build_model(config).to(config.get("device", "cpu"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    info = lra_data.task_info(config["task"], config["data"].get("source"))
    tokens = torch.randint(lra_data.OFFSET, info.vocab_size, (batch, T))
    labels = torch.randint(0, info.num_classes, (batch,))
    inputs = (tokens, tokens.roll(1, 1)) if info.dual else (tokens,)

    def step():
        loss = torch.nn.functional.cross_entropy(model(*inputs), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def measure_scaling(configs: dict[str, dict], lengths, batch: int, steps: int, build_model, progress=True):
    """Rows ``{kernel, T, step ms, peak MB}`` for every (kernel, T); ``configs`` maps kernel -> resolved config."""
    rows, probes = [], []
    cells = [(k, T) for k in configs for T in lengths]
    for kernel, T in tqdm(cells, desc="scaling", disable=not progress):
        step = _step(configs[kernel], T, batch, build_model)
        seconds, _ = measure.timed(step, "cpu", warmup=1, repeats=steps, budget_s=60.0)
        rows.append({"kernel": kernel, "T": T, "step ms": 1000 * seconds, "peak MB": math.nan})
        probes.append((rows[-1], configs[kernel], T))
        del step
    for row, config, T in probes:  # memory after every timing, each cell in a process of its own
        row["peak MB"] = fresh_process_peak_mb(config, T, batch)
    return with_ratios(rows)


_FRESH = """
import json, sys, torch
from kernelized.experiments import lra, lra_scaling
from kernelized.train.memory import proc_status_kb, reset_peak_rss
config, T, batch, threads = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
step = lra_scaling._step(config, T, batch, lra.build_model)
reset_peak_rss()
base = proc_status_kb("VmRSS")
step()
print((proc_status_kb("VmHWM") - base) / 1024)
"""


def fresh_process_peak_mb(config: dict, T: int, batch: int) -> float:
    """Peak memory (MiB) of the first training step of a fresh model in a new Python process: VmHWM - VmRSS
    around the step, after the model and inputs exist (AdamW's state, made in that step, is included). In this
    process the pages that earlier steps freed stay resident and hide a step's peak (it read 0 MB). NaN off Linux
    or when the process fails."""
    args = [json.dumps(config), str(T), str(batch), str(torch.get_num_threads())]
    peak = measure.peak_mb_in_new_process(_FRESH, args, f"{config['kernel']} at T={T}")
    return math.nan if peak is None else peak


def with_ratios(rows: list[dict]) -> list[dict]:
    """Each row's time and memory over softmax's at the same T (NaN without a softmax row)."""
    soft = {r["T"]: r for r in rows if r["kernel"] == "softmax"}
    for r in rows:
        base = soft.get(r["T"])
        r["x softmax time"] = r["step ms"] / base["step ms"] if base else math.nan
        r["x softmax memory"] = r["peak MB"] / base["peak MB"] if base and base["peak MB"] else math.nan
    return rows


def growth(rows: list[dict], key: str) -> dict[str, float]:
    """Per kernel, the exponent p of ``value ~ T^p`` between its shortest and longest T."""
    out = {}
    for kernel in dict.fromkeys(r["kernel"] for r in rows):
        mine = sorted((r for r in rows if r["kernel"] == kernel), key=lambda r: r["T"])
        a, b = mine[0], mine[-1]
        ok = len(mine) > 1 and a[key] > 0 and b[key] > 0 and not math.isnan(a[key] + b[key])
        out[kernel] = math.log(b[key] / a[key]) / math.log(b["T"] / a["T"]) if ok else math.nan
    return out


def draw(path: Path, rows: list[dict], title: str) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    kernels = list(dict.fromkeys(r["kernel"] for r in rows))
    for i, kernel in enumerate(kernels):
        mine = sorted((r for r in rows if r["kernel"] == kernel), key=lambda r: r["T"])
        style = {"color": "k", "lw": 2.2} if kernel == "softmax" else {"color": f"C{i % 10}", "lw": 1.0}
        style["ls"] = "--" if i >= 10 else "-"
        for ax, key in zip(axes, ("step ms", "peak MB")):
            points = [(r["T"], r[key]) for r in mine if r[key] > 0]  # NaN and 0 (unmeasurable) left out
            if points:
                ax.plot(*zip(*points), marker="o", ms=3, label=kernel, **style)
    for ax, label in zip(axes, ("training step (ms)", "peak memory of a step (MB)")):
        ax.set_xscale("log", base=2)
        if ax.lines:
            ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(rows: list[dict], out_dir: Path, header: str) -> str:
    """scaling.csv, scaling.md and scaling.png in ``out_dir``; returns the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS)
    writer.writeheader()
    writer.writerows({k: r[k] for k in COLUMNS} for r in rows)
    write_text_atomic(buf.getvalue(), out_dir / "scaling.csv")
    error = write_figure(draw, out_dir / "scaling.png", rows, "LRA model, one training step: time and memory vs T")
    t_exp, m_exp = growth(rows, "step ms"), growth(rows, "peak MB")
    fits = [{"kernel": k, "time ~ T^p": t_exp[k], "memory ~ T^p": m_exp[k]} for k in t_exp]
    text = "\n".join(
        [
            header,
            "",
            markdown_table(rows, COLUMNS, digits=2),
            "",
            "Growth from the shortest to the longest T, as a power of T (1 = linear, 2 = quadratic):",
            "",
            markdown_table(fits, digits=2),
            "",
            f"({error})" if error else "![scaling](scaling.png)",
            "",
        ]
    )
    write_text_atomic(text, out_dir / "scaling.md")
    return text

"""The report of a run: the CPU targets, the markdown tables (what docs/benchmarks.md quotes) and the plots.

A run's ``result`` is the dict written to ``<out>/<name>.json``: ``preset`` (the config), ``environment``,
``matmul_rate`` (FLOP/s), and the rows of each section: ``kernels`` (case, T, mode, seconds, peak_mb MiB, ...),
``memory`` (fresh-process peaks, MiB), ``decode`` (context, seconds per step, state_mb) and ``models``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from kernelized.experiments.framework.tables import markdown_table, write_figure

K = 1024


def targets(kernel_rows: list[dict], decode_rows: list[dict], T: int = 8 * K, memory_rows: list | None = None) -> dict:
    """The issue's CPU targets for causal ReBased, from this run's measurements (None where not measured)."""

    def seconds(case: str, mode: str = "fwd+bwd", length: int = T):
        for r in kernel_rows:
            if r["case"] == case and r["mode"] == mode and r["T"] == length and "seconds" in r:
                return r["seconds"]
        return None

    ours = seconds("rebased chunk")
    sdpa = seconds("softmax (SDPA)")
    fla = seconds("fla naive_chunk_linear_attn (rebased features)")
    floor = next((r["flop_floor_s"] for r in kernel_rows if r["case"] == "rebased chunk" and r["T"] == T
                  and r["mode"] == "fwd+bwd"), None)  # fmt: skip
    dec = {r["context"]: r["seconds"] for r in decode_rows if r["case"] == "rebased recurrent step"}
    ratio = lambda a, b: None if a is None or b is None else a / b  # noqa: E731
    return {
        "T": T,
        "rebased_chunk_fwd_bwd_s": ours,
        "sdpa_over_rebased_chunk": ratio(sdpa, ours),
        "fla_naive_chunk_over_rebased_chunk": ratio(fla, ours),
        "rebased_chunk_over_flop_floor": ratio(ours, floor),
        "memory_loglog_slope": memory_slope(kernel_rows, memory_rows),
        "decode_32k_over_1k": ratio(dec.get(32 * K), dec.get(1 * K)),
    }


def memory_slope(kernel_rows: list[dict], memory_rows: list | None) -> float | None:
    """Log-log slope of rebased chunk's fwd+bwd peak memory against T (1 = linear): over the fresh-process
    measurements when there are any (reliable at every length), else over the two longest in-process ones (they
    read low where earlier calls left pages resident)."""
    mem = [(r["T"], r["peak_mb"]) for r in kernel_rows
           if r["case"] == "rebased chunk" and r["mode"] == "fwd+bwd" and r.get("peak_mb")][-2:]  # fmt: skip
    if memory_rows:
        mem = [(r["T"], r["peak_mb"]) for r in memory_rows if r.get("peak_mb")]
    if len(mem) < 2:
        return None
    (t0, m0), (t1, m1) = mem[0], mem[-1]
    return math.log(m1 / m0) / math.log(t1 / t0) if m0 > 0 and m1 > 0 else None


def _fmt_time(s) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def _fmt(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def _table(rows: list[dict]) -> list[str]:
    """:func:`markdown_table` of pre-formatted cells as lines, with the blank line after it."""
    return [*markdown_table(rows).rstrip("\n").split("\n"), ""]


def _header(result: dict) -> list[str]:
    env, p = result["environment"], result["preset"]
    lines = [
        f"# Benchmark `{result['preset_name']}`",
        "",
        f"- command: `{result['command']}`",
        f"- device: {env['device']}; torch {env['torch']}; {env['threads']} threads; dtype {p['dtype']}",
        f"- date: {env['date']}; load average before/after: {env['load_before']} / {env['load_after']}",
        f"- measured matmul rate ({p['dtype']}, square 2048): {result['matmul_rate'] / 1e9:.1f} GFLOP/s",
        f"- shape: B={p['batch']}, H={p['heads']}, q/k head dim {p['head_dim']}, Dv={p['head_dim_v']}, "
        f"SDPA head dim {p['softmax_head_dim']}, chunk {p['chunk_size']}; forward runs without grad",
        f"- flash-linear-attention: {env['fla'] or 'not installed'}",
    ]
    if env.get("cpu_kernels") is not None and p["device"] == "cpu":
        lines.append(
            f"- compiled CPU kernels: {'yes' if env['cpu_kernels'] else 'no (PyTorch path)'}; "
            f"THP_MEM_ALLOC_ENABLE={env.get('thp')}; OMP_WAIT_POLICY={env.get('omp_wait_policy')}; "
            f"freed memory kept: {'yes' if env.get('keep_freed_memory') else 'no'}"
        )
    return [*lines, ""]


def _kernel_tables(kernel_rows: list[dict]) -> list[str]:
    """Per mode: time, peak memory and fraction of the matmul rate, one row per case, one column per T."""
    lengths = sorted({r["T"] for r in kernel_rows})
    lines = []
    for mode in ("fwd", "fwd+bwd") if kernel_rows else ():
        rows = [r for r in kernel_rows if r["mode"] == mode]
        for title, key, fmt in (
            (f"{mode}: median time", "seconds", _fmt_time),
            (f"{mode}: peak memory above inputs (MiB)", "peak_mb", lambda x: _fmt(x, 4)),
            (f"{mode}: fraction of the measured matmul rate", "fraction_of_matmul", lambda x: _fmt(x, 2)),
        ):
            table = []
            for case in dict.fromkeys(r["case"] for r in rows):
                cells = {"case": case}
                for t in lengths:
                    r = next((r for r in rows if r["case"] == case and r["T"] == t), None)
                    cells[f"T={t}"] = "skipped" if r is None or "skipped" in r else fmt(r.get(key))
                table.append(cells)
            lines += [f"## {title}", "", *_table(table)]
    return lines


def _skipped(kernel_rows: list[dict]) -> list[str]:
    skipped = {(r["case"], r["mode"]): r["skipped"] for r in kernel_rows if "skipped" in r}
    if not skipped:
        return []
    lines = ["Skipped cells (first reason per case):", ""]
    lines += [f"- {case}, {mode}: {why}" for (case, mode), why in skipped.items()]
    return [*lines, ""]


def _memory_table(memory_rows: list[dict]) -> list[str]:
    if not memory_rows:
        return []
    row = {f"T={r['T']}": _fmt(r["peak_mb"], 4) for r in memory_rows}
    return ["## rebased chunk fwd+bwd peak memory, one fresh process per T (MiB)", "", *_table([row])]


def _decode_table(decode_rows: list[dict]) -> list[str]:
    if not decode_rows:
        return []
    seconds = {(r["case"], r["context"]): r["seconds"] for r in decode_rows}
    contexts = sorted({c for _, c in seconds})
    table = [{"step": case} | {f"L={c}": _fmt_time(seconds[(case, c)]) for c in contexts}
             for case in dict.fromkeys(r["case"] for r in decode_rows)]  # fmt: skip
    return ["## decode: per-token step latency against context length", "", *_table(table)]


def _models_tables(model_rows: list[dict], m: dict | None) -> list[str]:
    """Per model: tokens/s and its ratio to softmax's at the same T, then peak memory; rows mixers, columns T."""
    if not model_rows:
        return []
    lines = ["## models: training throughput of the experiments' own models", ""]
    if m:
        presets = ", ".join(f"{name} `{m[name]['preset']}`" + (f" ({', '.join(m[name]['set'])})" if m[name]["set"]
                            else "") for name in dict.fromkeys(r["model"] for r in model_rows))  # fmt: skip
        lines += [f"AdamW training steps on random tokens, median of {m['steps']} after {m['warmup']}, "
                  f"{m['tokens']} tokens a step (batch = tokens // T); presets: {presets}. Cells: tokens/s "
                  "(x softmax's tokens/s at the same T).", ""]  # fmt: skip
    for model in dict.fromkeys(r["model"] for r in model_rows):
        rows = [r for r in model_rows if r["model"] == model]
        lengths = sorted({r["T"] for r in rows})
        batch = {r["T"]: r["batch"] for r in rows if "batch" in r}
        cols = {t: f"T={t}" + (f" (batch {batch[t]})" if t in batch else "") for t in lengths}
        speed, memory = [], []
        for mixer in dict.fromkeys(r["mixer"] for r in rows):
            cells = {(r["T"]): r for r in rows if r["mixer"] == mixer}
            params = next((f"{r['params']:,}" for r in cells.values() if "params" in r), "-")
            speed.append({"mixer": mixer, "params": params} | {cols[t]: _model_cell(cells.get(t)) for t in lengths})
            memory.append({"mixer": mixer} | {cols[t]: _model_cell(cells.get(t), "peak_mb") for t in lengths})
        form = next((r["form"] for r in rows if r.get("form")), None)
        lines += [f"### {model}: tokens/s" + (f" (kernels in mode {form!r})" if form else ""), "", *_table(speed)]
        lines += [f"### {model}: peak memory of a training step (MiB)", "", *_table(memory)]
    failed = [f"- {r['model']}, {r['mixer']}, T={r['T']}: {r['error']}" for r in model_rows if "error" in r]
    return lines + (["Failed cells (the mixer stops growing T):", "", *failed, ""] if failed else [])


def _model_cell(r: dict | None, key: str = "tokens_per_s") -> str:
    if r is None or "error" in r:
        return "failed" if r else "-"
    if "skipped" in r:
        return "skipped"
    if key != "tokens_per_s":
        return _fmt(r.get(key), 4)
    ratio = r.get("vs_softmax")
    return f"{r['tokens_per_s']:.0f}" + ("" if ratio is None else f" ({ratio:.2f}x)")


def _encoder_tables(rows: list[dict]) -> list[str]:
    """Per (B, T): every kernel's query + key features beside the bidirectional op on them, and the op's floor."""
    lines = []
    for B, T in sorted({(r["B"], r["T"]) for r in rows}, key=lambda bt: bt[1]):
        table = []
        for r in (r for r in rows if (r["B"], r["T"]) == (B, T)):
            table.append({"kernel": r["kernel"], "F": r["F"], "pass": r["mode"],
                          "features q+k": _fmt_time(r["features_s"]), "op": _fmt_time(r["op_s"]),
                          "op, PyTorch path": _fmt_time(r["op_reference_s"]), "op floor": _fmt_time(r["floor_s"]),
                          "op / floor": f"{r['op_s'] / r['floor_s']:.2f}",
                          "memory floor": _fmt_time(r.get("memory_floor_s")),
                          "op / larger floor": f"{r['op_s'] / max(r['floor_s'], r.get('memory_floor_s') or 0):.2f}",
                          "features / op": f"{r['features_s'] / r['op_s']:.2f}"})  # fmt: skip
        title = f"## encoder: feature maps and the bidirectional op, B {B}, T {T} (LRA layer heads)"
        bandwidth = next(r.get("copy_bandwidth") for r in rows if (r["B"], r["T"]) == (B, T))
        if bandwidth:
            title += f"; copy bandwidth {bandwidth / 1e9:.1f} GB/s"
        lines += [title, "", *_table(table)]
    return lines


def _generate_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    ms = {(r["case"], r["prompt"]): r["ms_per_token"] for r in rows}
    prompts = sorted({t for _, t in ms})
    table = [{"generation": case} | {f"prompt {t}": f"{ms[(case, t)]:.2f}" if (case, t) in ms else "–" for t in prompts}
             for case in dict.fromkeys(r["case"] for r in rows)]  # fmt: skip
    cached = [ms[k] for k in sorted(ms) if k[0].endswith("KernelizedCache")]
    ratio = (
        f"; with the cache, prompt {prompts[-1]} / prompt {prompts[0]} = {cached[-1] / cached[0]:.2f}x"
        if cached
        else ""
    )
    return ["## generate: ms per new token against prompt length (tiny ReBased LM, greedy, batch 1)", "",
            f"Prefill excluded (time of N tokens minus time of 1, over N - 1){ratio} (target: within 1.2x).", "",
            *_table(table)]  # fmt: skip


def _targets_table(tg: dict | None) -> list[str]:
    if not tg or tg.get("rebased_chunk_fwd_bwd_s") is None:
        return []
    table = [
        ("SDPA time / ours", ">= 10", tg["sdpa_over_rebased_chunk"]),
        ("fla naive_chunk time / ours", ">= 4", tg["fla_naive_chunk_over_rebased_chunk"]),
        ("ours / FLOP floor", "<= 2", tg["rebased_chunk_over_flop_floor"]),
        ("peak memory log-log slope in T", "1 (linear)", tg["memory_loglog_slope"]),
        ("decode step at 32k / at 1k", "<= 1.1", tg["decode_32k_over_1k"]),
    ]
    rows = [{"target": t, "wanted": w, "measured": _fmt(m)} for t, w, m in table]
    return [f"## targets (causal ReBased chunk, fwd+bwd, T={tg['T']})", "", *_table(rows)]


def markdown(result: dict) -> str:
    """The run as markdown tables (what docs/benchmarks.md quotes)."""
    lines = _header(result) + _kernel_tables(result["kernels"]) + _skipped(result["kernels"])
    lines += _memory_table(result.get("memory")) + _decode_table(result.get("decode"))
    lines += _encoder_tables(result.get("encoder") or [])
    lines += _models_tables(result.get("models"), result["preset"].get("models"))
    lines += _generate_table(result.get("generate"))
    lines += _targets_table(result.get("targets"))
    return "\n".join(lines)


def _draw_kernels(path: Path, result: dict, stem: str) -> None:
    """Log-log time (fwd, fwd+bwd) and fwd+bwd peak memory against T, one line per case."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    for ax, (mode, key, label) in zip(
        axes,
        (
            ("fwd", "seconds", "forward time (s)"),
            ("fwd+bwd", "seconds", "forward+backward time (s)"),
            ("fwd+bwd", "peak_mb", "fwd+bwd peak memory above inputs (MiB)"),
        ),  # fmt: skip
    ):
        rows = [r for r in result["kernels"] if r["mode"] == mode and r.get(key)]
        for case in dict.fromkeys(r["case"] for r in rows):
            pts = [(r["T"], r[key]) for r in rows if r["case"] == case]
            style = "--" if case.startswith("fla") else (":" if "SDPA" in case else "-")
            ax.plot(*zip(*pts), style, marker="o", label=case)
        ax.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel=label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"kernelized bench --preset {stem}: {result['environment']['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _draw_decode(path: Path, result: dict) -> None:
    """Log-log per-token decode step latency (ms) against context length, one line per step kind."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for case in dict.fromkeys(r["case"] for r in result["decode"]):
        pts = [(r["context"], r["seconds"] * 1e3) for r in result["decode"] if r["case"] == case]
        ax.plot(*zip(*pts), marker="o", label=case)
    ax.set(xscale="log", yscale="log", xlabel="context length", ylabel="per-token step latency (ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _draw_models(path: Path, result: dict) -> None:
    """Log-log training tokens/s against T, one panel per model, one line per mixer (softmax in black)."""
    import matplotlib.pyplot as plt

    rows = [r for r in result["models"] if "tokens_per_s" in r]
    models = list(dict.fromkeys(r["model"] for r in result["models"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        mixers = list(dict.fromkeys(r["mixer"] for r in result["models"] if r["model"] == model))
        for i, mixer in enumerate(mixers):
            pts = sorted((r["T"], r["tokens_per_s"]) for r in rows if r["model"] == model and r["mixer"] == mixer)
            style = dict(color="k", lw=2.2) if mixer == "softmax" else dict(color=f"C{i % 10}", lw=1.0)
            if pts:
                ax.plot(*zip(*pts), "--" if i > 10 else "-", marker="o", ms=3, label=mixer, **style)
        ax.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="training tokens/s", title=model)
        lengths = sorted({r["T"] for r in result["models"] if r["model"] == model})
        ax.set_xticks(lengths, [str(t) for t in lengths], minor=False)
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"models: AdamW training throughput, {result['environment']['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plots(result: dict, out: Path, stem: str) -> list[Path]:
    """Log-log PNGs of the sections the run has: ``<stem>_kernels.png``, ``<stem>_decode.png`` and
    ``<stem>_models.png``, written atomically; returns the written paths (a figure that fails is a note on stderr,
    the rest of the report stands)."""
    figures = []
    if result.get("kernels"):
        figures.append((out / f"{stem}_kernels.png", _draw_kernels, (result, stem)))
    if result.get("decode"):
        figures.append((out / f"{stem}_decode.png", _draw_decode, (result,)))
    if any("tokens_per_s" in r for r in result.get("models") or []):
        figures.append((out / f"{stem}_models.png", _draw_models, (result,)))
    written = []
    for path, draw, args in figures:
        error = write_figure(draw, path, *args)
        if error:
            print(f"note: {error}", file=sys.stderr)
        else:
            written.append(path)
    return written

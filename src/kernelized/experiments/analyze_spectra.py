"""The learned-spectra part of `kernelized analyze`: for a run with a learned spectral kernel (GMM, FastFood with
learned diagonals, Generator), a figure per spectral layer (each head's spectrum and its kernel k(delta) against
the initialisation, :func:`kernelized.eval.spectra.draw_spectra`) and the numbers behind it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from kernelized.eval import spectra
from kernelized.experiments.framework.tables import markdown_table, write_figure

MAX_LAYERS = 2  # spectral layers drawn per run (the first ones)


def add_spectra(record: dict, model: torch.nn.Module, initial: Callable[[], torch.nn.Module] | None, prefix: Path):
    """Figures ``<prefix>_<layer>.png`` and ``record["spectra"]`` (per layer: figure, learned and initial rows);
    nothing for a model without learned spectral maps. ``initial()`` rebuilds the untrained model (None: the
    experiment cannot, and the figure shows the trained spectrum alone)."""
    found = spectra.learned_maps(model)
    if not found:
        return
    start = dict(spectra.learned_maps(initial())) if initial is not None else {}
    record["spectra"] = []
    for name, fm in found[:MAX_LAYERS]:
        label = name.replace(".", "_")
        path = prefix.with_name(f"{prefix.name}_{label}.png")
        first = start.get(name)
        error = write_figure(spectra.draw_spectra, path, f"{record['kernel']} {name}", fm, first)
        record["spectra"].append({
            "layer": name, "figure": None if error else path.name, "figure_error": error,
            "learned": spectra.spectrum_summary(fm), "initial": spectra.spectrum_summary(first) if first else None,
        })  # fmt: skip


def _cells(row: dict, start: dict | None) -> dict:
    out = {}
    for key in ("trace_sigma", "mean_norm", "mean_abs_S", "freq_norm"):
        if key in row:
            out[key] = f"{start[key]:.3g} -> {row[key]:.3g}" if start else f"{row[key]:.3g}"
    return out


def spectra_section(records: Sequence[dict]) -> list[str]:
    """Markdown: one row per (run, layer, head) with the initial -> learned numbers, and the figures."""
    rows, figures = [], []
    for r in records:
        for layer in r.get("spectra", []):
            starts = layer["initial"] or [None] * len(layer["learned"])
            for row, start in zip(layer["learned"], starts):
                cells = _cells(row, start)
                rows.append({"run": Path(r["run"]).name, "layer": layer["layer"], "head": row["head"], **cells})
            if layer["figure"]:
                figures.append(layer["figure"])
    if not rows:
        return []
    return [
        "## Learned spectra (initial -> trained)",
        "",
        "trace_sigma: trace of each component's covariance (mean over components); mean_norm: |mu|; mean_abs_S: "
        "FastFood's mean |S|; freq_norm: mean |omega| of the evaluation draw (Generator: 512 generated rows).",
        "",
        markdown_table(rows),
        *[f"![{f}]({f})" for f in figures],
        "",
    ]

"""Tables and figures of reports: markdown tables, "mean ± CI" cells, a run-status section, atomic figures.

One helper per idea: every experiment's report.md is built from :func:`markdown_table` and
:func:`status_section`; every figure goes through :func:`write_figure`, which writes atomically and turns a
plotting failure into a note for the report instead of an exception that would bury the real results.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from kernelized.experiments.framework.sweep import last_line
from kernelized.train.checkpoint import write_text_atomic


def _format_cell(value, digits: int) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}g}" if abs(value) < 1e-3 or abs(value) >= 1e5 else f"{value:.{digits}f}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else str(value)


def markdown_table(
    rows: Sequence[Mapping],
    columns: Sequence[str] | None = None,
    headers: Sequence[str] | None = None,
    digits: int = 4,
) -> str:
    """A GitHub markdown table of ``rows`` (dicts); floats with ``digits`` decimals, NaN as "–".

    ``columns`` picks and orders the keys (default: all keys of the first row); ``headers`` renames them.
    Use :meth:`kernelized.eval.stats.CI.format` or a precomputed string column for "mean ± CI" cells.
    """
    if not rows:
        return "(no rows)\n"
    columns = list(columns) if columns is not None else list(rows[0])
    headers = list(headers) if headers is not None else columns
    if len(headers) != len(columns):
        raise ValueError(f"headers must name every column: {len(columns)} columns, got {len(headers)} headers")
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = [_format_cell(row.get(c), digits).replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def with_ci_column(
    rows: Sequence[dict], name: str = "mean ± 95% CI", digits: int = 3, scale: float = 1.0
) -> list[dict]:
    """Copies of :func:`reduce_runs` rows with a text column ``"0.930 ± 0.050"`` (``(n=1)`` without spread)."""
    out = []
    for row in rows:
        if row["n"] == 0:
            text = "–"
        elif math.isnan(row["half_width"]):
            text = f"{row['mean'] * scale:.{digits}f} (n={row['n']})"
        else:
            text = f"{row['mean'] * scale:.{digits}f} ± {row['half_width'] * scale:.{digits}f}"
        out.append({**row, name: text})
    return out


def write_markdown_table(
    path: str | Path,
    rows: Sequence[Mapping],
    columns: Sequence[str] | None = None,
    headers: Sequence[str] | None = None,
    title: str | None = None,
    note: str | None = None,
    digits: int = 4,
) -> str:
    """Write ``# title``, an optional note paragraph and :func:`markdown_table` to ``path``; returns the text."""
    parts = []
    if title:
        parts.append(f"# {title}\n")
    if note:
        parts.append(note.strip() + "\n")
    parts.append(markdown_table(rows, columns, headers, digits))
    text = "\n".join(parts)
    write_text_atomic(text, path)
    return text


def status_section(
    records: Sequence[dict], ignored: Sequence[str] = (), cell: Callable[[dict], str] | None = None
) -> str:
    """Markdown: how many runs finished, the failed runs with their error, the missing ones, and how many run
    folders of other settings in the same folder the report ignored."""
    done = sum(r["status"] == "finished" for r in records)
    lines = [f"{done} of {len(records)} runs of this config finished."]
    if ignored:
        lines[0] += (
            f" {len(ignored)} run folder(s) of other settings in this folder were ignored "
            "(a run is its whole config; see results.csv of each config)."
        )
    bad = [r for r in records if r["status"] == "failed"]
    missing = [r for r in records if r["status"] == "missing"]
    if bad:
        lines += ["", "Failed runs (see `<run>/error.txt`):", ""]
        lines += [f"- `{r['run_id']}`: {last_line(r.get('error'))}" for r in bad]
    if missing:
        names = ", ".join(f"`{r['run_id']}`" for r in missing[:20]) + (" ..." if len(missing) > 20 else "")
        lines += ["", f"Not run yet ({len(missing)}): {names}"]
    return "\n".join(lines) + "\n"


def write_figure(draw: Callable[..., object], path: str | Path, *args, **kwargs) -> str | None:
    """Call ``draw(fig_path, *args, **kwargs)`` to write a figure atomically (via a temporary file); returns None,
    or the error as one line when drawing failed (the report says so and everything else is still written)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        draw(tmp, *args, **kwargs)
        tmp.replace(path)
        return None
    except Exception as e:  # a figure is never worth losing the table over
        tmp.unlink(missing_ok=True)
        import matplotlib.pyplot as plt

        plt.close("all")
        return f"figure {path.name} not written: {type(e).__name__}: {e}"

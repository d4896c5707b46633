"""The sweep runner: run what is not finished, keep going past failures, collect every run's record.

Layout of a sweep folder::

    <out>/<run-id>/config.yaml     the config the run ran with; written once, never rewritten
    <out>/<run-id>/run.json        {"experiment", "run_id", "config_hash"}: what made the folder (for analyze)
    <out>/<run-id>/result.json     what run_fn returned: marks the run finished
    <out>/<run-id>/error.txt       the traceback of a failed attempt (removed when it is tried again)
    <out>/results.csv              one row per run of the current config (status, flattened config and result)

``run_fn(config: dict, run_dir: Path) -> dict`` must be a top-level (picklable) function returning the run's
summary, because parallel sweeps run it in spawned processes or Ray tasks. A run killed mid-way is called again
and resumes through its Trainer checkpoint. Under ``torchrun`` every process calls run_fn (the Trainer shares the
work), and only rank 0 writes sweep files.
"""

from __future__ import annotations

import csv
import io
import json
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from kernelized.experiments.framework.grid import Run, config_hash, flatten, identity
from kernelized.experiments.framework.launchers import check_launcher, launch_local, launch_ray
from kernelized.experiments.framework.presets import read_yaml
from kernelized.train import distributed
from kernelized.train.checkpoint import write_json_atomic, write_text_atomic

STATUSES = ("finished", "failed", "missing")


def _is_writer() -> bool:
    return distributed.get_rank() == 0


def call_run(run_fn: Callable, run: Run, run_dir: Path) -> tuple[str, dict | None, str | None]:
    """Call run_fn; an exception becomes an error message (and error.txt) so one bad run doesn't stop the sweep."""
    try:
        summary = run_fn(run.config, run_dir)
        if not isinstance(summary, Mapping):
            raise TypeError(f"run_fn must return the summary dict, got {type(summary).__name__}")
        return run.run_id, dict(summary), None
    except Exception:
        message = traceback.format_exc()
        if _is_writer():
            write_text_atomic(message, run_dir / "error.txt")
        return run.run_id, None, message


def prepare_run_dir(run: Run, run_dir: Path, experiment: str | None = None) -> None:
    """Write ``config.yaml`` (and ``run.json``) if absent; if present it must describe the same run."""
    path = run_dir / "config.yaml"
    run_dir.mkdir(parents=True, exist_ok=True)  # every process: run_fn may write there
    if path.exists():
        stored = read_yaml(path)
        if identity(stored) != identity(run.config):
            raise ValueError(
                f"{path} holds another config than run {run.run_id} (edited by hand?); move that folder away"
            )
        return
    if _is_writer():
        meta = {"experiment": experiment, "run_id": run.run_id, "config_hash": config_hash(run.config)}
        write_json_atomic(meta, run_dir / "run.json")
        write_text_atomic(yaml.safe_dump(run.config, sort_keys=False), path)


def _gpus(config: dict) -> float:
    device = str((config.get("train") or {}).get("device", "auto"))
    return 1.0 if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()) else 0.0


def run_sweep(
    runs: Sequence[Run],
    run_fn: Callable[[dict, Path], dict],
    out_dir: str | Path,
    workers: int = 1,
    launcher: str = "local",
    progress: bool = True,
    experiment: str | None = None,
) -> list[dict]:
    """Run every run without a result.json, then return one record per run (in the order of ``runs``).

    A record is ``{"run_id", "params", "config", "run_dir", "status", "summary", "error"}``: status "finished"
    (summary = run_fn's result as read back from result.json), "failed" (error = the traceback) or "missing".
    Failed runs do not stop the others; results.csv is written either way. ``workers`` > 1 runs that many runs
    at once with ``cores // workers`` torch threads each; ``launcher`` is "local" or "ray". ``experiment``
    (the command's name) is recorded in each run's run.json, so ``kernelized analyze`` knows how to load it.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers must be an integer >= 1, got {workers!r}")
    check_launcher(launcher)
    if distributed.get_world_size() > 1 and (workers > 1 or launcher != "local"):
        raise ValueError("under torchrun a sweep runs with --workers 1 and --launcher local (the processes share runs)")
    out_dir = Path(out_dir)
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"run ids must be unique, got duplicates {sorted({i for i in ids if ids.count(i) > 1})}")
    errors: dict[str, str] = {}
    pending = []
    for run in runs:
        run_dir = out_dir / run.run_id
        prepare_run_dir(run, run_dir, experiment)
        if not (run_dir / "result.json").exists():
            pending.append(run)
    distributed.barrier()  # config.yaml written before any process starts a run
    bar = tqdm(total=len(runs), initial=len(runs) - len(pending), desc=out_dir.name, unit="run", disable=not progress)
    if launcher == "ray":
        finished = launch_ray(pending, call_run, run_fn, out_dir, workers, _gpus)
    else:
        finished = launch_local(pending, call_run, run_fn, out_dir, workers)
    for rid, summary, error in finished:
        if error:
            errors[rid] = error
        elif _is_writer():
            write_json_atomic(summary, out_dir / rid / "result.json")
            (out_dir / rid / "error.txt").unlink(missing_ok=True)
        bar.set_postfix_str(rid)
        bar.update(1)
    bar.close()
    distributed.barrier()
    records = collect(runs, out_dir, errors)
    if _is_writer():
        write_results_csv(records, out_dir / "results.csv")
    return records


def collect(runs: Sequence[Run], out_dir: str | Path, errors: Mapping[str, str] | None = None) -> list[dict]:
    """The records of ``runs`` from their folders (for ``--report-only`` too): finished, failed or missing."""
    out_dir, errors = Path(out_dir), dict(errors or {})
    records = []
    for run in runs:
        run_dir = out_dir / run.run_id
        result, error_file = run_dir / "result.json", run_dir / "error.txt"
        record = {"run_id": run.run_id, "params": run.params, "config": run.config, "run_dir": str(run_dir)}
        record.update(status="missing", summary=None, error=None)
        if run.run_id in errors:
            record.update(status="failed", error=errors[run.run_id])
        elif result.exists():
            record.update(status="finished", summary=json.loads(result.read_text()))
        elif error_file.exists():
            record.update(status="failed", error=error_file.read_text())
        records.append(record)
    return records


def finished(records: Sequence[dict]) -> list[dict]:
    return [r for r in records if r["status"] == "finished"]


def failed(records: Sequence[dict]) -> list[dict]:
    return [r for r in records if r["status"] == "failed"]


def other_runs(runs: Sequence[Run], out_dir: str | Path) -> list[str]:
    """Run folders in ``out_dir`` that belong to other settings than ``runs`` (a report ignores them)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    current = {r.run_id for r in runs}
    return sorted(p.name for p in out_dir.iterdir() if (p / "config.yaml").is_file() and p.name not in current)


def last_line(error: str | None) -> str:
    """The last non-empty line of a traceback: what went wrong."""
    lines = [x for x in (error or "").strip().splitlines() if x.strip()]
    return lines[-1].strip() if lines else ""


def write_results_csv(records: Sequence[dict], path: str | Path) -> None:
    """One row per record: run_id, status, error, the flattened config, then the flattened summary (a summary
    column whose name a config column already has is written as ``summary.<name>``)."""
    rows = []
    for rec in records:
        row = {"run_id": rec["run_id"], "status": rec["status"], "error": last_line(rec.get("error"))}
        row.update(flatten(rec["config"]))
        for key, value in flatten(rec.get("summary") or {}).items():
            row[f"summary.{key}" if key in row else key] = value
        rows.append(row)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(text.getvalue(), path)


def load_trained_run(run_dir: str | Path, build: Callable[[dict], torch.nn.Module], checkpoint: str = "checkpoint.pt",
                     resolve: Callable[[dict], dict] | None = None) -> tuple[dict, torch.nn.Module]:  # fmt: skip
    """A run folder's config (resolved) and ``build(config)`` with the checkpoint's weights, in eval mode."""
    from kernelized.train.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    config = read_yaml(run_dir / "config.yaml")
    config = resolve(config) if resolve else config
    model = build(config)
    model.load_state_dict(load_checkpoint(run_dir / checkpoint)["model"])
    return config, model.eval()

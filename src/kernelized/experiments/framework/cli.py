"""The options every experiment command takes, and the one way a command reports a user's mistake.

    parser = experiment_parser("mqar", __doc__, default_preset="demo")
    args = parser.parse_args(argv)
    ...

Every experiment command takes ``--preset``, ``--set key=value``, ``--kernels``, ``--seeds``, ``--workers``,
``--launcher``, ``--device``, ``--out``, ``--report-only``, ``--dry-run`` and ``--no-progress``. A command's
``main`` is wrapped in :func:`command`: a user error (ValueError, FileNotFoundError) prints one ``error: ...``
line and exits 2, with no traceback; bugs still raise.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from kernelized._checks import USER_ERRORS, command  # noqa: F401  (re-exported: one error wrapper)
from kernelized.experiments.framework.grid import expand_grid, narrow
from kernelized.experiments.framework.launchers import LAUNCHERS
from kernelized.experiments.framework.presets import load_preset, parse_list
from kernelized.experiments.framework.schema import check_types
from kernelized.experiments.framework.sweep import collect, failed, run_sweep, write_results_csv


def experiment_parser(experiment: str, doc: str | None, default_preset: str) -> argparse.ArgumentParser:
    """An argparse parser with the options of every experiment command."""
    p = argparse.ArgumentParser(
        prog=f"kernelized {experiment}",
        description=(doc or "").split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", default=default_preset, help=f"a name in configs/{experiment}/ or a YAML path")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset field")
    p.add_argument("--kernels", default=None, help="comma-separated kernels (the grid's kernel axis)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (the grid's seed axis)")
    p.add_argument("--workers", type=int, default=None, help="runs at once (default: the preset's, else 1)")
    p.add_argument("--launcher", default="local", choices=LAUNCHERS, help="local processes or Ray tasks")
    p.add_argument("--device", default=None, help="auto | cpu | cuda[:N] (sets train.device)")
    p.add_argument("--out", default=None, help=f"output folder (default runs/{experiment}/<preset>)")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from finished runs, train nothing")
    p.add_argument("--dry-run", action="store_true", help="validate the preset and list its runs, train nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` items plus what ``--device`` and ``--no-progress`` mean as settings."""
    items = list(args.set)
    if args.device:
        items.append(f"train.device={args.device}")
    if args.no_progress or (args.workers or 1) > 1:
        items.append("train.progress=false")  # bars of parallel runs would interleave
    return items


def narrow_axes(config: dict, args: argparse.Namespace, kernel_axis: str = "kernel") -> None:
    """``--kernels`` and ``--seeds`` replace the grid's kernel and seed axes."""
    narrow(config, kernel_axis, parse_list(args.kernels, "--kernels"))
    narrow(config, "seed", parse_list(args.seeds, "--seeds", int))


def checked_runs(experiment: str, args: argparse.Namespace, overrides: list[str], defaults: dict, schema: type,
                 check_values: Callable[[dict, str], None]) -> tuple[dict, list]:  # fmt: skip
    """The preset over ``defaults`` with ``overrides``, the grid narrowed by ``--kernels``/``--seeds``, one run per
    (kernel, seed, ...) point, each run's config checked against ``schema`` and by ``check_values(config, source)``."""
    config = load_preset(experiment, args.preset, overrides, defaults=defaults)
    source = f"{experiment} preset {args.preset!r}"
    narrow_axes(config, args)
    runs = expand_grid(config, always=("kernel", "seed"))
    for run in runs:
        check_types(run.config, schema, source)
        check_values(run.config, source)
    return config, runs


def workers(args: argparse.Namespace, config: dict) -> int:
    value = args.workers if args.workers is not None else config.get("workers", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"--workers must be an integer >= 1, got {value!r}")
    return value


def on_cpu(config: dict) -> bool:
    device = str((config.get("train") or {}).get("device", "auto"))
    return device == "cpu" or (device == "auto" and not torch.cuda.is_available())


def cpu_rate(n: int = 1024) -> float:
    """This CPU's fp32 matmul rate in FLOP/s (one short measurement)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(3):
        a @ b
    return 3 * 2 * n**3 / (time.perf_counter() - t0)


def warn_if_gpu_sized(config: dict, preset: str, experiment: str, train_flops: Callable[[], float]) -> str | None:
    """For a preset with ``cpu_preset`` set, run on a CPU: print its estimated time and the preset to use instead.

    The estimate is ``train_flops()`` (6 x parameters x training tokens, summed over the runs still to do) at this
    CPU's measured matmul rate: attention and data work come on top, early stopping may end runs sooner.
    Returns the message.
    """
    if not config.get("cpu_preset") or not on_cpu(config):
        return None
    flops = train_flops()
    hours = flops / cpu_rate() / 3600
    when = f"{hours:.0f} hours" if hours >= 2 else f"{max(1, math.ceil(hours * 60))} minutes"
    message = (
        f"note: preset {preset!r} is sized for a GPU; on this CPU its training takes about {when} "
        f"(6 x params x tokens = {flops:.2g} FLOP at the measured matmul rate, before attention and data work). "
        "The CPU-sized preset is "
        f"{config['cpu_preset']!r}: kernelized {experiment} --preset {config['cpu_preset']}"
    )
    print(message, file=sys.stderr)
    return message


def start(args: argparse.Namespace, config: dict, experiment: str, runs: Sequence, train_flops: Callable) -> tuple:
    """The common opening of a sweep command: name, output folder, workers, the runs still to do; prints the plan
    and, for a GPU-sized preset on a CPU, the time estimate. Returns ``(name, out_dir, workers, todo)``."""
    name = Path(str(args.preset)).stem
    out_dir = Path(args.out) if args.out else Path("runs") / experiment / name
    n = workers(args, config)
    print(f"{experiment}/{name}: {len(runs)} runs -> {out_dir} ({n} worker{'s' if n > 1 else ''})")
    todo = [r for r in runs if not (out_dir / r.run_id / "result.json").exists()]
    if not args.report_only:
        warn_if_gpu_sized(config, name, experiment, lambda: train_flops(todo))
    return name, out_dir, n, todo


def sweep(args: argparse.Namespace, runs: Sequence, run_fn: Callable, out_dir: Path, n_workers: int,
          experiment: str) -> list[dict]:  # fmt: skip
    """The runs' records: read back from their folders with ``--report-only``, else run what is not finished.
    Either way ``<out>/results.csv`` is rewritten with these runs, so after sweeps narrowed to parts of the grid
    (``--task``, ``--kernels``) a ``--report-only`` of the whole grid puts every run into it."""
    if args.report_only:
        records = collect(runs, out_dir)
        write_results_csv(records, Path(out_dir) / "results.csv")
        return records
    return run_sweep(runs, run_fn, out_dir, n_workers, args.launcher, not args.no_progress, experiment)


def finish(records: Sequence[dict]) -> int:
    """Exit code of a sweep command: 1 (with one ``error:`` line) when runs failed, else 0."""
    bad = failed(records)
    if bad:
        print(
            f"error: {len(bad)} of {len(records)} runs failed ({bad[0]['run_id']}: see its error.txt)", file=sys.stderr
        )
        return 1
    return 0

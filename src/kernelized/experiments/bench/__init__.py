"""`kernelized bench`: speed and memory of every kernel and form, beside softmax SDPA and flash-linear-attention.

Sections, all measured in one run so the ratios compare like with like:

- **kernels**: forward (no grad, as in prefill) and forward+backward time, median of repeats after warm-up,
  and peak memory, against T, for each kernel x form, torch SDPA (causal softmax) and fla's functions
  when installed (pure-PyTorch ``naive`` references on CPU, Triton kernels on GPU);
- **memory**: the ReBased chunk form's forward+backward peak memory, one fresh process per T;
- **decode**: one recurrent step's latency against context length, beside a softmax KV-cache step;
- **models**: training tokens/s and peak memory of the MQAR, LRA and LM experiments' own models (their presets,
  built by their builders) with softmax and every kernel, at each model's own length and longer ones, and
  each mixer's tokens/s over softmax's.

Every timed case also reports its FLOP count (useful FLOPs: causal products count half the square, the
backward pass twice the forward) and the fraction of the machine's measured fp32 (or preset dtype) matmul
rate it reaches; ``flop floor`` = FLOPs / that rate. How memory is measured: :mod:`.measure`.

Presets are YAML files ``configs/bench/<name>.yaml`` (``cpu``: what ``make bench`` runs; ``gpu``: a CUDA
machine; ``smoke``: seconds, for tests), validated against :class:`BenchConfig`; ``--set key=value`` overrides a
field (``--set repeats=3 --set models.steps=2``).

Outputs ``<out>/<name>.json``, ``<out>/<name>.md`` and log-log PNGs ``<out>/<name>_*.png``, written atomically;
``<out>`` defaults to ``runs/bench`` (scratch), ``--out docs/bench`` publishes a run where docs/benchmarks.md
links. Modules: :mod:`.measure` (timing, memory, matmul rate), :mod:`.flops` (FLOP models), :mod:`.cases`
(what is timed), :mod:`.report` (targets, markdown, plots).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from tqdm import tqdm

from kernelized import cpu as cpu_kernels
from kernelized.experiments.bench import measure
from kernelized.experiments.bench.cases import (
    DTYPES,
    build_cases,
    fla_available,
    model_configs,
    run_decode,
    run_kernels,
    run_models,
    select_cases,
)
from kernelized.experiments.bench.encoder import run_encoder
from kernelized.experiments.bench.generation import Generate, run_generate
from kernelized.experiments.bench.report import markdown, plots, targets
from kernelized.experiments.framework.cli import command, experiment_parser
from kernelized.experiments.framework.presets import load_preset, parse_list
from kernelized.experiments.framework.schema import check_types, defaults_of
from kernelized.train import memory
from kernelized.train.checkpoint import write_text_atomic

SECTIONS = ("kernels", "memory", "decode", "encoder", "models", "generate")
DEFAULT_OUT = "runs/bench"
PUBLISHED_OUT = "docs/bench"


@dataclass
class MaxLen:
    """Longest T at which the capped forms are timed (0: never; the decode section still times the step)."""

    quadratic: int = 4096  # the parallel form (T x T scores), and the polynomial form where its kernels do not run
    recurrent: int = 0  # the per-token recurrent form: a Python loop over T


@dataclass
class ModelPreset:
    """An experiment's model as the models section builds it: that experiment's preset, ``--set``-style overrides."""

    preset: str = ""
    set: list[str] = field(default_factory=list)  # key=value; a grid axis set is pinned (others: their first value)


@dataclass
class Models:
    """The models section: AdamW training steps of the MQAR, LRA and LM experiments' own models, with softmax and
    every kernel, at each model's own length T and longer ones."""

    mqar: ModelPreset = field(default_factory=lambda: ModelPreset("demo", ["seq_len=64"]))  # mqar demo at L=64
    lra: ModelPreset = field(default_factory=lambda: ModelPreset("cpu", ["task=listops"]))  # the CPU tier's ListOps
    lm: ModelPreset = field(default_factory=lambda: ModelPreset("ptb-cpu"))  # the LM study's model
    length_factors: list[int] = field(default_factory=lambda: [1, 4, 16])  # T = the model's own T x each
    tokens: int = 1024  # tokens per step: batch = max(1, tokens // T)
    steps: int = 2  # timed steps (median)
    warmup: int = 1
    budget_s: float = 4.0  # a step slower than this stops the mixer growing T (a first one: measured once)


@dataclass
class Encoder:
    """The encoder section: every feature map and the bidirectional op split apart at the LRA layer's shapes."""

    shapes: list[list[int]] = field(default_factory=lambda: [[8, 1024], [2, 4096]])  # [B, T] pairs
    heads: int = 4
    head_dim: int = 32  # q/k size before the feature map
    head_dim_v: int = 32
    kernels: list[str] = field(default_factory=list)  # empty: every registered kernel
    reference_kernels: list[str] = field(default_factory=lambda: ["gmm-rks", "elu"])  # op's PyTorch path too
    warmup: int = 1
    repeats: int = 3


@dataclass
class BenchConfig:
    """A bench preset: shapes ``[batch, T, heads, head_dim]`` (q, k), ``head_dim_v`` (v), times in seconds."""

    device: Literal["cpu", "cuda"] = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    batch: int = 1
    heads: int = 8
    head_dim: int = 16  # q/k head dim d before the feature map
    head_dim_v: int = 64
    softmax_head_dim: int = 64  # SDPA's q, k and v head dim
    chunk_size: int = 64
    lengths: list[int] = field(default_factory=lambda: [1024, 2048, 4096, 8192, 16384, 32768])
    warmup: int = 1
    repeats: int = 5
    budget_s: float = 8.0  # a call slower than this is measured once and the case stops growing T
    max_len: MaxLen = field(default_factory=MaxLen)
    decode_lengths: list[int] = field(default_factory=lambda: [1024, 2048, 4096, 8192, 16384, 32768])
    decode_steps: int = 200  # timed decode steps per context length
    encoder: Encoder = field(default_factory=Encoder)
    models: Models = field(default_factory=Models)
    generate: Generate = field(default_factory=Generate)  # HF generate with the model's state vs without
    seed: int = 0  # the random inputs of the kernel and decode sections (--seeds takes one)


_AT_LEAST = {"seed": 0, "warmup": 0, "max_len.quadratic": 0, "max_len.recurrent": 0, "models.warmup": 0,
             "encoder.warmup": 0}  # fmt: skip


def check_values(config: dict, source: str) -> None:
    """Counts and shapes are >= 1 (warm-ups and caps >= 0), the length lists non-empty, the budget positive."""
    values = {k: v for k, v in config.items() if not isinstance(v, dict)}
    values |= {f"{s}.{k}": v for s in ("max_len", "models", "encoder") for k, v in config[s].items()}
    values["encoder.shapes"] = [n for shape in config["encoder"]["shapes"] for n in shape]
    for key, value in values.items():
        if key in ("encoder.kernels", "encoder.reference_kernels"):
            continue
        if isinstance(value, list) and (not value or min(value) < 1):
            raise ValueError(f"{key} in {source} must be a non-empty list of integers >= 1, got {value!r}")
        if isinstance(value, int) and value < _AT_LEAST.get(key, 1):
            raise ValueError(f"{key} in {source} must be >= {_AT_LEAST.get(key, 1)}, got {value!r}")
    for key, value in (("budget_s", config["budget_s"]), ("models.budget_s", config["models"]["budget_s"])):
        if value <= 0:
            raise ValueError(f"{key} in {source} must be > 0 seconds, got {value!r}")


def load_config(preset: str, overrides: list[str], lengths: str | None = None) -> dict:
    """The preset merged over :class:`BenchConfig`'s defaults, ``--set`` and ``--lengths`` applied, validated."""
    config = load_preset("bench", preset, overrides, defaults=defaults_of(BenchConfig))
    source = f"bench preset {preset!r}"
    if config.pop("grid"):
        raise ValueError(f"{source}: the bench takes no grid (one run measures every case)")
    config["lengths"] = parse_list(lengths, "--lengths", int) or config["lengths"]
    check_types(config, BenchConfig, source)
    check_values(config, source)
    if config["device"] == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{source} needs CUDA (device: cuda), and torch.cuda.is_available() is False")
    return config


def parse_sections(text: str) -> list[str]:
    sections = parse_list(text, "--sections")
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"--sections: unknown {unknown}; the sections are {list(SECTIONS)}")
    return sections


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options of every experiment command, plus the bench's own; the sweep options take the one value that
    makes sense for timings measured side by side in one process."""
    parser = experiment_parser("bench", __doc__, default_preset="cpu")
    parser.add_argument("--lengths", default=None, help="comma-separated T values, overriding the preset")
    parser.add_argument("--cases", default=None, help="only kernel cases whose name contains one of these (comma)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"any of {','.join(SECTIONS)}")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--name", default=None, help="output file stem (default: the preset name)")
    args = parser.parse_args(argv)
    if args.workers not in (None, 1) or args.launcher != "local":
        raise ValueError("--workers and --launcher: the bench times every case side by side in one process "
                         f"(ratios of one run), so it takes --workers 1 --launcher local, got --workers "
                         f"{args.workers} --launcher {args.launcher}")  # fmt: skip
    seeds = parse_list(args.seeds, "--seeds", int) or []
    if len(seeds) > 1:
        raise ValueError(f"--seeds: the bench draws one set of inputs per run, got {seeds}; run once per seed")
    args.set = [*args.set, *(f"seed={s}" for s in seeds), *([f"device={args.device}"] if args.device else [])]
    args.out = args.out or DEFAULT_OUT
    return args


def kernel_cases(cases: list, kernels: list[str] | None) -> list:
    """The cases of the named kernels (``softmax`` = SDPA; fla's cases follow the kernel whose features they take)."""
    if kernels is None:
        return cases
    names = {c.name.split(" ")[0] for c in cases if c.impl != "fla"} | {"softmax"}
    unknown = [k for k in kernels if k not in names]
    if unknown:
        raise ValueError(f"--kernels: no bench case for {unknown}; the kernels timed here are {sorted(names)}")
    return [c for c in cases if c.name.split(" ")[0] in kernels or any(f"({k} features)" in c.name for k in kernels)]


def report_only(out: Path, stem: str) -> int:
    """Rebuild ``<stem>.md`` and the PNGs from ``<stem>.json`` of an earlier run."""
    path = out / f"{stem}.json"
    if not path.is_file():
        raise ValueError(f"--report-only: {path} does not exist (run the bench first, or give --out / --name)")
    written = write_report(json.loads(path.read_text()), out, stem)
    print("rewrote " + ", ".join(str(w) for w in written))
    return 0


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores"


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _fla_version() -> str | None:
    if not fla_available():
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"fla-core {version('fla-core')}"
    except PackageNotFoundError:
        return "installed"


def environment(device: str, dtype: torch.dtype) -> dict:
    """The machine and software of the run (``load_after`` is added when it ends)."""
    return dict(device=_device_name(device), torch=torch.__version__, threads=torch.get_num_threads(),
                python=platform.python_version(), fla=_fla_version(), load_before=_load(),
                cpu_kernels=device == "cpu" and cpu_kernels.usable(torch.zeros(1, dtype=dtype)),
                thp=os.environ.get("THP_MEM_ALLOC_ENABLE"), keep_freed_memory=memory.keep_freed_memory(),
                omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))  # fmt: skip


def run_sections(p: dict, sections: list[str], cases: list, rate: float) -> dict[str, list[dict]]:
    """The rows of every section asked for (empty lists for the others); in-process peak memory is measured after
    every timing (see :mod:`.cases`)."""
    out: dict[str, list[dict]] = {s: [] for s in SECTIONS}
    probes: list = []
    if "kernels" in sections:
        out["kernels"] = run_kernels(p, cases, p["lengths"], rate, probes)
    if "memory" in sections:
        for T in tqdm(p["lengths"], desc="memory (fresh processes)", leave=False):
            out["memory"].append(
                dict(case="rebased chunk", mode="fwd+bwd", T=T, peak_mb=measure.fresh_process_peak_mb(p, T))
            )
    if "decode" in sections:
        out["decode"] = run_decode(p, rate)
    if "encoder" in sections:
        out["encoder"] = run_encoder(p, rate)
    if "models" in sections:
        out["models"] = run_models(p, probes)
    if "generate" in sections:
        out["generate"] = run_generate(p)
    for probe in tqdm(probes, desc="peak memory (in-process, after all timings)", leave=False):
        try:
            probe()
        except (RuntimeError, MemoryError) as e:  # the cell keeps its time; its memory stays unmeasured
            print(f"note: a peak-memory probe failed ({type(e).__name__})", file=sys.stderr)
    return out


def write_report(result: dict, out: Path, stem: str) -> list[Path]:
    """``<stem>.md`` and the PNGs of a run's result, each written atomically; returns the paths written."""
    path = out / f"{stem}.md"
    write_text_atomic(markdown(result), path)
    return [path, *plots(result, out, stem)]


def write_outputs(result: dict, out: Path, stem: str) -> list[Path]:
    """``<stem>.json`` and :func:`write_report`'s files, each written atomically; returns the paths written."""
    path = out / f"{stem}.json"
    write_text_atomic(json.dumps(result, indent=1, default=str), path)
    return [path, *write_report(result, out, stem)]


@command
def main(argv: list[str]) -> int:
    args = parse_args(argv)
    sections = parse_sections(args.sections)
    out, stem = Path(args.out), args.name or Path(args.preset).stem
    if args.report_only:
        return report_only(out, stem)
    p = load_config(args.preset, args.set, args.lengths)
    cases = kernel_cases(build_cases(p), parse_list(args.kernels, "--kernels")) if "kernels" in sections else []
    if args.cases:
        if "kernels" not in sections:
            raise ValueError(
                f"--cases selects cases of the kernels section, which --sections {args.sections} leaves out"
            )
        cases = select_cases(cases, parse_list(args.cases, "--cases"))
    if "models" in sections:
        model_configs(p["models"])  # a bad models.<name> preset or override fails now, before any timing
    if args.dry_run:
        print(f"bench/{stem}: sections {sections}; kernel cases: {[c.name for c in cases]} -> {out}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    out.mkdir(parents=True, exist_ok=True)
    device, dtype = p["device"], DTYPES[p["dtype"]]
    env = environment(device, dtype)
    rate = measure.matmul_rate(device, dtype)
    print(f"matmul rate: {rate / 1e9:.1f} GFLOP/s ({p['dtype']}) on {env['device']}")
    result = dict(preset_name=stem, preset=p, environment=env, matmul_rate=rate,
                  command="kernelized bench " + " ".join(argv))  # fmt: skip
    result |= run_sections(p, sections, cases, rate)
    env["load_after"] = _load()
    result["targets"] = targets(result["kernels"], result["decode"], memory_rows=result["memory"])
    written = write_outputs(result, out, stem)
    print(markdown(result))
    print("wrote " + ", ".join(str(w) for w in written))
    if out.resolve() != Path(PUBLISHED_OUT).resolve():
        print(f"(a scratch run; `kernelized bench --out {PUBLISHED_OUT} ...` publishes it where docs/benchmarks.md "
              "links)")  # fmt: skip
    return 0

"""Measuring: median wall time, peak memory in this process and in a fresh one, the machine's matmul rate.

Peak memory on CPU: the call's resident-set high-water mark (``VmHWM`` in /proc/self/status, reset through
/proc/self/clear_refs before each measurement) minus the resident set just before the call, so inputs that already
exist are not counted; this sees torch's allocations, which tracemalloc does not. On CUDA:
``torch.cuda.max_memory_allocated`` minus the allocation before the call.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from kernelized.train.memory import fresh_allocations, proc_status_kb, reset_peak_rss


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _once(fn: Callable[[], object], device: str) -> float:
    """Seconds of one call of ``fn()``, the device synchronised on both sides."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def timed(fn: Callable[[], object], device: str, warmup: int, repeats: int, budget_s: float) -> tuple[float, int]:
    """Median wall time of ``fn()`` in seconds over ``repeats`` calls after ``warmup`` calls, and the number of
    timed calls.

    If the first warm-up call already exceeds ``budget_s`` (seconds), that call is the measurement (1 timed call).
    """
    first = _once(fn, device)
    for _ in range(max(1, warmup) - 1):
        _once(fn, device)
    if first > budget_s:
        return first, 1
    times = [_once(fn, device) for _ in range(repeats)]
    return statistics.median(times), len(times)


def peak_memory_mb(fn: Callable[[], object], device: str) -> float | None:
    """Peak memory that ``fn()`` adds on top of what exists before the call, in MiB (None if unmeasurable)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    if not reset_peak_rss():  # VmHWM back to the current resident set
        return None
    with fresh_allocations():  # big blocks from fresh mmaps, so reused heap pages cannot hide them
        base = proc_status_kb("VmRSS")
        fn()
        peak = proc_status_kb("VmHWM")
    return None if base is None or peak is None else max(0.0, (peak - base) / 1024)


_FRESH_PROCESS = """
import sys, torch
from kernelized import kernels, ops
from kernelized.train.memory import proc_status_kb, reset_peak_rss
B, T, H, d, dv, threads = (int(x) for x in sys.argv[1:7])
torch.set_num_threads(threads)
fm = kernels.build("rebased", head_dim=d, num_heads=H)
with torch.no_grad():
    q, k = fm.query(torch.randn(B, T, H, d)), fm.key(torch.randn(B, T, H, d))
q, k, v = q.requires_grad_(), k.requires_grad_(), torch.randn(B, T, H, dv, requires_grad=True)
def run(n):
    o = ops.linear_attention(q[:, :n], k[:, :n], v[:, :n], mode="chunk")[0]
    return torch.autograd.grad(o.sum(), (q, k, v))
run(64)  # lazy initialisation (thread pools, BLAS buffers) is not the op's memory
reset_peak_rss()
base = proc_status_kb("VmRSS")
run(T)
print((proc_status_kb("VmHWM") - base) / 1024)
"""


def peak_mb_in_new_process(script: str, args: list[str], what: str) -> float | None:
    """Run ``python -c script *args`` and read the peak MiB it prints last (the script measures VmHWM - VmRSS
    around its call): no pages left resident by earlier calls in this process can hide the peak. None off Linux,
    or when the process fails (a note naming ``what`` says why)."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        print(f"note: fresh-process memory of {what} failed: {proc.stderr[-300:]}", file=sys.stderr)
        return None
    return float(proc.stdout.strip().splitlines()[-1])


def fresh_process_peak_mb(p: dict, T: int) -> float | None:
    """Peak memory in MiB of one ReBased chunk forward+backward at length T (shape ``[B, T, H, d]`` from preset
    ``p``), measured in a new Python process (inputs made first): None off Linux CPUs or when that fails."""
    if p["device"] != "cpu":
        return None
    args = [str(x) for x in (p["batch"], T, p["heads"], p["head_dim"], p["head_dim_v"], torch.get_num_threads())]
    return peak_mb_in_new_process(_FRESH_PROCESS, args, f"T={T}")


def matmul_rate(device: str, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Measured FLOP/s of one large ``[n, n] @ [n, n]`` matmul: the machine's attainable rate, the yardstick for
    the fractions of the report."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    t, _ = timed(lambda: a @ b, device, warmup=2, repeats=repeats, budget_s=math.inf)
    return 2 * n**3 / t


def copy_bandwidth(device: str, mib: int = 256, repeats: int = 5) -> float:
    """Measured bytes/s of ``y.copy_(x)`` on two fresh-allocated ``mib``-MiB float32 buffers (read + write, both
    counted): the yardstick of the memory floors, as :func:`matmul_rate` is of the FLOP floors."""
    x = torch.ones(mib * 2**18, device=device)  # float32: 4 bytes an element
    y = torch.empty_like(x)
    t, _ = timed(lambda: y.copy_(x), device, warmup=2, repeats=repeats, budget_s=math.inf)
    return 2 * x.numel() * x.element_size() / t

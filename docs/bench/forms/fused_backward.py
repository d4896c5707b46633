"""Random features and the bidirectional op with one fused backward (``kernelized.layers.fused``) against the two
autograd nodes they replace: a ``KernelAttention`` layer forward + backward (train mode, ``mode="auto"``, which
runs the chunk form here) at the LRA shapes, both paths in one process, rounds alternating, freed memory kept as the
Trainer keeps it; median ms of the forward, of the backward, and of both.

    .venv/bin/python docs/bench/forms/fused_backward.py > docs/bench/forms/fused_backward.txt
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from kernelized.layers import KernelAttention, fused
from kernelized.train.memory import keep_freed_memory

SHAPES = ((8, 1024), (2, 4096))  # (B, T); d_model 128, 4 heads of 32
KERNELS = ("gmm-rks", "rff", "generative-rks", "fastfood-rks", "gmm-prf", "generative-prf", "fastfood-prf", "performer")
ROUNDS = 3


def timed_steps(layer: KernelAttention, x: torch.Tensor, warmup: int = 2, calls: int = 5) -> tuple[float, float]:
    """Median seconds of the forward (to the summed output) and of its backward, over ``calls`` after ``warmup``."""
    forward, backward = [], []
    for i in range(warmup + calls):
        t0 = time.perf_counter()
        y = layer(x).sum()
        t1 = time.perf_counter()
        y.backward()
        t2 = time.perf_counter()
        if i >= warmup:
            forward.append(t1 - t0)
            backward.append(t2 - t1)
    return statistics.median(forward), statistics.median(backward)


def main() -> None:
    keep_freed_memory()
    torch.set_num_threads(2)
    times: dict[tuple, list[float]] = {}
    for _ in range(ROUNDS):
        for B, T in SHAPES:
            for kernel in KERNELS:
                torch.manual_seed(0)
                layer = KernelAttention(128, 4, 32, kernel=kernel, causal=False)
                x = torch.randn(B, T, 128, requires_grad=True)

                for enabled in (False, True):
                    fused.ENABLED = enabled
                    forward, backward = timed_steps(layer, x)
                    times.setdefault((B, T, kernel, enabled, "f"), []).append(forward)
                    times.setdefault((B, T, kernel, enabled, "b"), []).append(backward)
    print(f"KernelAttention, bidirectional, d_model 128, 4 heads of 32, fp32, forward + backward, 2 threads, freed "
          f"memory kept; median of {ROUNDS} rounds x 5 calls, the two paths alternating\n")  # fmt: skip
    print("| B, T | kernel | features | forward ms: two nodes | fused | backward ms: two nodes | fused "
          "| forward + backward: two nodes | fused | fused / two nodes |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for B, T in SHAPES:
        for kernel in KERNELS:
            F = KernelAttention(128, 4, 32, kernel=kernel, causal=False).feature_map.feature_dim
            f2, f1, b2, b1 = (statistics.median(times[(B, T, kernel, e, p)]) for p in "fb" for e in (False, True))
            cells = [f2, f1, b2, b1, f2 + b2, f1 + b1]
            print(f"| {B}, {T} | {kernel} | {F} | " + " | ".join(f"{c * 1e3:.1f}" for c in cells)
                  + f" | {(f1 + b1) / (f2 + b2):.2f} |")  # fmt: skip
    print(f"\ntorch {torch.__version__}, python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()

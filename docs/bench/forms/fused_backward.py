"""Random features and the bidirectional op with one fused backward (``kernelized.layers.fused``) against the two
autograd nodes they replace: a ``KernelAttention`` layer forward + backward (train mode, ``mode="auto"``, which
runs the chunk form here) at the LRA shapes, both paths in one process, rounds alternating, freed memory kept as the
Trainer keeps it; median ms.

    .venv/bin/python docs/bench/forms/fused_backward.py > docs/bench/forms/fused_backward.txt
"""

from __future__ import annotations

import statistics
import sys

import torch

from kernelized.experiments.bench import measure
from kernelized.layers import KernelAttention, fused
from kernelized.train.memory import keep_freed_memory

SHAPES = ((8, 1024), (2, 4096))  # (B, T); d_model 128, 4 heads of 32
KERNELS = ("gmm-rks", "rff", "generative-rks", "fastfood-rks", "gmm-prf", "generative-prf", "fastfood-prf", "performer")
ROUNDS = 3


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

                def step(layer=layer, x=x):
                    layer(x).sum().backward()

                for enabled in (False, True):
                    fused.ENABLED = enabled
                    times.setdefault((B, T, kernel, enabled), []).append(measure.timed(step, "cpu", 2, 5, 1e9)[0])
    print(f"KernelAttention, bidirectional, d_model 128, 4 heads of 32, fp32, forward + backward, 2 threads, freed "
          f"memory kept; median of {ROUNDS} rounds x 5 calls, the two paths alternating\n")  # fmt: skip
    print("| B, T | kernel | features | two nodes ms | fused backward ms | fused / two nodes |")
    print("|---|---|---|---|---|---|")
    for B, T in SHAPES:
        for kernel in KERNELS:
            F = KernelAttention(128, 4, 32, kernel=kernel, causal=False).feature_map.feature_dim
            two, one = (statistics.median(times[(B, T, kernel, e)]) for e in (False, True))
            print(f"| {B}, {T} | {kernel} | {F} | {two * 1e3:.1f} | {one * 1e3:.1f} | {one / two:.2f} |")
    print(f"\ntorch {torch.__version__}, python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()

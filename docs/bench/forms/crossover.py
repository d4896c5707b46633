"""Where each exact form of KernelAttention is fastest on this machine: the calibration of ``mode="auto"``.

Times one layer forward + backward (train mode, 2 torch threads, median of 5 after 2 warm-up calls, freed memory
kept as the Trainer keeps it) in both forms that training uses (``parallel``: the implicit (q.k)^p form for rebased
and taylor, the masked quadratic product of features for the others; ``chunk``) at a fixed token count (B * T =
16k) over T, causal at the MQAR shape (d_model 128, 8 heads of 16) and bidirectional at the LRA shape (d_model 128,
4 heads of 32), and what ``mode="auto"`` picks.

    .venv/bin/python docs/bench/forms/crossover.py > docs/bench/forms/crossover.txt
"""

from __future__ import annotations

import sys

import torch

from kernelized.experiments.bench import measure
from kernelized.layers import KernelAttention
from kernelized.train.memory import keep_freed_memory

TOKENS = 16384
SHAPES = {"causal (MQAR: 8 heads of 16)": (True, 8, 16), "bidirectional (LRA: 4 heads of 32)": (False, 4, 32)}
KERNELS = ("rebased", "taylor", "gmm-rks", "elu")
LENGTHS = (64, 128, 256, 512, 1024, 2048, 4096)


def time_form(layer: KernelAttention, x: torch.Tensor, mode: str) -> float:
    def step():
        layer(x, mode=mode).sum().backward()

    return measure.timed(step, "cpu", 2, 5, budget_s=20.0)[0]


def main() -> None:
    keep_freed_memory()
    torch.set_num_threads(2)
    for label, (causal, heads, d) in SHAPES.items():
        print(f"\n## {label}: ms per forward + backward at B * T = {TOKENS}\n")
        print("| kernel | T | parallel | chunk | fastest | auto picks |")
        print("|---|---|---|---|---|---|")
        for kernel in KERNELS:
            for T in LENGTHS:
                torch.manual_seed(0)
                layer = KernelAttention(128, heads, d, kernel=kernel, causal=causal)
                x = torch.randn(TOKENS // T, T, 128, requires_grad=True)
                times = {}
                for mode in ("parallel", "chunk"):
                    if mode == "parallel" and T > 2048:  # T x T scores of 16k tokens: too slow to matter
                        continue
                    times[mode] = time_form(layer, x, mode)
                best = min(times, key=times.get)
                cells = [f"{times[m] * 1e3:.1f}" if m in times else "–" for m in ("parallel", "chunk")]
                print(f"| {kernel} | {T} | " + " | ".join(cells) + f" | {best} | {layer.form_for(x)} |", flush=True)
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads; python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()

"""The ops of one KernelAttention layer's forward + backward by self CPU time (torch.profiler, 3 steps after 2),
at the MQAR shape (B 64, T 256, d_model 128, 8 heads of 16, causal), 2 threads.

    .venv/bin/python docs/bench/forms/profile_layer.py rebased parallel

Run at 510f972^ (before ReBased's norm went through layer_norm) it listed aten::var first: 186 ms over 6 calls.
"""

from __future__ import annotations

import sys

import torch

from kernelized.layers import KernelAttention


def main(kernel: str = "rebased", mode: str = "parallel") -> None:
    torch.set_num_threads(2)
    x = torch.randn(64, 256, 128, requires_grad=True)
    layer = KernelAttention(128, 8, 16, kernel=kernel, causal=True)
    for _ in range(2):
        layer(x, mode=mode).sum().backward()
    with torch.profiler.profile() as prof:
        for _ in range(3):
            layer(x, mode=mode).sum().backward()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main(*sys.argv[1:])

"""Why the bidirectional op sits above its FLOP floor: the per-sequence products are skinny gemms (one side Dv + 1
= 33 wide), which MKL runs on one thread well below its square-matrix rate. Times one sequence's four product shapes
at the LRA gmm-rks shape (T 1024, F 513 on strided rows of 4 heads, Dv + 1 = 33) on one thread.

    .venv/bin/python docs/bench/forms/skinny_gemm.py > docs/bench/forms/skinny_gemm.txt
"""

from __future__ import annotations

import torch

from kernelized.experiments.bench import measure


def main() -> None:
    torch.set_num_threads(1)
    rate = measure.matmul_rate("cpu", torch.float32)
    print(f"square 2048 matmul, 1 thread: {rate / 1e9:.0f} GFLOP/s")
    T, F, D = 1024, 513, 33
    k = torch.rand(T, 4 * F)[:, :F]  # one head's rows of [T, H * F]
    v, S, dy = torch.rand(T, D), torch.rand(F, D), torch.rand(T, D)
    flops = 2 * T * F * D
    for name, fn in (("S = k^T [v, 1]", lambda: k.t() @ v), ("q S", lambda: k @ S), ("dy S^T", lambda: dy @ S.t())):
        t = measure.timed(fn, "cpu", 3, 20, budget_s=float("inf"))[0]
        print(f"{name}: {t * 1e6:.0f} us, {flops / t / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    main()

"""Why the bidirectional op sits above its FLOP floor, on one thread at the LRA gmm-rks shape (T 1024, F 513 on
strided rows of 4 heads, Dv + 1 = 33): the per-sequence products are skinny gemms, which MKL runs below its
square-matrix rate even on cache-resident operands (first lines); and the compiled forward over all B x H = 32
sequences of a [8, 1024, 4, 513] tensor, whose q and k come from memory, costs more per sequence than its two gemms
on cached operands (last lines).

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
    from kernelized.ops.linear import bidirectional

    q, k = torch.rand(8, T, 4, F), torch.rand(8, T, 4, F)
    v = torch.randn(8, T, 4, D - 1)
    t = measure.timed(lambda: bidirectional._compiled_forward(q, k, v, None, None, 1e-6, save=False), "cpu", 2, 7,
                      budget_s=float("inf"))[0]  # fmt: skip
    print(
        f"compiled forward, 32 sequences from memory: {t * 1e3:.1f} ms, {t / 32 * 1e6:.0f} us per sequence "
        f"({2 * flops * 32 / t / 1e9:.0f} GFLOP/s)"
    )


if __name__ == "__main__":
    main()

"""The bidirectional op, compiled kernel against the PyTorch path, interleaved in one process (2 rounds, forward +
backward, 2 threads, median of 7 after 2, ms) over feature counts at the LRA shapes (4 heads, Dv 32).

    .venv/bin/python docs/bench/forms/bidirectional_ab.py > docs/bench/forms/bidirectional_ab.txt
"""

from __future__ import annotations

import torch

from kernelized import cpu, ops
from kernelized.experiments.bench import measure


def pair(B: int, T: int, F: int, H: int = 4, Dv: int = 32) -> list[str]:
    q, k = (torch.rand(B, T, H, F, requires_grad=True) for _ in range(2))
    v, g = torch.randn(B, T, H, Dv, requires_grad=True), torch.randn(B, T, H, Dv)

    def step():
        o = ops.linear_attention(q, k, v, causal=False)[0]
        torch.autograd.grad(o, (q, k, v), g)

    cells = []
    for _ in range(2):
        compiled = measure.timed(step, "cpu", 2, 7, budget_s=float("inf"))[0] * 1e3
        with cpu.pytorch_path():
            reference = measure.timed(step, "cpu", 2, 7, budget_s=float("inf"))[0] * 1e3
        cells.append(f"{compiled:.1f} / {reference:.1f}")
    return cells


def main() -> None:
    torch.set_num_threads(2)
    print("| B, T | F | round 1: compiled / PyTorch | round 2 |\n|---|---|---|---|")
    for B, T in ((8, 1024), (2, 4096)):
        for F in (32, 64, 128, 257, 513):
            print(f"| {B}, {T} | {F} | " + " | ".join(pair(B, T, F)) + " |", flush=True)


if __name__ == "__main__":
    main()

"""Two ways to write RKS features [a cos u, a sin u, s] into one buffer, timed side by side (alternating rounds):
``direct``, cos/sin written into the output's slices (``out=``) and scaled in place; ``fresh``, cos/sin into fresh
tensors and the products written into the slices (what ``kernels/feature_ops.trig_features`` does). u: [8192, 4,
256], head-major as head_matmul returns it (the LRA shape's queries); 2 threads, median of 7 after 2, ms.

    .venv/bin/python docs/bench/features/strided_out.py > docs/bench/features/strided_out.txt
"""

from __future__ import annotations

import torch

from kernelized.experiments.bench import measure

N, H, M = 8192, 4, 256


def direct(u, amp):
    out = u.new_empty(N, H, 2 * M + 1)
    torch.cos(u, out=out[..., :M]).mul_(amp)
    torch.sin(u, out=out[..., M : 2 * M]).mul_(amp)
    out[..., 2 * M].fill_(1.0)
    return out


def fresh(u, amp):
    out = u.new_empty(N, H, 2 * M + 1)
    torch.mul(torch.cos(u), amp, out=out[..., :M])
    torch.mul(torch.sin(u), amp, out=out[..., M : 2 * M])
    out[..., 2 * M].fill_(1.0)
    return out


def main() -> None:
    torch.set_num_threads(2)
    u, amp = torch.randn(H, N, M).transpose(0, 1), torch.rand(H, M)
    assert torch.equal(direct(u, amp), fresh(u, amp))
    times = {"direct": [], "fresh": []}
    for _ in range(3):
        for name, fn in (("direct", direct), ("fresh", fresh)):
            times[name].append(measure.timed(lambda fn=fn: fn(u, amp), "cpu", 2, 7, budget_s=float("inf"))[0] * 1e3)
    for name, ts in times.items():
        print(f"{name}: " + ", ".join(f"{t:.1f}" for t in ts) + " ms (3 rounds)")


if __name__ == "__main__":
    main()

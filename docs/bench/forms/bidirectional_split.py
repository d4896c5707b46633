"""The compiled bidirectional op at two git revisions, over feature counts: forward + backward at the LRA shapes,
each revision in its own process (``git worktree``), rounds alternating, freed memory kept as the Trainer keeps it;
median ms, and the FLOP floor ``12 T F (Dv+1)`` per sequence at
this run's own 2-thread matmul rate.

    .venv/bin/python docs/bench/forms/bidirectional_split.py BEFORE AFTER > docs/bench/forms/bidirectional_split.txt
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # docs/bench: the A/B helper
from revisions import medians_at, op_steps  # noqa: E402

SHAPES = ((8, 1024), (2, 4096))  # (B, T); 4 heads, Dv 32
FEATURES = (32, 65, 128, 257, 513)
H, DV = 4, 32


def child() -> None:
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    assert libc.mallopt(-4, 0) == 1 and libc.mallopt(-1, 2**31 - 1) == 1  # keep freed memory
    import torch

    from kernelized.experiments.bench import measure

    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    out = {"rate": measure.matmul_rate("cpu", torch.float32)}
    for B, T in SHAPES:
        for F in FEATURES:
            step = op_steps(B, T, H, F, DV, False, gen)[0]
            out[f"{B},{T},{F}"] = measure.timed(step, "cpu", 2, 7, float("inf"))[0]
    print(json.dumps(out))


def main() -> None:
    if "--child" in sys.argv:
        return child()
    before, after = sys.argv[1:3]
    rounds = 3
    med = medians_at(__file__, [before, after], rounds)
    rate = med[after]["rate"]
    print(f"Bidirectional op, forward + backward, fp32, {H} heads, Dv {DV}, 2 threads, freed memory kept; "
          f"median of {rounds} rounds x 7 calls; matmul rate {rate / 1e9:.0f} GFLOP/s\n")  # fmt: skip
    print(f"| B, T | F | {before} ms | {after} ms | {after} / {before} | FLOP floor ms | {after} / floor |")
    print("|---|---|---|---|---|---|---|")
    for B, T in SHAPES:
        for F in FEATURES:
            key = f"{B},{T},{F}"
            floor = 12 * B * H * T * F * (DV + 1) / rate
            b, a = med[before][key], med[after][key]
            print(f"| {B}, {T} | {F} | {b * 1e3:.1f} | {a * 1e3:.1f} | {a / b:.2f} | {floor * 1e3:.1f} | "
                  f"{a / floor:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()

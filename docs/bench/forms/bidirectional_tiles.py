"""The bidirectional op's float32 products as tiles.h's register tiles against the BLAS (MKL) gemms they replace:
forward alone (inference) and forward + backward at the LRA shapes, both paths in one process, rounds alternating,
freed memory kept as the Trainer keeps it; median ms, and the FLOP floor ``12 T F (Dv+1)`` per sequence (forward +
backward) at this run's own 2-thread matmul rate.

    .venv/bin/python docs/bench/forms/bidirectional_tiles.py > docs/bench/forms/bidirectional_tiles.txt
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

from kernelized.experiments.bench import measure
from kernelized.ops.linear import bidirectional
from kernelized.train.memory import keep_freed_memory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # docs/bench: the shared op step
from revisions import op_steps  # noqa: E402

SHAPES = ((8, 1024), (2, 4096))  # (B, T); 4 heads, Dv 32
FEATURES = (32, 65, 128, 257, 513)
H, DV, ROUNDS = 4, 32, 5


def main() -> None:
    keep_freed_memory()
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    times: dict[tuple, list[float]] = {}
    rates = []
    for _ in range(ROUNDS):
        rates.append(measure.matmul_rate("cpu", torch.float32))
        for B, T in SHAPES:
            for F in FEATURES:
                step, forward = op_steps(B, T, H, F, DV, False, gen)
                for tiles in (False, True):
                    bidirectional.TILES = tiles
                    times.setdefault((B, T, F, tiles), []).append(measure.timed(step, "cpu", 2, 5, float("inf"))[0])
                    times.setdefault((B, T, F, tiles, "fwd"), []).append(
                        measure.timed(forward, "cpu", 2, 5, float("inf"))[0]
                    )
    rate = statistics.median(rates)
    print(f"Bidirectional op, forward + backward, fp32, {H} heads, Dv {DV}, 2 threads, freed memory kept; median of "
          f"{ROUNDS} rounds x 5 calls, BLAS and tiles alternating; matmul rate {rate / 1e9:.0f} GFLOP/s (median of "
          f"the rounds', {min(rates) / 1e9:.0f}-{max(rates) / 1e9:.0f})\n")  # fmt: skip
    print("| B, T | F | forward: BLAS ms | tiles ms | tiles / BLAS | forward + backward: BLAS ms | tiles ms "
          "| tiles / BLAS | FLOP floor ms | BLAS / floor | tiles / floor |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for B, T in SHAPES:
        for F in FEATURES:
            fb, ft = (statistics.median(times[(B, T, F, t, "fwd")]) for t in (False, True))
            blas, tiled = (statistics.median(times[(B, T, F, t)]) for t in (False, True))
            floor = 12 * B * H * T * F * (DV + 1) / rate
            print(f"| {B}, {T} | {F} | {fb * 1e3:.1f} | {ft * 1e3:.1f} | {ft / fb:.2f} | {blas * 1e3:.1f} "
                  f"| {tiled * 1e3:.1f} | {tiled / blas:.2f} | {floor * 1e3:.1f} | {blas / floor:.2f} "
                  f"| {tiled / floor:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()

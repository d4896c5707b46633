"""The compiled causal chunk op at two git revisions: forward + backward of causal ReBased-sized features (136, as
the bench's targets) at B 1, H 8 over T, and at the MQAR layer shape (B 64, T 256, 8 heads); each revision in its own
process (``git worktree``), rounds alternating, freed memory kept as the Trainer keeps it; median ms.

    .venv/bin/python docs/bench/forms/chunk_openmp.py BEFORE AFTER > docs/bench/forms/chunk_openmp.txt
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # docs/bench: the A/B helper
from revisions import medians_at, op_steps  # noqa: E402

CASES = ((1, 2048, 8), (1, 8192, 8), (1, 32768, 8), (64, 256, 8))  # (B, T, H); 136 features, Dv 64
F, DV = 136, 64


def child() -> None:
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    assert libc.mallopt(-4, 0) == 1 and libc.mallopt(-1, 2**31 - 1) == 1  # keep freed memory
    import torch

    from kernelized.experiments.bench import measure

    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    out = {}
    for B, T, H in CASES:
        step = op_steps(B, T, H, F, DV, True, gen)[0]
        out[f"{B},{T},{H}"] = measure.timed(step, "cpu", 1, 5, float("inf"))[0]
    print(json.dumps(out))


def main() -> None:
    if "--child" in sys.argv:
        return child()
    before, after = sys.argv[1:3]
    rounds = 3
    med = medians_at(__file__, [before, after], rounds)
    print(f"Causal chunk op, forward + backward, fp32, {F} features, Dv {DV}, 2 threads, freed memory kept; "
          f"median of {rounds} rounds x 5 calls\n")  # fmt: skip
    print(f"| B, T, H | {before} ms | {after} ms | {after} / {before} |\n|---|---|---|---|")
    for key in med[after]:
        b, a = med[before][key], med[after][key]
        print(f"| {key.replace(',', ', ')} | {b * 1e3:.1f} | {a * 1e3:.1f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()

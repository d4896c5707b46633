"""The compiled bidirectional op at two git revisions, over feature counts: forward + backward at the LRA shapes,
each revision in its own process (``git worktree``), rounds alternating, freed memory kept as the Trainer keeps it;
median ms, and the FLOP floor ``12 T F (Dv+1)`` per sequence at
this run's own 2-thread matmul rate.

    .venv/bin/python docs/bench/forms/bidirectional_split.py BEFORE AFTER > docs/bench/forms/bidirectional_split.txt
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

SHAPES = ((8, 1024), (2, 4096))  # (B, T); 4 heads, Dv 32
FEATURES = (32, 65, 128, 257, 513)
H, DV = 4, 32


def child() -> None:
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    assert libc.mallopt(-4, 0) == 1 and libc.mallopt(-1, 2**31 - 1) == 1  # keep freed memory
    import torch

    from kernelized import ops
    from kernelized.experiments.bench import measure

    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    out = {"rate": measure.matmul_rate("cpu", torch.float32)}
    for B, T in SHAPES:
        for F in FEATURES:
            q, k = (torch.rand(B, T, H, F, generator=gen).requires_grad_() for _ in range(2))
            v = torch.randn(B, T, H, DV, generator=gen).requires_grad_()
            g = torch.randn(B, T, H, DV, generator=gen)

            def step():
                o = ops.linear_attention(q, k, v, causal=False, mode="chunk")[0]
                torch.autograd.grad(o, [q, k, v], g)

            out[f"{B},{T},{F}"] = measure.timed(step, "cpu", 2, 7, float("inf"))[0]
    print(json.dumps(out))


def run(folder: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.join(folder, "src"))
    proc = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    if "--child" in sys.argv:
        return child()
    before, after = sys.argv[1:3]
    rounds = 3
    results: dict[str, list[dict]] = {before: [], after: []}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {rev: os.path.join(tmp, rev) for rev in (before, after)}
        for rev, folder in folders.items():
            subprocess.run(["git", "worktree", "add", "--detach", folder, rev], check=True, capture_output=True)
        try:
            for _ in range(rounds):
                for rev in (before, after):
                    results[rev].append(run(folders[rev]))
        finally:
            for folder in folders.values():
                subprocess.run(["git", "worktree", "remove", "--force", folder], check=False, capture_output=True)
    med = {rev: {key: statistics.median(r[key] for r in runs) for key in runs[0]} for rev, runs in results.items()}
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

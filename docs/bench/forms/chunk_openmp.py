"""The compiled causal chunk op at two git revisions: forward + backward of causal ReBased-sized features (136, as
the bench's targets) at B 1, H 8 over T, and at the MQAR layer shape (B 64, T 256, 8 heads); each revision in its own
process (``git worktree``), rounds alternating, freed memory kept as the Trainer keeps it; median ms.

    .venv/bin/python docs/bench/forms/chunk_openmp.py BEFORE AFTER > docs/bench/forms/chunk_openmp.txt
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

CASES = ((1, 2048, 8), (1, 8192, 8), (1, 32768, 8), (64, 256, 8))  # (B, T, H); 136 features, Dv 64
F, DV = 136, 64


def child() -> None:
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    assert libc.mallopt(-4, 0) == 1 and libc.mallopt(-1, 2**31 - 1) == 1  # keep freed memory
    import torch

    from kernelized import ops
    from kernelized.experiments.bench import measure

    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    out = {}
    for B, T, H in CASES:
        q, k = (torch.rand(B, T, H, F, generator=gen).requires_grad_() for _ in range(2))
        v = torch.randn(B, T, H, DV, generator=gen).requires_grad_()
        g = torch.randn(B, T, H, DV, generator=gen)

        def step():
            o = ops.linear_attention(q, k, v, causal=True, mode="chunk")[0]
            torch.autograd.grad(o, [q, k, v], g)

        out[f"{B},{T},{H}"] = measure.timed(step, "cpu", 1, 5, float("inf"))[0]
    print(json.dumps(out))


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
                for rev, folder in folders.items():
                    env = dict(os.environ, PYTHONPATH=os.path.join(folder, "src"))
                    proc = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True,
                                          text=True, check=True)  # fmt: skip
                    results[rev].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        finally:
            for folder in folders.values():
                subprocess.run(["git", "worktree", "remove", "--force", folder], check=False, capture_output=True)
    med = {rev: {key: statistics.median(r[key] for r in runs) for key in runs[0]} for rev, runs in results.items()}
    print(f"Causal chunk op, forward + backward, fp32, {F} features, Dv {DV}, 2 threads, freed memory kept; "
          f"median of {rounds} rounds x 5 calls\n")  # fmt: skip
    print(f"| B, T, H | {before} ms | {after} ms | {after} / {before} |\n|---|---|---|---|")
    for key in med[after]:
        b, a = med[before][key], med[after][key]
        print(f"| {key.replace(',', ', ')} | {b * 1e3:.1f} | {a * 1e3:.1f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()

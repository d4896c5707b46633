"""Before and after: every feature map's query + key features at the LRA shape, at two git revisions.

Each revision's package runs in its own process (``git worktree`` of the revision, ``PYTHONPATH`` to its ``src``),
rounds alternate between the revisions so machine noise hits both alike, and the median over rounds is printed
with the op's forward + backward time on the same features beside it (the target: features no dearer than the op).
Shape: B 8, T 1024, 4 heads, q/k head size 32, Dv 32, fp32, train mode, 2 torch threads.

    .venv/bin/python docs/bench/features/ab_feature_maps.py BEFORE AFTER > docs/bench/features/ab_feature_maps.txt

``--trainer-settings`` runs both revisions' processes with glibc set as the Trainer now sets it: freed memory kept
(``kernelized.train.memory.keep_freed_memory``, by ``mallopt`` here since an older revision may lack it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

B, T, H, D, DV = 8, 1024, 4, 32, 32


def time_kernel(name: str, gen) -> dict[str, float]:
    """{forward, forward+backward, op} seconds (medians of 5 after 2 warm-ups) of one kernel's features."""
    import torch

    from kernelized import kernels, ops
    from kernelized.experiments.bench import measure

    torch.manual_seed(0)
    fm = kernels.build(name, head_dim=D, num_heads=H).train()
    q, k = (torch.randn(B, T, H, D, generator=gen).requires_grad_() for _ in range(2))
    v = torch.randn(B, T, H, DV, generator=gen).requires_grad_()
    params = [p for p in fm.parameters() if p.requires_grad]
    # what the layer calls: query_key (one spectrum for both roles) where the revision has it
    both = getattr(fm, "query_key", lambda q, k: (fm.query(q), fm.key(k)))

    def fwd():
        with torch.no_grad():
            fm.on_forward()
            return both(q, k)

    with torch.no_grad():
        qf, kf = (x.detach().requires_grad_() for x in (fm.query(q), fm.key(k)))
    grads = (torch.randn(qf.shape, generator=gen), torch.randn(kf.shape, generator=gen))  # made once, untimed

    def fwd_bwd():
        fm.on_forward()
        torch.autograd.grad(both(q, k), [q, k, *params], grads, allow_unused=True)

    g = torch.randn(B, T, H, DV, generator=gen)

    def op():
        o = ops.linear_attention(qf, kf, v, causal=False, mode="chunk")[0]
        torch.autograd.grad(o, [qf, kf, v], g)

    calls = (("forward", fwd), ("forward+backward", fwd_bwd), ("op", op))
    return {n: measure.timed(f, "cpu", 2, 5, float("inf"))[0] for n, f in calls}


def child(names: list[str], keep_freed_memory: bool) -> None:
    """Print JSON {kernel: {forward, forward+backward, op}} for ``names`` (default: every registered kernel)."""
    if keep_freed_memory:  # M_MMAP_MAX = 0, M_TRIM_THRESHOLD = 2^31 - 1
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        assert libc.mallopt(-4, 0) == 1 and libc.mallopt(-1, 2**31 - 1) == 1
    import torch

    from kernelized import kernels

    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    print(json.dumps({name: time_kernel(name, gen) for name in names or kernels.available()}))


def run(revision: str, folder: str, names: list[str], keep: bool) -> dict:
    src = os.path.join(folder, "src")
    env = dict(os.environ, PYTHONPATH=src)
    argv = [sys.executable, __file__, "--child", *(["--kernels", ",".join(names)] if names else [])]
    if keep:
        argv.append("--trainer-settings")
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("revisions", nargs="*")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--kernels", default="", help="comma-separated kernel names (default: all)")
    parser.add_argument(
        "--trainer-settings", action="store_true", help="glibc set as the Trainer sets it"
    )
    args = parser.parse_args()
    names = [n for n in args.kernels.split(",") if n]
    if args.child:
        return child(names, args.trainer_settings)
    before, after = args.revisions
    results: dict[str, list[dict]] = {before: [], after: []}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        for rev in (before, after):
            folders[rev] = os.path.join(tmp, rev)
            subprocess.run(["git", "worktree", "add", "--detach", folders[rev], rev], check=True, capture_output=True)
        try:
            for _ in range(args.rounds):
                for rev in (before, after):
                    results[rev].append(run(rev, folders[rev], names, args.trainer_settings))
        finally:
            for folder in folders.values():
                subprocess.run(["git", "worktree", "remove", "--force", folder], check=False, capture_output=True)
    med = {rev: {k: {m: statistics.median(r[k][m] for r in runs) for m in runs[0][k]} for k in runs[0]}
           for rev, runs in results.items()}  # fmt: skip
    memory = "freed memory kept (as the Trainer sets glibc)" if args.trainer_settings else "glibc's defaults"
    print(f"B {B}, T {T}, {H} heads, d {D}, Dv {DV}; fp32, 2 threads; {memory}; "
          f"ms, median of {args.rounds} rounds x 5 calls\n")  # fmt: skip
    print(f"| kernel | features fwd {before} | fwd {after} | features fwd+bwd {before} | fwd+bwd {after} | "
          f"op fwd+bwd {after} | features / op {after} |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for k in med[after]:
        b, a = med[before].get(k), med[after][k]
        cell = lambda r, m: f"{r[m] * 1e3:.1f}" if r else "–"  # noqa: E731
        print(f"| {k} | {cell(b, 'forward')} | {cell(a, 'forward')} | {cell(b, 'forward+backward')} | "
              f"{cell(a, 'forward+backward')} | {cell(a, 'op')} | {a['forward+backward'] / a['op']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()

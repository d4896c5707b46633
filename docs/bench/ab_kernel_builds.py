"""Side-by-side timing of builds of the compiled CPU chunk kernel at git revisions, and of the PyTorch path.

Each revision's ``src/kernelized/cpu/chunk.cpp`` is built with the loader's flags and swapped into one
process in turn; all variants run interleaved on the same inputs, so machine noise hits them alike. Prints the
median forward+backward time of causal ReBased-sized linear attention (B=1, H=8, F=136, Dv=64, fp32).

    python docs/bench/ab_kernel_builds.py --threads 2 0bf5587 a56e0e9 HEAD
    THP_MEM_ALLOC_ENABLE=0 python docs/bench/ab_kernel_builds.py 0bf5587 HEAD   # without huge pages

The table in docs/benchmarks.md ("What made it fast") came from this script.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import tempfile
import time

import torch

from kernelized import cpu, ops


def build(revision: str, folder: str) -> dict:
    """The f32 kernels of chunk.cpp at ``revision``, built with the loader's flags."""
    for path in ("src/kernelized/cpu/chunk.cpp", "src/kernelized/ops/cpu/chunk.cpp"):  # moved after a666955
        shown = subprocess.run(["git", "show", f"{revision}:{path}"], capture_output=True, text=True)
        if shown.returncode == 0:
            source = shown.stdout
            break
    else:
        raise SystemExit(f"no chunk.cpp at revision {revision}")
    cpp, so = os.path.join(folder, f"{revision}.cpp"), os.path.join(folder, f"{revision}.so")
    with open(cpp, "w") as f:
        f.write(source)
    subprocess.run([os.environ.get("CXX", "g++"), *cpu.FLAGS, cpp, "-o", so], check=True)
    lib = ctypes.CDLL(so)
    fns = {}
    for name in ("chunk_forward", "chunk_backward"):
        argtypes = cpu._SIGNATURES[name]
        fn = getattr(lib, f"{name}_f32")
        fn.argtypes, fn.restype = argtypes, None
        fns[name] = fn
    return fns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="+", help="git revisions of chunk.cpp")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--T", type=int, default=8192)
    parser.add_argument("--calls", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lib = cpu.library()
    assert lib is not None, "the compiled kernels do not build here"
    with tempfile.TemporaryDirectory() as folder:
        variants = {"PyTorch path": None} | {rev: build(rev, folder) for rev in args.revisions}
        torch.manual_seed(0)
        B, H, F, Dv = 1, 8, 136, 64
        q = torch.rand(B, args.T, H, F).div_(F).requires_grad_()
        k = torch.rand(B, args.T, H, F).requires_grad_()
        v = torch.randn(B, args.T, H, Dv, requires_grad=True)

        def run(name: str) -> float:
            fns = variants[name]
            t0 = time.perf_counter()
            if fns is None:
                with cpu.pytorch_path():
                    o = ops.linear_attention(q, k, v, mode="chunk")[0]
            else:
                for fn_name, fn in fns.items():
                    getattr(lib, fn_name)["f32"] = fn
                o = ops.linear_attention(q, k, v, mode="chunk")[0]
            torch.autograd.grad(o.sum(), (q, k, v))
            return time.perf_counter() - t0

        for name in variants:  # warm-up
            run(name), run(name)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.calls):
            for name in variants:
                times[name].append(run(name))
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE")
    print(f"T={args.T}, {args.threads} threads, THP_MEM_ALLOC_ENABLE={thp}, median of {args.calls} interleaved calls:")
    for name, ts in times.items():
        print(f"  {name:>14}: {statistics.median(ts) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()

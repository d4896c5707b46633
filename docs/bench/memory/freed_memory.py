"""What glibc's handling of freed memory costs a training step's large tensors on this machine.

Each mode runs in its own process (a mallopt setting cannot be undone): allocate a tensor of the size, fill it,
free it, again; median time of 7 after 2, and the minor page faults of the last round. Modes: glibc's defaults
with 4 KiB pages; with huge pages (``THP_MEM_ALLOC_ENABLE=1``, what ``import kernelized`` sets); and
``keep_freed_memory()`` (what the Trainer and ``make bench`` set) with huge pages.

    .venv/bin/python docs/bench/memory/freed_memory.py > docs/bench/memory/freed_memory.txt
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

SIZES_MB = (4, 17, 67, 134)  # 67 MB: the LRA shape's gmm-rks query features [8, 1024, 4, 513] in float32
MODES = {
    "glibc defaults, 4 KiB pages": dict(THP_MEM_ALLOC_ENABLE="0", KEEP="0"),
    "glibc defaults, huge pages": dict(THP_MEM_ALLOC_ENABLE="1", KEEP="0"),
    "keep_freed_memory, huge pages": dict(THP_MEM_ALLOC_ENABLE="1", KEEP="1"),
}


def child() -> None:
    import resource
    import statistics
    import time

    import torch

    from kernelized.train import memory

    torch.set_num_threads(2)
    if os.environ["KEEP"] == "1":
        assert memory.keep_freed_memory()
    out = {}
    for mb in SIZES_MB:
        n = mb * 10**6 // 4
        times = []
        for _ in range(9):
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            x = torch.empty(n).fill_(1.0)
            del x
            times.append(time.perf_counter() - start)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        out[mb] = dict(ms=statistics.median(times[2:]) * 1e3, faults=faults)
    print(json.dumps(out))


def main() -> None:
    if "--child" in sys.argv:
        return child()
    rows = {}
    for mode, env in MODES.items():
        proc = subprocess.run([sys.executable, __file__, "--child"], env=dict(os.environ, **env), check=True,
                              capture_output=True, text=True)  # fmt: skip
        rows[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    print("Allocate, fill and free one float32 tensor; 2 threads; median of 7 after 2; page faults of the last round\n")
    print("| mode | " + " | ".join(f"{mb} MB" for mb in SIZES_MB) + " |")
    print("|---|" + "---|" * len(SIZES_MB))
    for mode, r in rows.items():
        cells = [f"{r[str(mb)]['ms']:.1f} ms ({r[str(mb)]['faults']} faults)" for mb in SIZES_MB]
        print(f"| {mode} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

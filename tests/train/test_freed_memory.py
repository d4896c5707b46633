"""glibc keeps freed blocks for reuse once keep_freed_memory() is called (the Trainer's and make bench's setting):
a large tensor allocated again faults no pages in, where glibc's default mmaps and faults in every page anew."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kernelized.train import memory

_SCRIPT = """
import resource, sys, torch
from kernelized.train import memory
kept = memory.keep_freed_memory() if sys.argv[1] == "keep" else None
faults = []
for _ in range(7):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.empty(16 * 2**20).fill_(1.0)  # 64 MiB: above glibc's largest mmap threshold
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
with memory.fresh_allocations():  # what peak-memory probes use: fresh pages again
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.empty(16 * 2**20).fill_(1.0)
    del x
    probed = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(kept, ",".join(map(str, faults[1:])), probed)
"""


def _run(mode: str, **env: str) -> list[str]:
    env = dict(os.environ, THP_MEM_ALLOC_ENABLE="0", **env)  # 4 KiB pages: one fault per page, countable
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True, env=env)
    return proc.stdout.split()


@pytest.mark.skipif(memory._libc() is None, reason="not glibc")
def test_freed_memory_is_reused_without_page_faults():
    kept, faults, probed = _run("keep")
    assert kept == "True"
    # 64 MiB is 16,384 pages: most rounds fault none in again (an occasional round of torch's aligned allocations
    # lands on fresh pages; plain malloc never did)
    assert sum(int(f) < 100 for f in faults.split(",")) >= 4, faults
    assert int(probed) > 10_000  # inside fresh_allocations a probe sees every page of a call's tensors again
    _, default_faults, _ = _run("default")
    assert all(int(f) > 10_000 for f in default_faults.split(","))  # glibc's default: every page, every time


@pytest.mark.skipif(memory._libc() is None, reason="not glibc")
def test_keep_freed_memory_can_be_turned_off():
    kept, faults, _ = _run("keep", KERNELIZED_KEEP_FREED_MEMORY="0")
    assert kept == "False" and all(int(f) > 10_000 for f in faults.split(","))

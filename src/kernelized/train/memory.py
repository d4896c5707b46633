"""This process's memory on CPUs: its peak resident set per run rather than per process lifetime, and glibc's
handling of freed blocks.

``resource.getrusage(...).ru_maxrss`` never goes down, so in a sweep worker that runs several runs it reports the
largest run so far. On Linux the high-water mark ``VmHWM`` can be reset through ``/proc/self/clear_refs``.

Freed memory: glibc serves blocks above its mmap threshold (at most 32 MiB) from fresh ``mmap`` s and returns them
to the system when freed, so every large tensor of a training step (features, their gradients, scores) is
page-faulted in anew, every step: 16,384 page faults for 64 MiB with 4 KiB pages (huge pages, which ``import
kernelized`` asks torch for, make the faults fewer and cheaper, not free; ``docs/bench/memory/freed_memory.py``
times both). :func:`keep_freed_memory` (what the Trainer and ``make bench`` call) serves every block from the heap
and keeps freed pages for the next step; the process's resident set then stays at its peak. Set
``KERNELIZED_KEEP_FREED_MEMORY=0`` to leave glibc's defaults.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import resource
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4  # glibc's mallopt parameters
_GLIBC_MMAP_MAX = 65536  # glibc's default count of mmapped blocks
_kept = False


@functools.lru_cache(maxsize=1)
def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") else None
    except OSError:
        return None


def _mallopt(param: int, value: int) -> bool:
    """glibc ``mallopt``; False where there is no glibc or it refuses the value."""
    libc = _libc()
    return libc is not None and libc.mallopt(param, value) == 1


def keep_freed_memory() -> bool:
    """Serve large blocks from the heap and keep freed memory for reuse (see the module docstring); True if glibc
    took it. A no-op returning False without glibc or with ``KERNELIZED_KEEP_FREED_MEMORY=0``."""
    global _kept
    if os.environ.get("KERNELIZED_KEEP_FREED_MEMORY", "1") == "0":
        return False
    _kept = _mallopt(_M_MMAP_MAX, 0) and _mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    return _kept


def release_freed_memory() -> None:
    """Return the free memory glibc holds to the system (``malloc_trim(0)``); a no-op without glibc."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@contextlib.contextmanager
def fresh_allocations():
    """Within this block, blocks over 64 KiB come from fresh mmaps, so that memory freed and kept before cannot hide
    a call's peak from the resident set (the kept free memory goes back to the system first); after it, the
    previous mode (kept, or glibc's ceiling of 32 MiB)."""
    release_freed_memory()
    _mallopt(_M_MMAP_MAX, _GLIBC_MMAP_MAX)
    _mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
    try:
        yield
    finally:
        _mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)  # glibc's own ceiling for its dynamic threshold
        if _kept:
            _mallopt(_M_MMAP_MAX, 0)


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ``VmHWM``) to its current RSS; False where unsupported. Free memory that
    glibc keeps (:func:`keep_freed_memory`) goes back to the system first, so that an earlier run's pages do not
    count as this one's."""
    release_freed_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def proc_status_kb(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ...) as an int; None where unreadable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mb() -> float:
    """Peak RSS in MiB since the last :func:`reset_peak_rss` (Linux), else the lifetime peak."""
    kb = proc_status_kb("VmHWM")
    if kb is not None:
        return kb / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)

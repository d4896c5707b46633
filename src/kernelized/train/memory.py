"""Peak resident memory of this process on CPUs, per run rather than per process lifetime.

``resource.getrusage(...).ru_maxrss`` never goes down, so in a sweep worker that runs several runs it reports the
largest run so far. On Linux the high-water mark ``VmHWM`` can be reset through ``/proc/self/clear_refs``.
"""

from __future__ import annotations

import resource
import sys


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ``VmHWM``) to its current RSS; False where unsupported."""
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

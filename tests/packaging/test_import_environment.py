"""What ``import kernelized`` sets for torch before torch allocates (huge pages for large tensors), that a user's own
setting wins, and what it leaves alone: libgomp's wait policy (``OMP_WAIT_POLICY=PASSIVE`` sped the kernels' layers
at the LRA shape but slowed softmax and the PTB LM's training steps: docs/bench/threads/omp_wait.txt)."""

from __future__ import annotations

import os
import subprocess
import sys

_SCRIPT = "import os, kernelized; print(os.environ['THP_MEM_ALLOC_ENABLE'], os.environ.get('OMP_WAIT_POLICY'))"


def _run(**env: str) -> list[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("THP_MEM_ALLOC_ENABLE", "OMP_WAIT_POLICY")}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=dict(base, **env), capture_output=True, text=True,
                          check=True)  # fmt: skip
    return proc.stdout.split()


def test_import_sets_huge_pages_and_leaves_openmp_alone():
    assert _run() == ["1", "None"]


def test_a_users_settings_are_kept():
    assert _run(THP_MEM_ALLOC_ENABLE="0", OMP_WAIT_POLICY="ACTIVE") == ["0", "ACTIVE"]

"""A/B of a benchmark script's ``--child`` mode at two git revisions: each revision's package in its own process
(``git worktree`` of the revision, ``PYTHONPATH`` to its ``src``), rounds alternating so that machine noise hits
both alike; the child prints one JSON object of numbers on its last line, and the result is each key's median over
rounds. Used by the A/B scripts under docs/bench (``forms/bidirectional_split.py``, ``forms/chunk_openmp.py``), which
also share the op's timed step (:func:`op_steps`, with ``forms/bidirectional_tiles.py``)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile


def op_steps(B: int, T: int, H: int, F: int, Dv: int, causal: bool, gen):
    """``(forward + backward, forward alone)`` of ``ops.linear_attention(mode="chunk")`` on random features
    ``[B, T, H, F]`` and values ``[B, T, H, Dv]`` (uniform q and k, normal v and output gradient, from ``gen``).
    Imports only what every benchmarked revision has."""
    import torch

    from kernelized import ops

    q, k = (torch.rand(B, T, H, F, generator=gen).requires_grad_() for _ in range(2))
    v = torch.randn(B, T, H, Dv, generator=gen).requires_grad_()
    g = torch.randn(B, T, H, Dv, generator=gen)

    def step():
        o = ops.linear_attention(q, k, v, causal=causal, mode="chunk")[0]
        torch.autograd.grad(o, [q, k, v], g)

    def forward():
        with torch.no_grad():
            ops.linear_attention(q, k, v, causal=causal, mode="chunk")

    return step, forward


def medians_at(script: str, revisions: list[str], rounds: int) -> dict[str, dict[str, float]]:
    """``{revision: {key: median over rounds}}`` of ``python script --child`` run at each revision."""
    results: dict[str, list[dict]] = {rev: [] for rev in revisions}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {rev: os.path.join(tmp, rev) for rev in revisions}
        for rev, folder in folders.items():
            subprocess.run(["git", "worktree", "add", "--detach", folder, rev], check=True, capture_output=True)
        try:
            for _ in range(rounds):
                for rev, folder in folders.items():
                    env = dict(os.environ, PYTHONPATH=os.path.join(folder, "src"))
                    proc = subprocess.run([sys.executable, script, "--child"], env=env, capture_output=True,
                                          text=True, check=True)  # fmt: skip
                    results[rev].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        finally:
            for folder in folders.values():
                subprocess.run(["git", "worktree", "remove", "--force", folder], check=False, capture_output=True)
    return {rev: {key: statistics.median(r[key] for r in runs) for key in runs[0]} for rev, runs in results.items()}

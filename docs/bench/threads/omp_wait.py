"""How long torch's idle OpenMP threads spin, against the compiled kernels' worker threads: attention layers'
forward + backward (train mode, 2 threads) in one process per OpenMP setting, freed memory kept as the Trainer
keeps it; median of 7 after 2, ms.

libgomp reads ``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT`` once, when torch loads it. After each parallel torch op its
idle threads spin (300,000 rounds by default) on a core that the kernels' Python worker threads
(``kernelized.cpu.run_parallel``) need; on 2 cores one spinning thread takes half the machine.

    .venv/bin/python docs/bench/threads/omp_wait.py > docs/bench/threads/omp_wait.txt
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

SETTINGS = {  # label: environment
    "libgomp default (spin)": {},
    "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
}
SHAPES = {  # label: (B, T, heads, q/k head size, causal); d_model 128
    "MQAR B 64 T 256": (64, 256, 8, 16, True),
    "LRA B 8 T 1024": (8, 1024, 4, 32, False),
}
MIXERS = ("softmax", "rebased", "gmm-rks", "gmm-prf", "performer", "elu")


def child() -> None:
    import torch

    from kernelized.experiments.bench import measure
    from kernelized.layers import KernelAttention, SoftmaxAttention
    from kernelized.train.memory import keep_freed_memory

    keep_freed_memory()
    torch.set_num_threads(2)
    out = {}
    for label, (B, T, H, d, causal) in SHAPES.items():
        torch.manual_seed(0)
        x = torch.randn(B, T, 128, requires_grad=True)
        for mixer in MIXERS:
            layer = (SoftmaxAttention(128, H, causal=causal) if mixer == "softmax"
                     else KernelAttention(128, H, d, kernel=mixer, causal=causal))  # fmt: skip

            def step():
                layer(x).sum().backward()

            out[f"{label}|{mixer}"] = measure.timed(step, "cpu", 2, 7, budget_s=float("inf"))[0] * 1e3
    print(json.dumps(out))


def main() -> None:
    if "--child" in sys.argv:
        return child()
    rows = {}
    for label, env in SETTINGS.items():
        environ = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        proc = subprocess.run([sys.executable, __file__, "--child"], env=dict(environ, **env), check=True,
                              capture_output=True, text=True)  # fmt: skip
        rows[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    print("Attention layer forward + backward, train mode, 2 threads, freed memory kept; ms, median of 7 after 2\n")
    for shape in SHAPES:
        print(f"{shape}:\n\n| OpenMP | " + " | ".join(MIXERS) + " |\n|---|" + "---|" * len(MIXERS))
        for label, r in rows.items():
            print(f"| {label} | " + " | ".join(f"{r[f'{shape}|{m}']:.1f}" for m in MIXERS) + " |")
        print()


if __name__ == "__main__":
    main()

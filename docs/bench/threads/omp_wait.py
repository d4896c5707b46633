"""How long torch's idle OpenMP threads spin, against the compiled kernels' worker threads: attention layers'
forward + backward (train mode, 2 threads) and the experiments' own models' training steps (``make bench``'s
models section: MQAR demo, LRA ListOps, PTB LM at their own lengths, 1024 tokens a step), in one process per OpenMP
setting, freed memory kept as the Trainer keeps it; median of 7 after 2, ms.

libgomp reads ``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT`` once, when torch loads it. After each parallel torch op its
idle threads spin (300,000 rounds by default) on a core that the kernels' Python worker threads
(``kernelized.cpu.run_parallel``) need; on 2 cores one spinning thread takes half the machine. Sleeping threads
instead pay a wake-up at the next op, which the many small ops of a small model feel.

    .venv/bin/python docs/bench/threads/omp_wait.py > docs/bench/threads/omp_wait.txt
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

SETTINGS = {  # label: environment
    "libgomp default (spin)": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
}
ROUNDS = 3  # processes per setting, alternating; the cells are medians over rounds of each round's median
SHAPES = {  # label: (B, T, heads, q/k head size, causal); d_model 128
    "MQAR B 64 T 256": (64, 256, 8, 16, True),
    "LRA B 8 T 1024": (8, 1024, 4, 32, False),
}
MIXERS = ("softmax", "rebased", "gmm-rks", "gmm-prf", "performer", "elu")
MODELS = ("mqar", "lra", "lm")


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
    out |= model_steps()
    print(json.dumps(out))


def model_steps() -> dict[str, float]:
    """``"<model> model|<mixer>" -> ms`` of a training step of each experiment's own model at its own length."""
    from kernelized.experiments.bench import load_config, measure
    from kernelized.experiments.bench.cases import _model_step, model_configs, own_length

    p = load_config("cpu", [], None)
    configs, out = model_configs(p["models"]), {}
    for name in MODELS:
        for mixer in MIXERS:
            step, _, _ = _model_step(p, name, configs[name], mixer, own_length(name, configs[name]))
            out[f"{name} model|{mixer}"] = measure.timed(step, "cpu", 2, 7, budget_s=float("inf"))[0] * 1e3
    return out


def main() -> None:
    if "--child" in sys.argv:
        return child()
    runs: dict[str, list[dict]] = {label: [] for label in SETTINGS}
    environ = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    for _ in range(ROUNDS):
        for label, env in SETTINGS.items():
            proc = subprocess.run([sys.executable, __file__, "--child"], env=dict(environ, **env), check=True,
                                  capture_output=True, text=True)  # fmt: skip
            runs[label].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    rows = {label: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for label, rs in runs.items()}
    print("Attention layer forward + backward, train mode, and model training steps (AdamW, 1024 tokens); 2 threads, "
          f"freed memory kept; ms, median over {ROUNDS} alternating processes of the median of 7 after 2\n")  # fmt: skip
    for shape in [*SHAPES, *(f"{m} model" for m in MODELS)]:
        print(f"{shape}:\n\n| OpenMP | " + " | ".join(MIXERS) + " |\n|---|" + "---|" * len(MIXERS))
        for label, r in rows.items():
            print(f"| {label} | " + " | ".join(f"{r[f'{shape}|{m}']:.1f}" for m in MIXERS) + " |")
        print()


if __name__ == "__main__":
    main()

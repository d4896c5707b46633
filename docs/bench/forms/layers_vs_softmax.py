"""Issue 17's table, rerun: each kernel's attention layer over softmax's, forward + backward, train mode, 2 threads,
side by side in one process (median of 7 calls after 2), in ``mode="auto"`` and in the ``chunk`` form that was the
default before it. Freed memory kept, as the Trainer sets glibc (``kernelized.train.memory.keep_freed_memory``).

    .venv/bin/python docs/bench/forms/layers_vs_softmax.py > docs/bench/forms/layers_vs_softmax.txt
"""

from __future__ import annotations

import torch

from kernelized.experiments.bench import measure
from kernelized.layers import KernelAttention, SoftmaxAttention
from kernelized.train.memory import keep_freed_memory

SHAPES = {  # label: (B, T, heads, q/k head size, causal); d_model 128 throughout
    "MQAR: B 64, T 256, 8 heads of 16, causal": (64, 256, 8, 16, True),
    "LRA: B 8, T 1024, 4 heads of 32, bidirectional": (8, 1024, 4, 32, False),
    "LRA: B 2, T 4096, 4 heads of 32, bidirectional": (2, 4096, 4, 32, False),
}
KERNELS = ("rebased", "taylor", "gmm-rks", "rff", "fastfood-rks", "performer", "elu")


def seconds(layer, x: torch.Tensor, **kwargs) -> float:
    def step():
        layer(x, **kwargs).sum().backward()

    return measure.timed(step, "cpu", 2, 7, budget_s=float("inf"))[0]


def main() -> None:
    keep_freed_memory()
    torch.set_num_threads(2)
    print("| shape | softmax ms | " + " | ".join(KERNELS) + " |")
    print("|---|---|" + "---|" * len(KERNELS))
    for label, (B, T, H, d, causal) in SHAPES.items():
        torch.manual_seed(0)
        x = torch.randn(B, T, 128, requires_grad=True)
        softmax = seconds(SoftmaxAttention(128, H, causal=causal), x)
        cells = []
        for kernel in KERNELS:
            layer = KernelAttention(128, H, d, kernel=kernel, causal=causal)
            auto, chunk = seconds(layer, x), seconds(layer, x, mode="chunk")
            cells.append(f"{auto / softmax:.2f}x ({layer.form_for(x)}; chunk {chunk / softmax:.2f}x)")
        print(f"| {label} | {softmax * 1e3:.0f} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n(x = the layer's time over softmax's; auto's form in brackets.) torch {torch.__version__}")


if __name__ == "__main__":
    main()

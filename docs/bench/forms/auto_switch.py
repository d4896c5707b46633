"""Where ``mode="auto"``'s cost model (``kernelized.ops.cost``) switches from the implicit polynomial form to the chunk
form, for the layers of ``crossover.py``: the first T (in steps of 16) at which it picks ``chunk``. Pure
arithmetic on the committed constants; no timing.

    .venv/bin/python docs/bench/forms/auto_switch.py > docs/bench/forms/auto_switch.txt
"""

from __future__ import annotations

from kernelized import kernels
from kernelized.ops import cost

LAYERS = {  # name: (kernel, causal, heads, head size) as in crossover.py
    "rebased, causal, 8 heads of 16": ("rebased", True, 8, 16),
    "taylor, causal, 8 heads of 16": ("taylor", True, 8, 16),
    "rebased, bidirectional, 4 heads of 32": ("rebased", False, 4, 32),
    "taylor, bidirectional, 4 heads of 32": ("taylor", False, 4, 32),
}


def main() -> None:
    print(f"cost model on cpu, feature_element {cost.CPU.feature_element}\n")
    print("| layer | features | auto switches to chunk at T = |\n|---|---|---|")
    for name, (kernel, causal, heads, d) in LAYERS.items():
        F = kernels.build(kernel, head_dim=d, num_heads=heads).feature_dim
        T = next(T for T in range(16, 1 << 16, 16) if cost.choose_form(T, d, F, d, causal, polynomial=True) == "chunk")
        print(f"| {name} | {F} | {T} |")


if __name__ == "__main__":
    main()

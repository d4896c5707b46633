"""Layer forward+backward time of each form over softmax's (SDPA), measured side by side in one process, 2 threads.

.venv/bin/python docs/results/checks/forms_vs_softmax.py     # the issue-17 shapes; prints ratios per kernel
"""

import time

import torch

from kernelized.layers.attention import KernelAttention, SoftmaxAttention

torch.set_num_threads(2)


def t(fn, n=5):
    fn()
    ts = []
    for _ in range(n):
        s = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - s)
    ts.sort()
    return ts[len(ts) // 2]


for B, T in [(64, 256), (16, 1024), (4, 4096)]:
    x = torch.randn(B, T, 128, requires_grad=True)
    sm = SoftmaxAttention(128, num_heads=8, causal=True)

    def step(m, x=x, **kw):
        def f():
            y = m(x, **kw)
            y.sum().backward()

        return f

    base = t(step(sm))
    row = [f"B{B} T{T} softmax {base * 1e3:.0f}ms"]
    for k in ["rebased", "taylor", "elu", "gmm-rks"]:
        for mode in ["parallel", "chunk"]:
            m = KernelAttention(128, num_heads=8, feature_dim=16, kernel=k, causal=True, mode=mode)
            if mode == "parallel" and T > 1024 and k in ("elu", "gmm-rks"):
                continue
            row.append(f"{k}/{mode} {t(step(m)) / base:.2f}x")
    print("  ".join(row), flush=True)

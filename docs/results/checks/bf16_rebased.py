"""bf16 ReBased: relative errors of a causal layer in bf16 against float64, parallel vs chunk, T = 200 and 64.

.venv/bin/python docs/results/checks/bf16_rebased.py
# at the commit before "bf16 ReBased fixed" (git checkout <that>^) the chunk gradient error at T = 200 is 0.94
"""

import copy

import torch

from kernelized.layers.attention import KernelAttention


def rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


for T, padded in ((200, True), (200, False), (64, False)):
    for mode in ("parallel", "chunk"):
        torch.manual_seed(0)
        ref = KernelAttention(64, num_heads=4, feature_dim=16, kernel="rebased", causal=True, mode=mode).double().eval()
        x = torch.randn(2, T, 64, dtype=torch.float64, requires_grad=True)
        mask = torch.zeros(2, T, dtype=torch.bool)
        if padded:
            mask[1, 170:] = True
        o_ref = ref(x, key_padding_mask=mask)
        (g_ref,) = torch.autograd.grad(o_ref.square().sum(), x)
        m = copy.deepcopy(ref).to(torch.bfloat16)
        xb = x.detach().to(torch.bfloat16).requires_grad_()
        o = m(xb, key_padding_mask=mask)
        (g,) = torch.autograd.grad(o.float().square().sum(), xb)
        err = (g.double() - g_ref).norm(dim=-1) / g_ref.norm(dim=-1)
        print(
            T,
            padded,
            mode,
            "out",
            round(rel(o, o_ref), 4),
            "grad",
            round(rel(g, g_ref), 4),
            "worst token",
            err.max().item(),
            "where",
            divmod(int(err.argmax()), T),
        )

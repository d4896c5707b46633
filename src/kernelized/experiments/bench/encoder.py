"""The encoder section: every feature map and the bidirectional op at the LRA shapes, split apart.

For each kernel at each ``(B, T)`` of the preset (heads and head sizes of the LRA layer): the query + key feature
maps alone, the bidirectional linear attention op on their features (the compiled kernel, and the PyTorch
reference beside it), forward and forward + backward, with the op's two floors: FLOPs, ``4 T F (Dv+1)`` per head
forward and twice that backward, at the machine's measured matmul rate; and memory, the bytes the op must move at
the least (forward: read q, k, v, write o; backward: read q, k, v, o, do, write dq, dk, dv) at its measured copy
bandwidth. Answers two questions of issue 17: is the op near its floor, and do the features cost more than it.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from kernelized import cpu as cpu_kernels
from kernelized import kernels, ops
from kernelized.experiments.bench import measure
from kernelized.experiments.bench.cases import DTYPES


def _randn(shape, gen: torch.Generator, like: dict) -> torch.Tensor:
    """Standard normal from the CPU generator ``gen``, then on the preset's device and dtype (``like``)."""
    return torch.randn(*shape, generator=gen).to(**like)


def _inputs(B: int, T: int, H: int, d: int, Dv: int, gen: torch.Generator, like: dict) -> list[torch.Tensor]:
    return [_randn(shape, gen, like).requires_grad_() for shape in ((B, T, H, d), (B, T, H, d), (B, T, H, Dv))]


def _features_calls(fm, q, k, grads) -> dict:
    """Forward and forward + backward of ``fm.query_key(q, k)`` (the draw policy applied once, as a layer does),
    the incoming gradients ``grads`` made beforehand."""
    params = [p for p in fm.parameters() if p.requires_grad]

    def fwd():
        with torch.no_grad():
            fm.on_forward()
            return fm.query_key(q, k)

    def fwd_bwd():
        fm.on_forward()
        torch.autograd.grad(fm.query_key(q, k), [q, k, *params], grads, allow_unused=True)

    return {"forward": fwd, "forward+backward": fwd_bwd}


def _op_calls(qf, kf, v, grad_out) -> dict:
    def fwd():
        with torch.no_grad():
            return ops.linear_attention(qf, kf, v, causal=False, mode="chunk")

    def fwd_bwd():
        o = ops.linear_attention(qf, kf, v, causal=False, mode="chunk")[0]
        torch.autograd.grad(o, [qf, kf, v], grad_out)

    return {"forward": fwd, "forward+backward": fwd_bwd}


def _time_calls(calls: dict, e: dict, device: str, pytorch_path: bool = False) -> dict[str, float]:
    with cpu_kernels.pytorch_path() if pytorch_path else torch.enable_grad():
        return {
            m: measure.timed(fn, device, e["warmup"], e["repeats"], budget_s=float("inf"))[0] for m, fn in calls.items()
        }


def op_bytes(B: int, T: int, H: int, F: int, Dv: int, backward: bool, element: int = 4) -> float:
    """The least the op moves: forward reads q, k ``[B, T, H, F]`` and v, writes o; backward also reads o and do and
    writes dq, dk, dv."""
    forward = 2 * F + 2 * Dv
    return element * B * T * H * (forward + (2 * F + 4 * Dv if backward else 0))


def run_encoder(p: dict, rate: float) -> list[dict]:
    """Rows ``kernel, B, T, F, mode, features_s, op_s, op_reference_s, floor_s, memory_floor_s`` (mode forward or
    forward+backward) for every registered kernel at every ``(B, T)`` of ``p["encoder"]``, on the preset's device
    and dtype (the op's PyTorch path beside the compiled kernel on the CPU only)."""
    e, rows, device = p["encoder"], [], p["device"]
    like = dict(device=device, dtype=DTYPES[p["dtype"]])
    bandwidth = measure.copy_bandwidth(device)
    H, d, Dv = e["heads"], e["head_dim"], e["head_dim_v"]
    gen = torch.Generator().manual_seed(p.get("seed", 0))
    for B, T in e["shapes"]:
        for name in tqdm(e.get("kernels") or kernels.available(), desc=f"encoder (B {B}, T {T})", leave=False):
            torch.manual_seed(0)
            fm = kernels.build(name, head_dim=d, num_heads=H).to(device).train()
            q, k, v = _inputs(B, T, H, d, Dv, gen, like)
            with torch.no_grad():
                qf, kf = (x.detach().requires_grad_() for x in fm.query_key(q, k))
            feats = _time_calls(_features_calls(fm, q, k, (_randn(qf.shape, gen, like), _randn(kf.shape, gen, like))),
                                e, device)  # fmt: skip
            calls = _op_calls(qf, kf, v, _randn((B, T, H, Dv), gen, like))
            op = _time_calls(calls, e, device)
            ref = _time_calls(calls, e, device, True) if name in e["reference_kernels"] and device == "cpu" else {}
            F, element = fm.feature_dim, qf.element_size()
            floor = 4 * B * H * T * F * (Dv + 1) / rate
            for mode, factor in (("forward", 1), ("forward+backward", 3)):
                memory = op_bytes(B, T, H, F, Dv, False, element) + (
                    op_bytes(B, T, H, F, Dv, True, element) if factor > 1 else 0
                )
                rows.append(dict(kernel=name, B=B, T=T, F=F, mode=mode, features_s=feats[mode], op_s=op[mode],
                                 op_reference_s=ref.get(mode), floor_s=factor * floor,
                                 memory_floor_s=memory / bandwidth, copy_bandwidth=bandwidth))  # fmt: skip
    return rows

"""How far bfloat16 moves each attention layer's output from float64: relative error, per kernel and input scale.

    python -m kernelized.eval.precision                  # the table of docs/choosing_a_kernel.md (CPU, ~1 min)
    python -m kernelized.eval.precision --T 2048 --scales 1,4

One causal attention layer (its projections, feature map and the chunk op; d_model 64, 4 heads of 16), built once
in float64, is copied to float32 under ``torch.autocast(bfloat16)`` (mixed precision: the usual way to train in
bf16) and to pure bfloat16 (weights and inputs). The error is ``|o - o64| / |o64|`` over a batch of Gaussian inputs
times ``scale`` (larger activations stress exp-based and polynomial maps). A non-finite output is reported as inf.
"""

from __future__ import annotations

import argparse
import copy
import math

import torch

from kernelized._checks import parse_list
from kernelized.layers.mixers import attention_spec, build_mixer

KERNELS = (
    "softmax", "elu", "relu", "rebased", "taylor", "performer", "rff", "gmm-rks", "gmm-prf", "fastfood-rks",
    "fastfood-prf", "generative-rks", "generative-prf",
)  # fmt: skip


def _output(module, x: torch.Tensor) -> torch.Tensor:
    out = module(x)
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def precision_errors(kernel: str, scale: float = 1.0, T: int = 512, batch: int = 2, seed: int = 0) -> dict:
    """``{"fp32", "autocast_bf16", "bf16"}`` relative errors of one layer's output against float64."""
    torch.manual_seed(seed)
    layer = build_mixer({**attention_spec(kernel), "num_heads": 4}, 64, causal=True).double().eval()
    x = scale * torch.randn(batch, T, 64, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ref = _output(layer, x)
    fp32 = copy.deepcopy(layer).float()
    outs = {"fp32": _output(fp32, x.float())}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs["autocast_bf16"] = _output(fp32, x.float())
    outs["bf16"] = _output(copy.deepcopy(layer).to(torch.bfloat16), x.to(torch.bfloat16))

    def rel(o: torch.Tensor) -> float:
        o = o.double()
        return float((o - ref).norm() / ref.norm()) if bool(torch.isfinite(o).all()) else math.inf

    return {name: rel(o) for name, o in outs.items()}


def table(kernels=KERNELS, scales=(1.0, 4.0), T: int = 512) -> str:
    lines = ["| kernel | scale | fp32 | autocast bf16 | bf16 |", "|---|---|---|---|---|"]
    for kernel in kernels:
        for scale in scales:
            e = precision_errors(kernel, scale, T)
            lines.append(f"| {kernel} | {scale:g} | {e['fp32']:.1e} | {e['autocast_bf16']:.1e} | {e['bf16']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--T", type=int, default=512)
    p.add_argument("--scales", default="1,4")
    p.add_argument("--kernels", default=",".join(KERNELS))
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    scales = parse_list(args.scales, "--scales", float)
    print(f"T = {args.T}, batch 2, d_model 64, 4 heads; |o - o64| / |o64|")
    print(table(parse_list(args.kernels, "--kernels"), scales, args.T))


if __name__ == "__main__":
    main()

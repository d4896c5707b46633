"""What is timed: the kernel cases (every kernel x form, SDPA, fla), the decode step, and small models' training.

Every tensor has the preset's shape: ``[B, T, H, width]`` (batch, length, heads, width), on its device and dtype.
Times are seconds, FLOPs counted by :mod:`.flops`, memory MiB. In-process peak memory is never measured while
timing: each timed cell appends a probe to ``probes`` for the caller to run after all timings, because the probe
changes glibc's mmap threshold, which would otherwise change the allocator under every later timing.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm import tqdm

from kernelized import cpu as cpu_kernels
from kernelized import kernels, ops
from kernelized.experiments.bench import measure
from kernelized.experiments.bench.flops import flops_chunk, flops_kv_step, flops_quadratic, flops_recurrent

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FEATURE_KERNELS = ("rebased", "taylor", "elu")

Maker = Callable[[int], tuple[Callable, list[torch.Tensor]]]


@dataclass
class Case:
    """One line of the kernel table: ``make(T)`` returns ``(fn, inputs)`` with ``fn(*inputs) -> output``."""

    name: str
    impl: str  # "kernelized" | "torch" | "fla"
    form: str  # "chunk" | "parallel" | "polynomial" | "recurrent" | "softmax"
    make: Maker
    flops: Callable[[int], float]  # forward FLOPs at length T
    max_len: int | None = None


class Inputs:
    """Random inputs of preset ``p``'s shape from one generator (seed 0), in the order the cases ask for them."""

    def __init__(self, p: dict):
        self.p, self.device, self.dtype = p, p["device"], DTYPES[p["dtype"]]
        self.gen = torch.Generator(device="cpu").manual_seed(p.get("seed", 0))
        self.maps = {
            name: kernels.build(name, head_dim=p["head_dim"], num_heads=p["heads"]) for name in FEATURE_KERNELS
        }

    def rand(self, T: int, width: int) -> torch.Tensor:
        """``[B, T, H, width]`` standard normal."""
        p = self.p
        return torch.randn(p["batch"], T, p["heads"], width, generator=self.gen).to(
            device=self.device, dtype=self.dtype
        )

    def features(self, kernel: str, T: int) -> list[torch.Tensor]:
        """``[q, k, v]``: q, k through ``kernel``'s feature map ``[B, T, H, F]``, v ``[B, T, H, Dv]``; need grad."""
        fm, d = self.maps[kernel], self.p["head_dim"]
        with torch.no_grad():
            q = fm.query(self.rand(T, d)).to(self.dtype)
            k = fm.key(self.rand(T, d)).to(self.dtype)
        return [q.requires_grad_(), k.requires_grad_(), self.rand(T, self.p["head_dim_v"]).requires_grad_()]

    def raw(self, T: int, width: int) -> list[torch.Tensor]:
        """``[q, k, v]``: q, k ``[B, T, H, width]`` before any feature map, v ``[B, T, H, Dv]``; all need grad."""
        dv = self.p["head_dim_v"]
        return [self.rand(T, width).requires_grad_(), self.rand(T, width).requires_grad_(),
                self.rand(T, dv).requires_grad_()]  # fmt: skip


def _linear(x: Inputs, kernel: str, mode: str) -> Maker:
    def make(T: int):
        fn = lambda q, k, v: ops.linear_attention(q, k, v, mode=mode, chunk_size=x.p["chunk_size"])[0]  # noqa: E731
        return fn, x.features(kernel, T)

    return make


def _polynomial(x: Inputs, kernel: str) -> Maker:
    form = x.maps[kernel].polynomial_form

    def make(T: int):
        fn = lambda q, k, v: ops.polynomial_attention(q, k, v, terms=form.terms, scale=form.scale)  # noqa: E731
        return fn, x.raw(T, x.p["head_dim"])

    return make


def _sdpa(x: Inputs) -> Maker:
    def make(T: int):
        q, k, v = (x.rand(T, x.p["softmax_head_dim"]).requires_grad_() for _ in range(3))
        return (lambda q, k, v: ops.softmax_attention(q, k, v, causal=True)), [q, k, v]

    return make


def _feature_map(x: Inputs, kernel: str, dtype: torch.dtype) -> Maker:
    """The query feature map alone on ``[B, T, H, d]`` inputs of ``dtype``: what bf16 inputs cost now that ReBased's
    degree-2 monomials are formed in float32 (issue 16), beside float32 inputs."""
    fm = x.maps[kernel]

    def make(T: int):
        return fm.query, [x.rand(T, x.p["head_dim"]).to(dtype).requires_grad_()]

    return make


def build_cases(p: dict) -> list[Case]:
    """Every kernel x form of the preset, SDPA, and fla's functions when importable."""
    x = Inputs(p)
    B, H, d, dv, ds, C = p["batch"], p["heads"], p["head_dim"], p["head_dim_v"], p["softmax_head_dim"], p["chunk_size"]
    quad_max, rec_max = p["max_len"]["quadratic"], p["max_len"]["recurrent"]
    cases = [Case("softmax (SDPA)", "torch", "softmax", _sdpa(x), lambda T: flops_quadratic(B, H, T, ds, ds))]
    for kernel in FEATURE_KERNELS:
        F = x.maps[kernel].feature_dim
        cases.append(
            Case(f"{kernel} chunk", "kernelized", "chunk", _linear(x, kernel, "chunk"),
                 lambda T, F=F: flops_chunk(B, H, T, F, dv, C))
        )  # fmt: skip
    F = x.maps["rebased"].feature_dim
    if x.device == "cpu" and cpu_kernels.usable(torch.zeros(1, dtype=x.dtype)):  # the op without them, side by side
        pytorch_path = _on_pytorch_path(_linear(x, "rebased", "chunk"))
        cases.append(
            Case("rebased chunk (PyTorch path)", "kernelized", "chunk", pytorch_path,
                 lambda T: flops_chunk(B, H, T, F, dv, C))
        )  # fmt: skip
    cases += [
        Case("rebased polynomial", "kernelized", "polynomial", _polynomial(x, "rebased"),
             lambda T: flops_quadratic(B, H, T, d, dv), quad_max),
        Case("taylor polynomial", "kernelized", "polynomial", _polynomial(x, "taylor"),
             lambda T: flops_quadratic(B, H, T, d, dv), quad_max),
        Case("rebased parallel", "kernelized", "parallel", _linear(x, "rebased", "parallel"),
             lambda T: flops_quadratic(B, H, T, F, dv + 1), quad_max),
    ]  # fmt: skip
    feature_flops = lambda T: 3.0 * B * T * H * F  # noqa: E731  (norm, affine, monomials: a few per output)
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        label = "rebased features (bf16 in, fp32 monomials)" if name == "bf16" else "rebased features (fp32 in)"
        cases.append(Case(label, "kernelized", "features", _feature_map(x, "rebased", dtype), feature_flops))
    if rec_max:
        cases.append(
            Case("rebased recurrent", "kernelized", "recurrent", _linear(x, "rebased", "recurrent"),
                 lambda T: flops_recurrent(B, H, T, F, dv), rec_max)
        )  # fmt: skip
    if fla_available():
        cases += _fla_cases(x, lambda T: flops_chunk(B, H, T, F, dv, 64), quad_max)
    return cases


def select_cases(cases: list[Case], wanted: list[str]) -> list[Case]:
    """The cases whose name contains one of ``wanted`` (substrings); an entry that matches no case raises
    ValueError naming it and listing the case names."""
    unknown = [w for w in wanted if not any(w in c.name for c in cases)]
    if unknown:
        hint = "" if fla_available() else " (fla cases need flash-linear-attention, which is not installed)"
        raise ValueError(f"--cases: {unknown} match no kernel case; the cases are {[c.name for c in cases]}{hint}")
    return [c for c in cases if any(w in c.name for w in wanted)]


def _on_pytorch_path(make: Maker) -> Maker:
    """A case maker whose function runs with the compiled CPU kernels switched off."""

    def wrapped(T: int):
        fn, inputs = make(T)

        def run(*args):
            with cpu_kernels.pytorch_path():
                return fn(*args)

        return run, inputs

    return wrapped


def fla_available() -> bool:
    return importlib.util.find_spec("fla") is not None


def _import_fla(name: str):
    with warnings.catch_warnings():  # fla warns that Triton has no driver on CPU machines
        warnings.simplefilter("ignore")
        return importlib.import_module(name)


def _fla_cases(x: Inputs, chunk_flops: Callable[[int], float], quad_max: int) -> list[Case]:
    """flash-linear-attention on the same inputs: naive PyTorch references on CPU, Triton kernels on GPU."""
    B, H, d, dv = x.p["batch"], x.p["heads"], x.p["head_dim"], x.p["head_dim_v"]
    qflops = lambda T: flops_quadratic(B, H, T, d, dv)  # noqa: E731
    try:
        if x.device == "cpu":
            return _fla_naive_cases(x, chunk_flops, qflops, quad_max)
        return _fla_triton_cases(x, chunk_flops, qflops, quad_max)
    except Exception as e:  # an fla version without these functions: bench the rest, say so
        print(f"note: flash-linear-attention cases skipped ({type(e).__name__}: {e})", file=sys.stderr)
        return []


def _fla_naive_cases(x: Inputs, chunk_flops, qflops, quad_max: int) -> list[Case]:
    naive_lin = _import_fla("fla.ops.linear_attn.naive").naive_chunk_linear_attn
    naive_reb = _import_fla("fla.ops.rebased.naive").naive_parallel_rebased

    def chunk_make(T: int):
        fn = lambda q, k, v: naive_lin(q, k, v, scale=1.0, normalize=True)  # noqa: E731
        return fn, x.features("rebased", T)

    def reb_make(T: int):  # fla's naive reference takes [B, H, T, D]
        fn = lambda q, k, v: naive_reb(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # noqa: E731
        return fn, x.raw(T, x.p["head_dim"])

    return [
        Case("fla naive_chunk_linear_attn (rebased features)", "fla", "chunk", chunk_make, chunk_flops),
        Case("fla naive_parallel_rebased", "fla", "polynomial", reb_make, qflops, quad_max),
    ]


def _fla_triton_cases(x: Inputs, chunk_flops, qflops, quad_max: int) -> list[Case]:
    lin = _import_fla("fla.ops.linear_attn")
    reb = _import_fla("fla.ops.rebased")
    based = _import_fla("fla.ops.based")

    def chunk_make(T: int):
        fn = lambda q, k, v: lin.chunk_linear_attn(q, k, v, scale=1.0, normalize=True)[0]  # noqa: E731
        return fn, x.features("rebased", T)

    def reb_make(T: int):
        return (lambda q, k, v: reb.parallel_rebased(q, k, v, eps=1e-6)), x.raw(T, x.p["head_dim"])

    def based_make(T: int):
        return (lambda q, k, v: based.parallel_based(q, k, v)), x.raw(T, x.p["head_dim"])

    return [
        Case("fla chunk_linear_attn (rebased features)", "fla", "chunk", chunk_make, chunk_flops),
        Case("fla parallel_rebased", "fla", "polynomial", reb_make, qflops, quad_max),
        Case("fla parallel_based", "fla", "polynomial", based_make, qflops, quad_max),
    ]


# ---------------------------------------------------------------------------------------------- kernel table


def _kernel_calls(fn: Callable, inputs: list[torch.Tensor]) -> dict[str, Callable[[], object]]:
    """The two timed calls of a kernel case: forward without autograd, and forward + gradients of the sum."""
    need_grad = [t for t in inputs if t.requires_grad]

    def fwd():
        with torch.no_grad():
            return fn(*inputs)

    def fwd_bwd():
        return torch.autograd.grad(fn(*inputs).float().sum(), need_grad)

    return {"fwd": fwd, "fwd+bwd": fwd_bwd}


def run_kernels(p: dict, cases: list[Case], lengths: list[int], rate: float, probes: list | None = None) -> list[dict]:
    """Time every case at every length (one row per case, T and mode); a case over budget or past its max_len
    stops growing. ``rate`` is the measured matmul FLOP/s; ``probes`` receives the in-process memory probes."""
    rows: list[dict] = []
    stopped: dict[tuple[str, str], str] = {}
    bar = tqdm(total=len(cases) * len(lengths) * 2, desc="kernels", leave=False)
    for case in cases:
        for T in lengths:
            calls = _kernel_calls(*case.make(T))
            for mode, call in calls.items():
                bar.update(1)
                row = _kernel_cell(p, case, T, mode, call, rate, stopped)
                rows.append(row)
                if probes is not None and "seconds" in row:
                    probes.append(functools.partial(_kernel_probe, row, case, T, mode, p["device"]))
            del calls
    bar.close()
    return rows


def _kernel_cell(p: dict, case: Case, T: int, mode: str, call, rate: float, stopped: dict) -> dict:
    """One row of the kernel table: the timing, or ``skipped`` with the reason (``stopped`` remembers a case and
    mode that failed or ran over budget, so longer lengths are skipped)."""
    row = dict(case=case.name, impl=case.impl, form=case.form, T=T, mode=mode)
    flops = case.flops(T) * (3 if mode == "fwd+bwd" else 1)
    row.update(flops=flops, flop_floor_s=flops / rate)
    reason = stopped.get((case.name, mode))
    if reason is None and case.max_len is not None and T > case.max_len:
        reason = f"T > {case.max_len} (quadratic/recurrent cap of this preset)"
    if reason is not None:
        return row | dict(skipped=reason)
    try:
        seconds, n = measure.timed(call, p["device"], p["warmup"], p["repeats"], p["budget_s"])
    except (RuntimeError, MemoryError) as e:  # e.g. out of memory at the longest lengths
        stopped[(case.name, mode)] = f"failed at T={T}: {type(e).__name__}"
        return row | dict(skipped=stopped[(case.name, mode)])
    if n == 1:
        stopped[(case.name, mode)] = f"T={T} took {seconds:.1f} s > budget {p['budget_s']} s"
    return row | dict(seconds=seconds, timed_calls=n, peak_mb=None, fraction_of_matmul=flops / seconds / rate)


def _kernel_probe(row: dict, case: Case, T: int, mode: str, device: str) -> None:
    """Measure a timed cell's peak memory (MiB) on fresh inputs into ``row["peak_mb"]``."""
    row["peak_mb"] = measure.peak_memory_mb(_kernel_calls(*case.make(T))[mode], device)


# ---------------------------------------------------------------------------------------------- decode


def run_decode(p: dict, rate: float) -> list[dict]:
    """Per-token latency (seconds) of one decode step against context length: linear attention's recurrent step
    (its state is fixed-size) beside softmax attention over a KV cache (grows with the context)."""
    device, dtype = p["device"], DTYPES[p["dtype"]]
    B, H, d, dv, ds = p["batch"], p["heads"], p["head_dim"], p["head_dim_v"], p["softmax_head_dim"]
    fm = kernels.build("rebased", head_dim=d, num_heads=H)
    F = fm.feature_dim
    gen = torch.Generator().manual_seed(p.get("seed", 0))

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device, dtype)

    def feat(T: int) -> torch.Tensor:
        return fm.query(torch.randn(B, T, H, d, generator=gen)).to(device, dtype)

    rows = []
    for L in tqdm(p["decode_lengths"], desc="decode", leave=False):
        with torch.no_grad():
            # prefill the context with the chunk form, then time single-token steps from its state
            _, state = ops.linear_attention(feat(L), feat(L), rand(B, L, H, dv), mode="chunk", output_final_state=True)
            t = _time_linear_step(feat(1), feat(1), rand(B, 1, H, dv), state, p)
            flops = flops_recurrent(B, H, 1, F, dv)
            state_mb = sum(s.numel() * s.element_size() for s in state) / 2**20
            rows.append(dict(case="rebased recurrent step", context=L, seconds=t, flops=flops,
                             fraction_of_matmul=flops / t / rate, state_mb=state_mb))  # fmt: skip
            del state
            cache = rand(2, B, H, L, ds)  # keys and values of the context, [B, H, L, D] as SDPA takes them
            t = _time_softmax_step(rand(B, H, 1, ds), cache, p)
            flops = flops_kv_step(B, H, L, ds)
            rows.append(dict(case="softmax KV-cache step", context=L, seconds=t, flops=flops,
                             fraction_of_matmul=flops / t / rate,
                             state_mb=cache.numel() * cache.element_size() / 2**20))  # fmt: skip
            del cache
    return rows


def _time_linear_step(q1, k1, v1, state, p: dict) -> float:
    step = lambda: ops.linear_attention(q1, k1, v1, mode="recurrent", initial_state=state, output_final_state=True)  # noqa: E731
    return measure.timed(step, p["device"], warmup=10, repeats=p["decode_steps"], budget_s=math.inf)[0]


def _time_softmax_step(q1, cache, p: dict) -> float:
    # one new query against the whole cache (no mask needed: the cache holds only the past)
    step = lambda: torch.nn.functional.scaled_dot_product_attention(q1, cache[0], cache[1])  # noqa: E731
    return measure.timed(step, p["device"], warmup=10, repeats=p["decode_steps"], budget_s=math.inf)[0]


# ---------------------------------------------------------------------------------------------- models


def _mixers(m: dict) -> dict[str, dict]:
    """The mixer specs of the models section: softmax, and kernel attention in chunk or polynomial form."""
    heads = m["heads"]
    mixers = {"softmax": {"mixer": "softmax", "num_heads": heads}}
    for kernel, mode, label in (("rebased", "chunk", "rebased chunk"), ("rebased", "parallel", "rebased polynomial"),
                                ("taylor", "chunk", "taylor chunk"), ("elu", "chunk", "elu chunk")):  # fmt: skip
        mixers[label] = {"mixer": "kernel", "kernel": kernel, "num_heads": heads, "feature_dim": m["feature_dim"],
                         "mode": mode}  # fmt: skip
    return mixers


def _layouts(m: dict) -> dict[str, tuple[int, list[dict]]]:
    """Model name -> (T, blocks); a block's ``mixer: None`` is where the benchmarked mixer goes."""
    conv = {"mixer": "baseconv", "kernel_size": 3}
    return {
        "mqar": (m["mqar_len"], [{"mixer": conv, "mlp": None}, {"mixer": None, "mlp": None}]),
        "lm": (m["lm_len"], [{"mixer": conv if i % 2 == 0 else None, "mlp": "swiglu"} for i in range(6)]),
    }


def _train_step(m: dict, device: str, T: int, layout: list[dict], spec: dict) -> tuple[Callable[[], None], int]:
    """One AdamW training step on random tokens ``[batch, T + 1]`` of a freshly built model, and its parameter
    count."""
    from kernelized.models import LanguageModel, ModelConfig

    blocks = [dict(b, mixer=b["mixer"] or spec) for b in layout]
    torch.manual_seed(0)  # models: one fixed initialisation (the seed field draws the op inputs)
    config = ModelConfig(vocab_size=m["vocab"], d_model=m["d_model"], blocks=blocks, max_len=T)
    model = LanguageModel(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, m["vocab"], (m["batch"], T + 1), device=device)

    def step():
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, sum(t.numel() for t in model.parameters())


def run_models(p: dict, probes: list | None = None) -> list[dict]:
    """Training tokens/s and peak memory of two small models per mixer: MQAR-like (two blocks, BaseConv then the
    mixer, no MLP) and LM-like (six blocks alternating BaseConv and the mixer, SwiGLU MLPs), AdamW steps.

    Peak memory, as in :func:`run_kernels`, is measured by functions appended to ``probes`` (a fresh model each).
    """
    m, device, rows = p["models"], p["device"], []
    for model_name, (T, layout) in _layouts(m).items():
        for mixer_name, spec in tqdm(_mixers(m).items(), desc=f"models ({model_name})", leave=False):
            step, params = _train_step(m, device, T, layout, spec)
            seconds, _ = measure.timed(step, device, m["warmup"], m["steps"], budget_s=math.inf)
            row = dict(model=model_name, mixer=mixer_name, T=T, batch=m["batch"], d_model=m["d_model"],
                       params=params, step_s=seconds, tokens_per_s=m["batch"] * T / seconds, peak_mb=None)  # fmt: skip
            rows.append(row)
            if probes is not None:
                probes.append(functools.partial(_model_probe, row, m, device, T, layout, spec))
            del step
    return rows


def _model_probe(row: dict, m: dict, device: str, T: int, layout: list[dict], spec: dict) -> None:
    """Peak memory (MiB) of one training step of a fresh model into ``row["peak_mb"]``."""
    step, _ = _train_step(m, device, T, layout, spec)
    step()  # optimizer state and lazy buffers exist before the measured step, as when timed
    row["peak_mb"] = measure.peak_memory_mb(step, device)

"""`kernelized bench`: speed and memory of every kernel and form, beside softmax SDPA and flash-linear-attention.

Sections, all measured in one run so the ratios compare like with like:

- **kernels**: forward (no grad, as in prefill) and forward+backward time, median of repeats after warm-up,
  and peak memory, against T, for each kernel x form, torch SDPA (causal softmax) and fla's functions
  when installed (pure-PyTorch ``naive`` references on CPU, Triton kernels on GPU);
- **decode**: one recurrent step's latency against context length, beside a softmax KV-cache step;
- **models**: training tokens/s and peak memory of an MQAR-sized and an LM-sized model per mixer.

Every timed case also reports its FLOP count (useful FLOPs: causal products count half the square, the
backward pass twice the forward) and the fraction of the machine's measured fp32 (or preset dtype) matmul
rate it reaches; ``flop floor`` = FLOPs / that rate.

Peak memory on CPU: the kernel's resident-set high-water mark (``VmHWM`` in /proc/self/status, reset through
/proc/self/clear_refs before each measurement) minus the resident set just before the call, so inputs that
already exist are not counted; this sees torch's allocations, which tracemalloc does not. On CUDA:
``torch.cuda.max_memory_allocated`` minus the allocation before the call.

Outputs ``<out>/<preset>.json``, ``<out>/<preset>.md`` and log-log PNGs ``<out>/<preset>_*.png``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from kernelized import cpu as cpu_kernels
from kernelized import kernels, ops
from kernelized._checks import check_choice
from kernelized.train.memory import reset_peak_rss

K = 1024
PRESETS: dict[str, dict] = {
    # What `make bench` runs: 2-core CPU, fp32, the ReBased shape (B=1, H=8, d=16 -> 136 features, Dv=64).
    "cpu": dict(
        device="cpu", dtype="float32", batch=1, heads=8, head_dim=16, head_dim_v=64, softmax_head_dim=64,
        chunk_size=64, lengths=[1 * K, 2 * K, 4 * K, 8 * K, 16 * K, 32 * K], warmup=1, repeats=5,
        budget_s=8.0,  # a call slower than this is measured once and the case stops growing T
        # T x T scores: 0.5 GiB per copy at 4k, H=8; the per-token recurrent form (a Python loop over T, 36 s
        # forward at 1k) is timed only as the decode step
        max_len={"quadratic": 4 * K, "recurrent": 0},
        decode_lengths=[1 * K, 2 * K, 4 * K, 8 * K, 16 * K, 32 * K], decode_steps=200,
        models=dict(batch=4, mqar_len=512, lm_len=1024, steps=7, warmup=2),
    ),
    # A lent GPU: bf16, more heads and batch so the GPU has work, T up to 16k; fla's Triton kernels beside ours.
    "gpu": dict(
        device="cuda", dtype="bfloat16", batch=4, heads=16, head_dim=16, head_dim_v=64, softmax_head_dim=64,
        chunk_size=64, lengths=[1 * K, 2 * K, 4 * K, 8 * K, 16 * K], warmup=5, repeats=20, budget_s=5.0,
        max_len={"quadratic": 16 * K, "recurrent": 0},
        decode_lengths=[1 * K, 2 * K, 4 * K, 8 * K, 16 * K, 32 * K], decode_steps=200,
        models=dict(batch=16, mqar_len=512, lm_len=2048, steps=10, warmup=3),
    ),
    # Seconds, for the tests: tiny shapes, every section.
    "smoke": dict(
        device="cpu", dtype="float32", batch=1, heads=2, head_dim=4, head_dim_v=8, softmax_head_dim=8,
        chunk_size=16, lengths=[64, 128], warmup=1, repeats=2, budget_s=5.0,
        max_len={"quadratic": 128, "recurrent": 64},
        decode_lengths=[64, 128], decode_steps=3,
        models=dict(batch=2, mqar_len=32, lm_len=32, steps=1, warmup=1, d_model=16, heads=2, vocab=64),
    ),
}  # fmt: skip
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ---------------------------------------------------------------------------------------------- measuring


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str, warmup: int, repeats: int, budget_s: float) -> tuple[float, int]:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` calls, and the number of timed calls.

    If the first warm-up call already exceeds ``budget_s``, that call is the measurement (1 timed call).
    """
    first = None
    for _ in range(max(1, warmup)):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        first = time.perf_counter() - t0 if first is None else first
    if first > budget_s:
        return first, 1
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def _proc_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_memory_mb(fn: Callable[[], object], device: str) -> float | None:
    """Peak memory that ``fn()`` adds on top of what exists before the call, in MiB (None if unmeasurable)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    if not reset_peak_rss():  # VmHWM back to the current resident set
        return None
    _mmap_threshold(64 * 1024)  # big blocks from fresh mmaps, so reused heap pages cannot hide them
    try:
        base = _proc_kb("VmRSS")
        fn()
        peak = _proc_kb("VmHWM")
    finally:
        _mmap_threshold(32 * 2**20)  # glibc's own ceiling for its dynamic threshold
    return None if base is None or peak is None else max(0.0, (peak - base) / 1024)


def _mmap_threshold(nbytes: int) -> None:
    """glibc ``mallopt(M_MMAP_THRESHOLD)``; a no-op where there is no glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, nbytes)  # -3 = M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


_FRESH_PROCESS = """
import sys, torch
from kernelized import kernels, ops
B, T, H, d, dv, threads = (int(x) for x in sys.argv[1:7])
torch.set_num_threads(threads)
fm = kernels.build("rebased", head_dim=d, num_heads=H)
with torch.no_grad():
    q, k = fm.query(torch.randn(B, T, H, d)), fm.key(torch.randn(B, T, H, d))
q, k, v = q.requires_grad_(), k.requires_grad_(), torch.randn(B, T, H, dv, requires_grad=True)
def run(n):
    o = ops.linear_attention(q[:, :n], k[:, :n], v[:, :n], mode="chunk")[0]
    return torch.autograd.grad(o.sum(), (q, k, v))
run(64)  # lazy initialisation (thread pools, BLAS buffers) is not the op's memory
def kb(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))
open("/proc/self/clear_refs", "w").write("5")
base = kb("VmRSS")
run(T)
print((kb("VmHWM") - base) / 1024)
"""


def fresh_process_peak_mb(p: dict, T: int) -> float | None:
    """Peak memory of one ReBased chunk forward+backward at length T, measured in a new Python process (inputs
    made first, then VmHWM - VmRSS around the call): no pages left resident by earlier calls can hide it."""
    import subprocess

    if p["device"] != "cpu" or not os.path.exists("/proc/self/clear_refs"):
        return None
    args = [str(x) for x in (p["batch"], T, p["heads"], p["head_dim"], p["head_dim_v"], torch.get_num_threads())]
    proc = subprocess.run([sys.executable, "-c", _FRESH_PROCESS, *args], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        print(f"note: fresh-process memory at T={T} failed: {proc.stderr[-300:]}", file=sys.stderr)
        return None
    return float(proc.stdout.strip().splitlines()[-1])


def matmul_rate(device: str, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Measured FLOP/s of one large square matmul: the machine's attainable rate, the yardstick for fractions."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    t, _ = timed(lambda: a @ b, device, warmup=2, repeats=repeats, budget_s=math.inf)
    return 2 * n**3 / t


# ---------------------------------------------------------------------------------------------- FLOP counts


def flops_quadratic(B: int, H: int, T: int, dk: int, dv: int, causal: bool = True) -> float:
    """Attention-like forward: ``q k^T`` and ``A v`` over the (causal half of the) T x T square."""
    pairs = T * T / 2 if causal else T * T
    return 2 * B * H * pairs * (dk + dv)


def flops_chunk(B: int, H: int, T: int, F: int, dv: int, chunk: int) -> float:
    """Chunked linear attention forward with the normaliser as an extra value column: per token, reading and
    updating the ``[F, Dv+1]`` state, plus the causal half of the in-chunk ``q k^T`` and ``A v``."""
    return 2 * B * H * T * (2 * F * (dv + 1) + chunk / 2 * (F + dv + 1))


def flops_recurrent(B: int, H: int, T: int, F: int, dv: int) -> float:
    """Token-by-token linear attention forward: read and update the ``[F, Dv+1]`` state per token."""
    return 2 * B * H * T * 2 * F * (dv + 1)


# ---------------------------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One line of the kernel table: ``make(T)`` returns ``(fn, inputs)`` with ``fn(*inputs) -> output``."""

    name: str
    impl: str  # "kernelized" | "torch" | "fla"
    form: str  # "chunk" | "parallel" | "polynomial" | "recurrent" | "softmax"
    make: Callable[[int], tuple[Callable, list[torch.Tensor]]]
    flops: Callable[[int], float]  # forward FLOPs at length T
    max_len: int | None = None


def _fla_available() -> bool:
    return importlib.util.find_spec("fla") is not None


def _import_fla(name: str):
    with warnings.catch_warnings():  # fla warns that Triton has no driver on CPU machines
        warnings.simplefilter("ignore")
        import importlib as _il

        return _il.import_module(name)


def build_cases(p: dict) -> list[Case]:
    """Every kernel x form of the preset, SDPA, and fla's functions when importable."""
    device, dtype = p["device"], DTYPES[p["dtype"]]
    B, H, d, dv, ds, C = p["batch"], p["heads"], p["head_dim"], p["head_dim_v"], p["softmax_head_dim"], p["chunk_size"]
    quad_max, rec_max = p["max_len"]["quadratic"], p["max_len"]["recurrent"]
    gen = torch.Generator(device="cpu").manual_seed(0)
    maps = {name: kernels.build(name, head_dim=d, num_heads=H) for name in ("rebased", "taylor", "elu")}

    def rand(T: int, width: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(B, T, H, width, generator=gen) * scale).to(device=device, dtype=dtype)

    def features(kernel: str, T: int) -> list[torch.Tensor]:
        fm = maps[kernel]
        with torch.no_grad():
            q = fm.query(rand(T, d)).to(dtype)
            k = fm.key(rand(T, d)).to(dtype)
        return [q.requires_grad_(), k.requires_grad_(), rand(T, dv).requires_grad_()]

    def raw(T: int, width: int) -> list[torch.Tensor]:
        return [rand(T, width).requires_grad_(), rand(T, width).requires_grad_(), rand(T, dv).requires_grad_()]

    def linear(kernel: str, mode: str) -> Callable:
        def make(T: int):
            fn = lambda q, k, v: ops.linear_attention(q, k, v, mode=mode, chunk_size=C)[0]  # noqa: E731
            return fn, features(kernel, T)

        return make

    def polynomial(kernel: str) -> Callable:
        form = maps[kernel].polynomial_form

        def make(T: int):
            fn = lambda q, k, v: ops.polynomial_attention(q, k, v, terms=form.terms, scale=form.scale)  # noqa: E731
            return fn, raw(T, d)

        return make

    def sdpa(T: int):
        q, k, v = (rand(T, ds).requires_grad_() for _ in range(3))
        return (lambda q, k, v: ops.softmax_attention(q, k, v, causal=True)), [q, k, v]

    cases = [Case("softmax (SDPA)", "torch", "softmax", sdpa, lambda T: flops_quadratic(B, H, T, ds, ds))]
    for kernel in ("rebased", "taylor", "elu"):
        F = maps[kernel].feature_dim
        cases.append(
            Case(f"{kernel} chunk", "kernelized", "chunk", linear(kernel, "chunk"),
                 lambda T, F=F: flops_chunk(B, H, T, F, dv, C))
        )  # fmt: skip
    F = maps["rebased"].feature_dim
    if device == "cpu" and cpu_kernels.usable(torch.zeros(1, dtype=dtype)):  # the same op without them, side by side
        cases.append(
            Case("rebased chunk (PyTorch path)", "kernelized", "chunk", _on_pytorch_path(linear("rebased", "chunk")),
                 lambda T: flops_chunk(B, H, T, F, dv, C))
        )  # fmt: skip
    cases += [
        Case("rebased polynomial", "kernelized", "polynomial", polynomial("rebased"),
             lambda T: flops_quadratic(B, H, T, d, dv), quad_max),
        Case("taylor polynomial", "kernelized", "polynomial", polynomial("taylor"),
             lambda T: flops_quadratic(B, H, T, d, dv), quad_max),
        Case("rebased parallel", "kernelized", "parallel", linear("rebased", "parallel"),
             lambda T: flops_quadratic(B, H, T, F, dv + 1), quad_max),
    ]  # fmt: skip
    if rec_max:
        cases.append(
            Case("rebased recurrent", "kernelized", "recurrent", linear("rebased", "recurrent"),
                 lambda T: flops_recurrent(B, H, T, F, dv), rec_max)
        )  # fmt: skip
    if _fla_available():
        cases += _fla_cases(p, features, raw, lambda T: flops_chunk(B, H, T, F, dv, 64), d, dv, quad_max)
    return cases


def _on_pytorch_path(make: Callable) -> Callable:
    """A case maker whose function runs with the compiled CPU kernels switched off."""

    def wrapped(T: int):
        fn, inputs = make(T)

        def run(*args):
            with cpu_kernels.pytorch_path():
                return fn(*args)

        return run, inputs

    return wrapped


def _fla_cases(p: dict, features, raw, chunk_flops, d: int, dv: int, quad_max: int) -> list[Case]:
    """flash-linear-attention on the same inputs: naive PyTorch references on CPU, Triton kernels on GPU."""
    B, H = p["batch"], p["heads"]
    out: list[Case] = []
    try:
        if p["device"] == "cpu":
            naive_lin = _import_fla("fla.ops.linear_attn.naive").naive_chunk_linear_attn
            naive_reb = _import_fla("fla.ops.rebased.naive").naive_parallel_rebased

            def chunk_make(T: int):
                fn = lambda q, k, v: naive_lin(q, k, v, scale=1.0, normalize=True)  # noqa: E731
                return fn, features("rebased", T)

            def reb_make(T: int):  # fla's naive reference takes [B, H, T, D]
                q, k, v = raw(T, d)
                fn = lambda q, k, v: naive_reb(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # noqa: E731
                return fn, [q, k, v]

            out.append(Case("fla naive_chunk_linear_attn (rebased features)", "fla", "chunk", chunk_make, chunk_flops))
            out.append(
                Case("fla naive_parallel_rebased", "fla", "polynomial", reb_make,
                     lambda T: flops_quadratic(B, H, T, d, dv), quad_max)
            )  # fmt: skip
        else:
            lin = _import_fla("fla.ops.linear_attn")
            reb = _import_fla("fla.ops.rebased")
            based = _import_fla("fla.ops.based")

            def chunk_make(T: int):
                fn = lambda q, k, v: lin.chunk_linear_attn(q, k, v, scale=1.0, normalize=True)[0]  # noqa: E731
                return fn, features("rebased", T)

            def reb_make(T: int):
                return (lambda q, k, v: reb.parallel_rebased(q, k, v, eps=1e-6)), raw(T, d)

            def based_make(T: int):
                return (lambda q, k, v: based.parallel_based(q, k, v)), raw(T, d)

            qflops = lambda T: flops_quadratic(B, H, T, d, dv)  # noqa: E731
            out += [
                Case("fla chunk_linear_attn (rebased features)", "fla", "chunk", chunk_make, chunk_flops),
                Case("fla parallel_rebased", "fla", "polynomial", reb_make, qflops, quad_max),
                Case("fla parallel_based", "fla", "polynomial", based_make, qflops, quad_max),
            ]
    except Exception as e:  # an fla version without these functions: bench the rest, say so
        print(f"note: flash-linear-attention cases skipped ({type(e).__name__}: {e})", file=sys.stderr)
    return out


def _kernel_calls(fn: Callable, inputs: list[torch.Tensor]) -> dict[str, Callable[[], object]]:
    """The two timed calls of a kernel case: forward without autograd, and forward + gradients of the sum."""
    need_grad = [x for x in inputs if x.requires_grad]

    def fwd():
        with torch.no_grad():
            return fn(*inputs)

    def fwd_bwd():
        return torch.autograd.grad(fn(*inputs).float().sum(), need_grad)

    return {"fwd": fwd, "fwd+bwd": fwd_bwd}


def run_kernels(p: dict, cases: list[Case], lengths: list[int], rate: float, probes: list | None = None) -> list[dict]:
    """Time every case at every length; a case over budget or past its max_len stops growing.

    In-process peak memory is not measured here: each timed cell appends to ``probes`` a function that measures
    it (on fresh inputs), for the caller to run after all timings. The probe changes glibc's mmap threshold,
    which would otherwise change the allocator under every later timing.
    """
    device, rows = p["device"], []
    stopped: dict[tuple[str, str], str] = {}
    bar = tqdm(total=len(cases) * len(lengths) * 2, desc="kernels", leave=False)
    for case in cases:
        for T in lengths:
            calls = _kernel_calls(*case.make(T))
            for mode, call in calls.items():
                bar.update(1)
                row = dict(case=case.name, impl=case.impl, form=case.form, T=T, mode=mode)
                flops = case.flops(T) * (3 if mode == "fwd+bwd" else 1)
                row.update(flops=flops, flop_floor_s=flops / rate)
                reason = stopped.get((case.name, mode))
                if reason is None and case.max_len is not None and T > case.max_len:
                    reason = f"T > {case.max_len} (quadratic/recurrent cap of this preset)"
                if reason is not None:
                    rows.append(row | dict(skipped=reason))
                    continue
                try:
                    seconds, n = timed(call, device, p["warmup"], p["repeats"], p["budget_s"])
                except (RuntimeError, MemoryError) as e:  # e.g. out of memory at the longest lengths
                    stopped[(case.name, mode)] = f"failed at T={T}: {type(e).__name__}"
                    rows.append(row | dict(skipped=stopped[(case.name, mode)]))
                    continue
                if n == 1:
                    stopped[(case.name, mode)] = f"T={T} took {seconds:.1f} s > budget {p['budget_s']} s"
                row |= dict(seconds=seconds, timed_calls=n, peak_mb=None, fraction_of_matmul=flops / seconds / rate)
                rows.append(row)
                if probes is not None:

                    def probe(row=row, case=case, T=T, mode=mode):
                        row["peak_mb"] = peak_memory_mb(_kernel_calls(*case.make(T))[mode], device)

                    probes.append(probe)
            del calls
    bar.close()
    return rows


def run_decode(p: dict, rate: float) -> list[dict]:
    """Per-token latency of one decode step against context length: linear attention's recurrent step (its
    state is fixed-size) beside softmax attention over a KV cache (grows with the context)."""
    device, dtype = p["device"], DTYPES[p["dtype"]]
    B, H, d, dv, ds = p["batch"], p["heads"], p["head_dim"], p["head_dim_v"], p["softmax_head_dim"]
    fm = kernels.build("rebased", head_dim=d, num_heads=H)
    F = fm.feature_dim
    gen = torch.Generator().manual_seed(0)

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
            state_mb = sum(x.numel() * x.element_size() for x in state) / 2**20
            rows.append(dict(case="rebased recurrent step", context=L, seconds=t, flops=flops,
                             fraction_of_matmul=flops / t / rate, state_mb=state_mb))  # fmt: skip
            del state
            cache = rand(2, B, H, L, ds)  # keys and values of the context, [B, H, L, D] as SDPA takes them
            t = _time_softmax_step(rand(B, H, 1, ds), cache, p)
            flops = 2 * B * H * L * 2 * ds
            rows.append(dict(case="softmax KV-cache step", context=L, seconds=t, flops=flops,
                             fraction_of_matmul=flops / t / rate,
                             state_mb=cache.numel() * cache.element_size() / 2**20))  # fmt: skip
            del cache
    return rows


def _time_linear_step(q1, k1, v1, state, p: dict) -> float:
    step = lambda: ops.linear_attention(q1, k1, v1, mode="recurrent", initial_state=state, output_final_state=True)  # noqa: E731
    return timed(step, p["device"], warmup=10, repeats=p["decode_steps"], budget_s=math.inf)[0]


def _time_softmax_step(q1, cache, p: dict) -> float:
    # one new query against the whole cache (no mask needed: the cache holds only the past)
    step = lambda: torch.nn.functional.scaled_dot_product_attention(q1, cache[0], cache[1])  # noqa: E731
    return timed(step, p["device"], warmup=10, repeats=p["decode_steps"], budget_s=math.inf)[0]


def run_models(p: dict, probes: list | None = None) -> list[dict]:
    """Training tokens/s and peak memory of two small models per mixer: MQAR-like (two blocks, BaseConv then the
    mixer, no MLP) and LM-like (six blocks alternating BaseConv and the mixer, SwiGLU MLPs), AdamW steps.

    Peak memory, as in ``run_kernels``, is measured by functions appended to ``probes`` (a fresh model each).
    """
    from kernelized.models import LanguageModel, ModelConfig

    m = p["models"]
    device = p["device"]
    d_model, heads, vocab = m.get("d_model", 128), m.get("heads", 8), m.get("vocab", 8192)
    fd = p["head_dim"] if "d_model" in m else 16
    mixers = {
        "softmax": {"mixer": "softmax", "num_heads": heads},
    }
    for kernel, mode, label in (("rebased", "chunk", "rebased chunk"), ("rebased", "parallel", "rebased polynomial"),
                                ("taylor", "chunk", "taylor chunk"), ("elu", "chunk", "elu chunk")):  # fmt: skip
        mixers[label] = {"mixer": "kernel", "kernel": kernel, "num_heads": heads, "feature_dim": fd, "mode": mode}
    conv = {"mixer": "baseconv", "kernel_size": 3}
    shapes = {
        "mqar": (m["mqar_len"], [{"mixer": conv, "mlp": None}, {"mixer": None, "mlp": None}]),
        "lm": (m["lm_len"], [{"mixer": conv if i % 2 == 0 else None, "mlp": "swiglu"} for i in range(6)]),
    }

    def make_step(T: int, layout: list[dict], spec: dict) -> tuple[Callable[[], None], int]:
        """One AdamW training step on random tokens of a freshly built model, and the model's parameter count."""
        blocks = [dict(b, mixer=b["mixer"] or spec) for b in layout]
        torch.manual_seed(0)
        model = LanguageModel(ModelConfig(vocab_size=vocab, d_model=d_model, blocks=blocks, max_len=T)).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        tokens = torch.randint(0, vocab, (m["batch"], T + 1), device=device)

        def step():
            logits = model(tokens[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step, sum(x.numel() for x in model.parameters())

    rows = []
    for model_name, (T, layout) in shapes.items():
        for mixer_name, spec in tqdm(mixers.items(), desc=f"models ({model_name})", leave=False):
            step, params = make_step(T, layout, spec)
            seconds, _ = timed(step, device, m["warmup"], m["steps"], budget_s=math.inf)
            row = dict(model=model_name, mixer=mixer_name, T=T, batch=m["batch"], d_model=d_model, params=params,
                       step_s=seconds, tokens_per_s=m["batch"] * T / seconds, peak_mb=None)  # fmt: skip
            rows.append(row)
            if probes is not None:

                def probe(row=row, T=T, layout=layout, spec=spec):
                    step, _ = make_step(T, layout, spec)
                    step()  # optimizer state and lazy buffers exist before the measured step, as when timed
                    row["peak_mb"] = peak_memory_mb(step, device)

                probes.append(probe)
            del step
    return rows


# ---------------------------------------------------------------------------------------------- report


def targets(kernel_rows: list[dict], decode_rows: list[dict], T: int = 8 * K, memory_rows: list | None = None) -> dict:
    """The issue's CPU targets for causal ReBased, from this run's measurements (None where not measured)."""

    def seconds(case: str, mode: str = "fwd+bwd", length: int = T):
        for r in kernel_rows:
            if r["case"] == case and r["mode"] == mode and r["T"] == length and "seconds" in r:
                return r["seconds"]
        return None

    ours = seconds("rebased chunk")
    sdpa = seconds("softmax (SDPA)")
    fla = seconds("fla naive_chunk_linear_attn (rebased features)")
    floor = next((r["flop_floor_s"] for r in kernel_rows if r["case"] == "rebased chunk" and r["T"] == T
                  and r["mode"] == "fwd+bwd"), None)  # fmt: skip
    # in-process peaks read low where earlier calls left pages resident: only the two longest lengths count
    mem = [(r["T"], r["peak_mb"]) for r in kernel_rows
           if r["case"] == "rebased chunk" and r["mode"] == "fwd+bwd" and r.get("peak_mb")][-2:]  # fmt: skip
    if memory_rows:  # the fresh-process measurements are the reliable ones, at every length
        mem = [(r["T"], r["peak_mb"]) for r in memory_rows if r.get("peak_mb")]
    slope = None
    if len(mem) >= 2:  # log-log slope of peak memory against T over the measured lengths: 1 = linear
        (t0, m0), (t1, m1) = mem[0], mem[-1]
        slope = math.log(m1 / m0) / math.log(t1 / t0) if m0 > 0 and m1 > 0 else None
    dec = {r["context"]: r["seconds"] for r in decode_rows if r["case"] == "rebased recurrent step"}
    ratio = lambda a, b: None if a is None or b is None else a / b  # noqa: E731
    return {
        "T": T,
        "rebased_chunk_fwd_bwd_s": ours,
        "sdpa_over_rebased_chunk": ratio(sdpa, ours),
        "fla_naive_chunk_over_rebased_chunk": ratio(fla, ours),
        "rebased_chunk_over_flop_floor": ratio(ours, floor),
        "memory_loglog_slope": slope,
        "decode_32k_over_1k": ratio(dec.get(32 * K), dec.get(1 * K)),
    }


def _fmt_time(s) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def _fmt(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def markdown(result: dict) -> str:
    """The run as markdown tables (what docs/benchmarks.md quotes)."""
    env, p = result["environment"], result["preset"]
    lengths = sorted({r["T"] for r in result["kernels"]})
    lines = [
        f"# Benchmark `{result['preset_name']}`",
        "",
        f"- command: `{result['command']}`",
        f"- device: {env['device']}; torch {env['torch']}; {env['threads']} threads; dtype {p['dtype']}",
        f"- date: {env['date']}; load average before/after: {env['load_before']} / {env['load_after']}",
        f"- measured matmul rate ({p['dtype']}, square 2048): {result['matmul_rate'] / 1e9:.1f} GFLOP/s",
        f"- shape: B={p['batch']}, H={p['heads']}, q/k head dim {p['head_dim']}, Dv={p['head_dim_v']}, "
        f"SDPA head dim {p['softmax_head_dim']}, chunk {p['chunk_size']}; forward runs without grad",
        f"- flash-linear-attention: {env['fla'] or 'not installed'}",
    ]
    if env.get("cpu_kernels") is not None and p["device"] == "cpu":
        lines.append(
            f"- compiled CPU kernels: {'yes' if env['cpu_kernels'] else 'no (PyTorch path)'}; "
            f"THP_MEM_ALLOC_ENABLE={env.get('thp')}"
        )
    lines.append("")
    for mode in ("fwd", "fwd+bwd") if result["kernels"] else ():
        rows = [r for r in result["kernels"] if r["mode"] == mode]
        for title, key, fmt in (
            (f"{mode}: median time", "seconds", _fmt_time),
            (f"{mode}: peak memory above inputs (MiB)", "peak_mb", lambda x: _fmt(x, 4)),
            (f"{mode}: fraction of the measured matmul rate", "fraction_of_matmul", lambda x: _fmt(x, 2)),
        ):
            lines += [f"## {title}", "", "| case | " + " | ".join(f"T={t}" for t in lengths) + " |"]
            lines.append("| --- " * (len(lengths) + 1) + "|")
            for case in dict.fromkeys(r["case"] for r in rows):
                cells = []
                for t in lengths:
                    r = next((r for r in rows if r["case"] == case and r["T"] == t), None)
                    cells.append("skipped" if r is None or "skipped" in r else fmt(r.get(key)))
                lines.append(f"| {case} | " + " | ".join(cells) + " |")
            lines.append("")
    skipped = {(r["case"], r["mode"]): r["skipped"] for r in result["kernels"] if "skipped" in r}
    if skipped:
        lines += ["Skipped cells (first reason per case):", ""]
        seen = set()
        for (case, mode), why in skipped.items():
            if (case, mode) not in seen:
                seen.add((case, mode))
                lines.append(f"- {case}, {mode}: {why}")
        lines.append("")
    if result.get("memory"):
        lines += ["## rebased chunk fwd+bwd peak memory, one fresh process per T (MiB)", ""]
        lines += [
            "| " + " | ".join(f"T={r['T']}" for r in result["memory"]) + " |",
            "| --- " * len(result["memory"]) + "|",
        ]
        lines += ["| " + " | ".join(_fmt(r["peak_mb"], 4) for r in result["memory"]) + " |", ""]
    if result.get("decode"):
        ctx = sorted({r["context"] for r in result["decode"]})
        lines += ["## decode: per-token step latency against context length", ""]
        lines += ["| step | " + " | ".join(f"L={c}" for c in ctx) + " |", "| --- " * (len(ctx) + 1) + "|"]
        for case in dict.fromkeys(r["case"] for r in result["decode"]):
            cells = [_fmt_time(next(r["seconds"] for r in result["decode"] if r["case"] == case and r["context"] == c))
                     for c in ctx]  # fmt: skip
            lines.append(f"| {case} | " + " | ".join(cells) + " |")
        lines.append("")
    if result.get("models"):
        lines += ["## models: training step (AdamW), tokens/s and peak memory", ""]
        lines += ["| model | mixer | T | batch | params | step | tokens/s | peak MiB |", "| --- " * 8 + "|"]
        for r in result["models"]:
            lines.append(
                f"| {r['model']} | {r['mixer']} | {r['T']} | {r['batch']} | {r['params']:,} | {_fmt_time(r['step_s'])} "
                f"| {r['tokens_per_s']:.0f} | {_fmt(r['peak_mb'], 4)} |"
            )
        lines.append("")
    tg = result.get("targets")
    if tg and tg.get("rebased_chunk_fwd_bwd_s") is not None:
        lines += [
            f"## targets (causal ReBased chunk, fwd+bwd, T={tg['T']})",
            "",
            "| target | wanted | measured |",
            "| --- | --- | --- |",
            f"| SDPA time / ours | >= 10 | {_fmt(tg['sdpa_over_rebased_chunk'])} |",
            f"| fla naive_chunk time / ours | >= 4 | {_fmt(tg['fla_naive_chunk_over_rebased_chunk'])} |",
            f"| ours / FLOP floor | <= 2 | {_fmt(tg['rebased_chunk_over_flop_floor'])} |",
            f"| peak memory log-log slope in T | 1 (linear) | {_fmt(tg['memory_loglog_slope'])} |",
            f"| decode step at 32k / at 1k | <= 1.1 | {_fmt(tg['decode_32k_over_1k'])} |",
            "",
        ]
    return "\n".join(lines)


def plots(result: dict, out: Path, stem: str) -> list[Path]:
    """Log-log PNGs: time (fwd, fwd+bwd) and peak memory against T; decode latency against context."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    for ax, (mode, key, label) in zip(
        axes,
        (
            ("fwd", "seconds", "forward time (s)"),
            ("fwd+bwd", "seconds", "forward+backward time (s)"),
            ("fwd+bwd", "peak_mb", "fwd+bwd peak memory above inputs (MiB)"),
        ),  # fmt: skip
    ):
        rows = [r for r in result["kernels"] if r["mode"] == mode and r.get(key)]
        for case in dict.fromkeys(r["case"] for r in rows):
            pts = [(r["T"], r[key]) for r in rows if r["case"] == case]
            style = "--" if case.startswith("fla") else (":" if "SDPA" in case else "-")
            ax.plot(*zip(*pts), style, marker="o", label=case)
        ax.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel=label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"kernelized bench --preset {stem}: {result['environment']['device']}")
    fig.tight_layout()
    written.append(out / f"{stem}_kernels.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    if result.get("decode"):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for case in dict.fromkeys(r["case"] for r in result["decode"]):
            pts = [(r["context"], r["seconds"] * 1e3) for r in result["decode"] if r["case"] == case]
            ax.plot(*zip(*pts), marker="o", label=case)
        ax.set(xscale="log", yscale="log", xlabel="context length", ylabel="per-token step latency (ms)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        written.append(out / f"{stem}_decode.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores"


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kernelized bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu", help=f"one of {sorted(PRESETS)}")
    parser.add_argument("--out", default="docs/bench", help="folder for <preset>.json, .md and PNGs")
    parser.add_argument("--lengths", default=None, help="comma-separated T values, overriding the preset")
    parser.add_argument("--cases", default=None, help="only kernel cases whose name contains one of these (comma)")
    parser.add_argument(
        "--sections", default="kernels,memory,decode,models", help="any of kernels,memory,decode,models"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--name", default=None, help="output file stem (default: the preset name)")
    args = parser.parse_args(argv)
    check_choice("--preset", args.preset, sorted(PRESETS))
    sections = [s for s in args.sections.split(",") if s]
    for s in sections:
        check_choice("--sections entry", s, ["kernels", "memory", "decode", "models"])
    p = dict(PRESETS[args.preset])
    if args.lengths:
        try:
            p["lengths"] = [int(x) for x in args.lengths.split(",")]
        except ValueError:
            raise ValueError(f"--lengths must be comma-separated integers, got {args.lengths!r}") from None
    if p["device"] == "cuda" and not torch.cuda.is_available():
        print("error: preset needs CUDA, and torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = p["device"], DTYPES[p["dtype"]]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.name or args.preset

    fla_version = None
    if _fla_available():
        from importlib.metadata import PackageNotFoundError, version

        try:
            fla_version = f"fla-core {version('fla-core')}"
        except PackageNotFoundError:
            fla_version = "installed"
    env = dict(device=_device_name(device), torch=torch.__version__, threads=torch.get_num_threads(),
               python=platform.python_version(), fla=fla_version, load_before=_load(),
               cpu_kernels=device == "cpu" and cpu_kernels.usable(torch.zeros(1, dtype=dtype)),
               thp=os.environ.get("THP_MEM_ALLOC_ENABLE"),
               date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))  # fmt: skip
    rate = matmul_rate(device, dtype)
    print(f"matmul rate: {rate / 1e9:.1f} GFLOP/s ({p['dtype']}) on {env['device']}")
    result = dict(preset_name=stem, preset=p, environment=env, matmul_rate=rate,
                  command="kernelized bench " + " ".join(argv if argv is not None else sys.argv[1:]))  # fmt: skip
    result["kernels"], result["memory"], result["decode"], result["models"] = [], [], [], []
    probes: list[Callable[[], None]] = []  # in-process peak-memory measurements, run after every timing
    if "kernels" in sections:
        cases = build_cases(p)
        if args.cases:
            wanted = [w.strip() for w in args.cases.split(",")]
            cases = [c for c in cases if any(w in c.name for w in wanted)]
        result["kernels"] = run_kernels(p, cases, p["lengths"], rate, probes)
    if "memory" in sections:
        for T in tqdm(p["lengths"], desc="memory (fresh processes)", leave=False):
            result["memory"].append(
                dict(case="rebased chunk", mode="fwd+bwd", T=T, peak_mb=fresh_process_peak_mb(p, T))
            )
    if "decode" in sections:
        result["decode"] = run_decode(p, rate)
    if "models" in sections:
        result["models"] = run_models(p, probes)
    for probe in tqdm(probes, desc="peak memory (in-process, after all timings)", leave=False):
        try:
            probe()
        except (RuntimeError, MemoryError) as e:  # the cell keeps its time; its memory stays unmeasured
            print(f"note: a peak-memory probe failed ({type(e).__name__})", file=sys.stderr)
    env["load_after"] = _load()
    result["targets"] = targets(result["kernels"], result["decode"], memory_rows=result["memory"])
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1, default=str))
    (out / f"{stem}.md").write_text(markdown(result))
    written = plots(result, out, stem) if result["kernels"] else []
    print(markdown(result))
    print(f"wrote {out / (stem + '.json')}, {out / (stem + '.md')}" + "".join(f", {w}" for w in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())

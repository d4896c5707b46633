"""What is timed: the kernel cases (every kernel x form, SDPA, fla), the decode step, the experiments' models.

Every tensor has the preset's shape: ``[B, T, H, width]`` (batch, length, heads, width), on its device and dtype.
Times are seconds, FLOPs counted by :mod:`.flops`, memory MiB. In-process peak memory is never measured while
timing: each timed cell appends a probe to ``probes`` for the caller to run after all timings, because the probe
changes glibc's mmap threshold, which would otherwise change the allocator under every later timing.
"""

from __future__ import annotations

import copy
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
from kernelized.experiments.framework.presets import load_preset, set_key
from kernelized.ops.linear import MODES as LINEAR_MODES

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
    poly_max = None if x.dtype in (torch.float32, torch.float64) or x.device != "cpu" else quad_max
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
        # the implicit form keeps no T x T tensor where its fused kernels run (CPU, CUDA): only the budget stops it
        Case("rebased polynomial", "kernelized", "polynomial", _polynomial(x, "rebased"),
             lambda T: flops_quadratic(B, H, T, d, dv), poly_max),
        Case("taylor polynomial", "kernelized", "polynomial", _polynomial(x, "taylor"),
             lambda T: flops_quadratic(B, H, T, d, dv), poly_max),
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

#: The kernel-attention form of every kernel in the models section: the layer's ``auto`` (the cheapest exact form
#: per call) once that exists, else the chunk form.
MODEL_MODE = "auto" if "auto" in LINEAR_MODES else "chunk"


def model_mixers() -> list[str]:
    """The mixers of the models section: softmax, then every registered kernel (in :data:`MODEL_MODE`)."""
    return ["softmax", *kernels.available()]


def _experiment(name: str):
    return importlib.import_module(f"kernelized.experiments.{name}")  # imported when used: each takes ~1 s


def experiment_config(name: str, source: dict) -> dict:
    """Experiment ``name``'s preset ``source["preset"]`` with the ``source["set"]`` overrides (``key=value``, as
    ``--set`` takes them; a grid axis set is pinned), every other grid axis but kernel and seed pinned to its first
    value. Errors name ``models.<name>``."""
    try:
        config = load_preset(name, source["preset"], source["set"], defaults=_experiment(name).DEFAULTS)
    except ValueError as e:
        raise ValueError(f"models.{name} (preset {source['preset']!r}, set {source['set']}): {e}") from None
    for key, values in config.pop("grid").items():
        if key not in ("kernel", "seed"):
            set_key(config, key, values[0])
    return config


def model_configs(m: dict) -> dict[str, dict]:
    """Model name -> its experiment's config (:func:`experiment_config`) for the ``models`` section ``m``."""
    return {name: experiment_config(name, m[name]) for name in MODEL_BUILDERS}


def own_length(name: str, config: dict) -> int:
    """The sequence length the experiment trains its model at (LRA: its task's, after ``per_task``)."""
    if name == "lra":
        lra = _experiment("lra")
        config = lra.resolve(copy.deepcopy(config))
        return lra.default_max_len(config["task"], config["data"])
    return int(config["seq_len"])


def _mqar_model(config: dict, mixer: str, T: int) -> tuple[torch.nn.Module, dict]:
    config = copy.deepcopy(config) | {"kernel": mixer, "seq_len": T}
    config["model"]["mode"] = MODEL_MODE
    return _experiment("mqar").build_model(config), dict(vocab=config["task"]["vocab_size"], classes=None)


def _lm_model(config: dict, mixer: str, T: int) -> tuple[torch.nn.Module, dict]:
    lm = _experiment("lm")
    config = lm.resolve(copy.deepcopy(config) | {"kernel": mixer, "seq_len": T})
    config["model"]["max_len"] = max(T, config["model"].get("max_len") or T)
    for spec in config["model"]["pattern"]:
        if spec.get("mixer") == "kernel":
            spec["mode"] = MODEL_MODE
    from kernelized.data.tokenizers import load_tokenizer

    vocab = config.get("vocab_size") or load_tokenizer(config["tokenizer"]).vocab_size
    return lm.build_model(config, vocab), dict(vocab=vocab, classes=None)


def _lra_model(config: dict, mixer: str, T: int) -> tuple[torch.nn.Module, dict]:
    from kernelized.data import lra as lra_data

    lra = _experiment("lra")
    config = lra.resolve(copy.deepcopy(config) | {"kernel": mixer})
    config["model"]["mode"] = MODEL_MODE
    config["data"] = dict(config["data"], max_len=T)
    info = lra_data.task_info(config["task"], config["data"].get("source"))
    torch.manual_seed(config["seed"])  # as lra.run_one before it builds
    kind = dict(vocab=info.vocab_size, classes=info.num_classes, dual=info.dual, low=lra_data.OFFSET)
    return lra.build_model(config), kind


#: Model name -> ``build(config, mixer, T) -> (model, inputs)``: the experiment's own model with ``mixer`` at
#: length T, made by the experiment's builder (seeded by the config's ``seed``), and what its inputs are
#: (``vocab``; ``classes``: None for next-token targets, else a classifier's class count; ``dual``: two towers;
#: ``low``: the lowest token id to draw, above padding and [CLS]).
MODEL_BUILDERS = {"mqar": _mqar_model, "lra": _lra_model, "lm": _lm_model}


def _train_step(model: torch.nn.Module, kind: dict, batch: int, T: int, device: str, seed: int) -> Callable:
    """One AdamW step of ``model`` on random tokens ``[batch, T]``: cross-entropy of the next token (a causal
    model) or of a random class (a classifier, ``kind["classes"]`` of them)."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(kind.get("low", 0), kind["vocab"], (batch, T + 1), generator=gen)
    if kind["classes"] is None:
        inputs, targets = (tokens[:, :-1],), tokens[:, 1:]
    else:
        x, targets = tokens[:, :-1], torch.randint(kind["classes"], (batch,), generator=gen)
        inputs = (x, x.roll(1, 1)) if kind["dual"] else (x,)
    inputs, targets = tuple(t.to(device) for t in inputs), targets.to(device)
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        logits = model(*inputs)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, -2), targets.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _model_step(p: dict, name: str, config: dict, mixer: str, T: int) -> tuple[Callable, int, int]:
    """A fresh model's training step at length T, its batch (``models.tokens // T``, at least 1) and parameters."""
    batch = max(1, p["models"]["tokens"] // T)
    model, kind = MODEL_BUILDERS[name](config, mixer, T)
    params = sum(t.numel() for t in model.parameters())
    return _train_step(model, kind, batch, T, p["device"], p.get("seed", 0)), batch, params


def run_models(p: dict, probes: list | None = None) -> list[dict]:
    """Training tokens/s and peak memory of the MQAR, LRA and LM experiments' own models (their presets, built by
    their builders) with softmax and every kernel, at each model's own length x ``models.length_factors``.

    One row per (model, mixer, T): a mixer whose step fails (the error is in the row) or takes longer than
    ``models.budget_s`` seconds stops growing T (the longer rows say ``skipped``). ``vs_softmax`` is tokens/s over
    softmax's at the same (model, T). Peak memory, as in :func:`run_kernels`, is measured by functions appended to
    ``probes`` (a fresh model each).
    """
    m, rows = p["models"], []
    for name, config in model_configs(m).items():
        lengths = [own_length(name, config) * f for f in m["length_factors"]]
        for mixer in tqdm(model_mixers(), desc=f"models ({name})", leave=False):
            stopped = None
            for T in lengths:
                row = dict(model=name, mixer=mixer, form=None if mixer == "softmax" else MODEL_MODE, T=T)
                if stopped:
                    rows.append(row | dict(skipped=stopped))
                    continue
                row, stopped = _model_cell(p, name, config, mixer, T, row)
                rows.append(row)
                if probes is not None and "tokens_per_s" in row:
                    probes.append(functools.partial(_model_probe, row, p, name, config, mixer, T))
    return with_softmax_ratio(rows)


def _model_cell(p: dict, name: str, config: dict, mixer: str, T: int, row: dict) -> tuple[dict, str | None]:
    """One timed row, and why longer lengths are skipped (None: they are not)."""
    m = p["models"]
    try:
        step, batch, params = _model_step(p, name, config, mixer, T)
        seconds, n = measure.timed(step, p["device"], m["warmup"], m["steps"], m["budget_s"])
    except Exception as e:  # a kernel that cannot run in this model: the row says why, the run goes on
        error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        print(f"note: models {name}, {mixer}, T={T}: {error}", file=sys.stderr)
        return row | dict(error=error), f"failed at T={T}"
    row |= dict(batch=batch, params=params, step_s=seconds, timed_calls=n, tokens_per_s=batch * T / seconds,
                peak_mb=None)  # fmt: skip
    over = seconds > m["budget_s"]  # measured once when the first step was already over budget
    return row, f"T={T} took {seconds:.3g} s > budget {m['budget_s']} s" if over else None


def with_softmax_ratio(rows: list[dict]) -> list[dict]:
    """Each timed row's ``vs_softmax``: its tokens/s over softmax's at the same (model, T); None without one."""
    soft = {(r["model"], r["T"]): r["tokens_per_s"] for r in rows if r["mixer"] == "softmax" and "tokens_per_s" in r}
    for r in rows:
        if "tokens_per_s" in r:
            base = soft.get((r["model"], r["T"]))
            r["vs_softmax"] = r["tokens_per_s"] / base if base else None
    return rows


def _model_probe(row: dict, p: dict, name: str, config: dict, mixer: str, T: int) -> None:
    """Peak memory (MiB) of one training step of a fresh model into ``row["peak_mb"]``."""
    step, _, _ = _model_step(p, name, config, mixer, T)
    step()  # optimizer state and lazy buffers exist before the measured step, as when timed
    row["peak_mb"] = measure.peak_memory_mb(step, p["device"])

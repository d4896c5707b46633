"""The ``generate`` section of ``kernelized bench``: milliseconds per new token of Hugging Face ``generate`` with
the model's own state (:class:`kernelized.models.hf_cache.KernelizedCache`), of HF ``generate`` recomputing the
sequence (``use_cache=False``, shorter prompts only) and of :func:`kernelized.models.generate`, on the ``lm/tiny``
preset's model (d 64, 4 layers alternating BaseConv and ReBased, learned positions), greedy, batch 1, against the
prompt length. Per token = (time for ``new_tokens`` tokens - time for 1 token) / (``new_tokens`` - 1): the prefill
is left out. Target (issue 16): with the cache, 4k within 1.2x of 64.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm


@dataclass
class Generate:
    prompts: list[int] = field(default_factory=lambda: [64, 256, 1024, 4096])
    new_tokens: int = 33
    no_cache_max: int = 1024  # longest prompt HF generate is timed without a cache (it recomputes every step)
    repeats: int = 3  # median of


def tiny_model(max_len: int):
    from kernelized.experiments.framework.presets import load_preset
    from kernelized.experiments.lm import DEFAULTS, model_config
    from kernelized.models import LanguageModel

    config = load_preset("lm", "tiny", [f"model.max_len={max_len}", f"seq_len={min(max_len, 128)}"], defaults=DEFAULTS)
    config["kernel"] = "rebased"
    torch.manual_seed(0)
    return LanguageModel(model_config(config, 257)).eval()


def _median_time(fn, x: torch.Tensor, n: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x, n)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def run_generate(p: dict) -> list[dict]:
    from kernelized.models.generation import generate
    from kernelized.models.hf import KernelizedForCausalLM

    g = p["generate"]
    model = tiny_model(max(g["prompts"]) + g["new_tokens"])
    hf = KernelizedForCausalLM.from_native(model).eval()
    ways = {
        "HF generate, KernelizedCache": lambda x, n: hf.generate(x, max_new_tokens=n, do_sample=False, pad_token_id=0),
        "HF generate, no cache": lambda x, n: hf.generate(x, max_new_tokens=n, do_sample=False, pad_token_id=0,
                                                          use_cache=False),
        "kernelized.models.generate": lambda x, n: generate(model, x, n, temperature=0),
    }  # fmt: skip
    rows = []
    gen = torch.Generator().manual_seed(p.get("seed", 0))
    for T in tqdm(g["prompts"], desc="generate", leave=False):
        x = torch.randint(0, 256, (1, T), generator=gen)
        for name, fn in ways.items():
            if "no cache" in name and T > g["no_cache_max"]:
                continue
            with torch.no_grad():
                fn(x, 2)  # warm-up
                one = _median_time(fn, x, 1, g["repeats"])
                many = _median_time(fn, x, g["new_tokens"], g["repeats"])
            rows.append(dict(case=name, prompt=T, ms_per_token=1e3 * (many - one) / (g["new_tokens"] - 1)))
    return rows

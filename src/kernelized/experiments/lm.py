"""`kernelized lm`: train a causal language model, measure perplexity (overall, AR hits, other), generate.

    kernelized lm --preset tiny                              # CPU, minutes, offline (stdlib corpus)
    kernelized lm --preset tiny --kernels rebased,taylor,softmax   # one run per kernel + comparison table
    kernelized lm --preset tiny --kernels rebased,based --seeds 0,1,2   # + mean ± 95% CI, paired tests
    kernelized lm --preset rebased-150m --count-params       # build the model, print its size, stop
    torchrun --nproc_per_node 2 -m kernelized lm --preset tiny     # data parallel (gloo on CPU)

A preset (``configs/lm/<name>.yaml`` or a path; every field in :class:`LMSettings`) holds ``tokenizer``,
``seq_len``, ``corpus`` (see :class:`kernelized.data.corpora.CorpusConfig`), ``model`` (``d_model``,
``n_layers``, a ``pattern`` of mixer specs repeated over the layers, ``mlp``, ``positions``, ...), ``train``
(a :class:`TrainConfig`), ``generate``, ``seed`` and an optional ``grid``. ``kernel`` (or ``--kernels``) puts a
kernel into every kernel-attention layer of the pattern; unset, runs are named by the pattern's own attention.
A run is its whole config: ``<out>/kernel=<k>_seed=<s>-<hash>/``; a changed setting is a new run.

Evaluation: perplexity on the validation windows, on AR-hit targets (their bigram occurred earlier in the same
window) and on the others, plus AR hits split by how often their bigram occurs in the training tokens; a check
that prefill + recurrent decoding reproduces the full forward; a generated sample.

Files: ``<out>/<run>/{config.yaml, metrics.jsonl, checkpoint.pt, summary.json, eval.json, result.json,
sample.txt}`` and ``<out>/{results.csv, report.md, ar_hit.png}``; tokenized corpora go to the data cache
(``$KERNELIZED_DATA/lm``). Runs resume: a killed command started again continues from the last checkpoint;
finished runs are not redone.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from kernelized.data.cache import cache_path
from kernelized.data.corpora import CorpusConfig, TokenWindows, load_corpus
from kernelized.data.tokenizers import load_tokenizer
from kernelized.eval.ar_hit import BigramCounts
from kernelized.eval.perplexity import make_lm_eval_fn, perplexities
from kernelized.experiments.framework import cli
from kernelized.experiments.framework.grid import Run, config_hash, expand_grid
from kernelized.experiments.framework.presets import load_preset
from kernelized.experiments.framework.schema import (
    ExperimentConfig,
    check_types,
    deep_update,
    defaults_of,
    train_defaults,
)
from kernelized.experiments.framework.sweep import finished, load_trained_run, other_runs
from kernelized.experiments.lm_report import BUCKETS, DISTANCES, per_kernel, write_report  # noqa: F401 (re-export)
from kernelized.layers.mixers import attention_spec
from kernelized.models import LanguageModel, ModelConfig
from kernelized.models.generation import generate, incremental_logits
from kernelized.train import TrainConfig, Trainer, distributed, load_checkpoint, save_atomic, write_json_atomic
from kernelized.train.checkpoint import write_text_atomic


def _pattern() -> list:
    return [{"mixer": "baseconv", "kernel_size": 3}, {"mixer": "kernel", "kernel": "rebased", "num_heads": 4}]


@dataclass
class Model:
    """A stack of ``n_layers`` blocks whose mixers repeat ``pattern``; pre-norm, MLPs, tied head."""

    d_model: int = 64
    n_layers: int | None = None  # None = len(pattern)
    pattern: list = field(default_factory=_pattern)  # mixer specs, repeated over the layers
    mlp: str | None = "swiglu"
    mlp_hidden: int | None = None
    positions: str = "learned"
    norm: str = "layernorm"
    max_len: int | None = None  # None = seq_len
    dropout: float = 0.0
    tie_embeddings: bool = True
    vocab_multiple: int = 1  # pad the vocabulary to a multiple of this


@dataclass
class Generate:
    prompt: str = "def "
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = 40


@dataclass
class LMSettings(ExperimentConfig):
    """Every field of an LM preset (``configs/lm/*.yaml``)."""

    kernel: str | None = None  # replaces the kernel of every kernel-attention layer; None = the pattern's own
    tokenizer: str = "byte"
    vocab_size: int | None = None  # for --count-params with a tokenizer that needs the network
    seq_len: int = 128
    corpus: dict = field(default_factory=lambda: dataclasses.asdict(CorpusConfig()), metadata={"types": CorpusConfig})
    model: Model = field(default_factory=Model)
    train: dict = field(default_factory=train_defaults, metadata={"types": TrainConfig})
    generate: Generate = field(default_factory=Generate)
    # named models: {label: {any of the fields above}} merged when ``kernel`` is the label; a label whose entry sets
    # ``model.pattern`` names that model (e.g. a Based-style hybrid beside plain kernels in one ``kernel`` axis)
    per_kernel: dict = field(default_factory=dict)


DEFAULTS = defaults_of(LMSettings)


# -- model -------------------------------------------------------------------------------------
def pattern_kernel(model: dict) -> str:
    """The attention of a pattern as one name: its kernels and softmax layers, ``+``-joined (``rebased``)."""
    names = []
    for spec in model["pattern"]:
        if spec.get("mixer") == "kernel":
            names.append(spec.get("kernel"))
        elif spec.get("mixer") == "softmax":
            names.append("softmax")
    return "+".join(dict.fromkeys(names)) or "none"


def resolve(config: dict) -> dict:
    """Types checked, ``per_kernel[kernel]`` merged (the section itself dropped, so a preset without one keeps its
    run ids), ``kernel`` named (the pattern's own when not set), the kernel name valid."""
    check_types(config, LMSettings, "the preset")
    named = config.pop("per_kernel", None) or {}
    if config["kernel"] in named:
        config = deep_update(config, named[config["kernel"]] or {})
        check_types(config, LMSettings, f"per_kernel.{config['kernel']}")
    if config["kernel"] is None:
        config["kernel"] = pattern_kernel(config["model"])
    elif config["kernel"] != pattern_kernel(config["model"]) and config["kernel"] not in named:
        attention_spec(config["kernel"])
    return config


def is_model_name(kernel: str) -> bool:
    """A ``kernel`` value that names a whole model (a ``per_kernel`` label such as ``hybrid``, checked by
    :func:`resolve`), not an attention: its pattern is used as it is."""
    from kernelized.layers.mixers import attention_names

    return kernel not in attention_names() and "+" not in kernel


def model_config(config: dict, vocab_size: int) -> ModelConfig:
    """The ModelConfig of a run: the pattern repeated over the layers, with the run's ``kernel`` in every
    kernel-attention layer ("softmax" swaps those layers for softmax attention with as many heads)."""
    m = config["model"]
    seq_len = int(config["seq_len"])
    positions = m["positions"]
    max_len = int(m.get("max_len") or seq_len)
    if positions != "none" and seq_len > max_len:
        raise ValueError(
            f"seq_len={seq_len} is longer than the {positions} positions allow (model.max_len={max_len}); "
            "raise model.max_len or use positions: none with rotary attention"
        )
    pattern = m["pattern"]
    if not isinstance(pattern, list) or not pattern:
        raise ValueError(f"model.pattern must be a non-empty list of mixer specs, got {pattern!r}")
    kernel = None if config["kernel"] == pattern_kernel(m) or is_model_name(config["kernel"]) else config["kernel"]
    n_layers = int(m.get("n_layers") or len(pattern))
    mixers = [swap_kernel(copy.deepcopy(pattern[i % len(pattern)]), kernel, positions) for i in range(n_layers)]
    blocks = [{"mixer": spec, "mlp": m["mlp"], "mlp_hidden": m["mlp_hidden"]} for spec in mixers]
    multiple = int(m["vocab_multiple"])
    return ModelConfig(
        vocab_size=math.ceil(vocab_size / multiple) * multiple,
        d_model=int(m["d_model"]),
        blocks=blocks,
        max_len=max_len,
        positions=positions,
        norm=m["norm"],
        dropout=float(m["dropout"]),
        tie_embeddings=bool(m["tie_embeddings"]),
    )


def swap_kernel(spec: dict, kernel: str | None, positions: str) -> dict:
    if kernel is None or spec.get("mixer") != "kernel":
        return spec
    if kernel == "softmax":
        return {"mixer": "softmax", "num_heads": spec.get("num_heads", 8), "rotary": positions == "none"}
    if spec.get("kernel") != kernel:
        spec.pop("kernel_options", None)  # options belong to the kernel they were written for
    spec["kernel"] = kernel
    return spec


def load_tokens(config: dict, tok) -> tuple[torch.Tensor, torch.Tensor]:
    """Train/val token streams, tokenized once (by rank 0) and cached in the data cache
    (``lm/tokens-<hash>.pt``, keyed by the corpus settings and the tokenizer): resumed, parallel and
    multi-process runs read the same tokens without tokenizing again."""
    corpus = CorpusConfig(**config["corpus"])
    key = {"corpus": dataclasses.asdict(corpus), "tokenizer": tok.name, "vocab": tok.vocab_size}
    path = cache_path("lm", f"tokens-{config_hash(key)}.pt")
    if distributed.get_rank() == 0 and not path.exists():
        train, val = load_corpus(corpus, tok)
        save_atomic({"train": train, "val": val, "key": json.dumps(key)}, path)
    distributed.barrier()
    cached = torch.load(path, weights_only=True)
    return cached["train"], cached["val"]


@lru_cache(maxsize=2)
def _data(corpus_json: str, tokenizer: str, seq_len: int) -> dict:
    config = {"corpus": json.loads(corpus_json)}
    tok = load_tokenizer(tokenizer)
    train, val = load_tokens(config, tok)
    data = {"tokenizer": tok, "train": TokenWindows(train, seq_len), "val": TokenWindows(val, seq_len)}
    data["bigrams"] = BigramCounts(train, tok.vocab_size)  # for AR hits split by training frequency
    return data


def test_windows(config: dict, tok) -> TokenWindows | None:
    """The test split's windows of a corpus that has one (``ptb``), else None."""
    if config["corpus"]["source"] != "ptb":
        return None
    from kernelized.data.corpora import iter_documents, tokenize_documents

    cfg = CorpusConfig(**{**config["corpus"], "val_split": "test"})
    return TokenWindows(tokenize_documents(iter_documents(cfg, "validation"), tok, cfg.val_tokens), config["seq_len"])


def run_data(config: dict) -> dict:
    """The tokenizer, train/val windows and bigram counts of a run (shared by runs in one process)."""
    return _data(json.dumps(config["corpus"], sort_keys=True), config["tokenizer"], int(config["seq_len"]))


# -- one run -----------------------------------------------------------------------------------
def build_model(config: dict, vocab_size: int | None = None) -> LanguageModel:
    vocab = vocab_size or load_tokenizer(config["tokenizer"]).vocab_size
    torch.manual_seed(config["seed"])
    return LanguageModel(model_config(config, vocab))


def run_one(config: dict, run_dir: Path) -> dict:
    """Train (or resume), evaluate, generate; returns the run's row of the comparison table."""
    data = run_data(config)
    tok, train_ds, val_ds = data["tokenizer"], data["train"], data["val"]
    train_cfg = TrainConfig.from_dict({**config["train"], "seed": config["seed"]})
    model = build_model(config, tok.vocab_size)
    trainer = Trainer(model, train_cfg, train_ds, val_ds, run_dir=run_dir, eval_fn=make_lm_eval_fn(data["bigrams"]))
    summary = trainer.fit()
    if trainer.optimizer is None:  # finished earlier: fit() returned its summary without loading weights
        model.load_state_dict(load_checkpoint(run_dir / "checkpoint.pt")["model"])
    metrics = perplexities(trainer.evaluate())  # every process takes part (sums are reduced)
    if distributed.get_rank() != 0:
        return {}
    device = next(model.parameters()).device
    window = val_ds[0][0][None].to(device)
    step_logits, sizes = incremental_logits(model, window, prefill=max(1, window.shape[1] // 2 + 1))
    with torch.no_grad():
        full = model.eval()(window)
    row = {"run": run_dir.name, "kernel": config["kernel"], "seed": config["seed"], "params": model.num_parameters()}
    row.update({k: metrics[k] for k in ("ppl", "ar_hit_ppl", "other_ppl", "ar_hit_fraction", "accuracy", "loss")})
    row.update({k: summary.get(k) for k in ("train_loss", "steps", "train_time_s", "tokens_per_s")})
    row.update(
        decode_state_numbers=sizes[-1],
        decode_state_growth_per_token=sizes[-1] - sizes[-2] if len(sizes) > 1 else 0,
        decode_max_abs_diff=float((step_logits - full).abs().max()),
        eval_tokens=len(val_ds) * val_ds.seq_len,
    )
    for name in BUCKETS + DISTANCES:  # AR hits by their bigram's training count and by how far back it occurred
        row.update({k: metrics[k] for k in (f"ar_hit_ppl_{name}", f"ar_hit_share_{name}") if k in metrics})
    test = test_windows(config, tok)
    if test is not None:  # PTB: the test split too (reported, never used for any choice)
        scores = perplexities(trainer.evaluate(test))
        row.update({f"test_{k}": scores[k] for k in ("ppl", "ar_hit_ppl", "other_ppl", "loss")})
    write_text_atomic(_sample(model, tok, config["generate"], device, config["seed"]), run_dir / "sample.txt")
    write_json_atomic(row, run_dir / "eval.json")
    return row


def train_flops(runs: list[Run]) -> float:
    total = 0.0
    for run in runs:
        c, t = run.config, run.config["train"]
        with torch.device("meta"):
            params = build_model(c, c.get("vocab_size") or 256).num_parameters()
        steps = t.get("max_steps") or t["epochs"] * math.ceil(
            c["corpus"]["train_tokens"] / c["seq_len"] / t["batch_size"]
        )
        total += 6 * params * steps * t["batch_size"] * c["seq_len"]
    return total


# -- what kernelized analyze needs -------------------------------------------------------------
def load_trained(run_dir: str | Path) -> tuple[dict, torch.nn.Module]:
    """A run's config and its model with the checkpoint's weights, in eval mode."""
    return load_trained_run(run_dir, build_model)


def analysis_batch(config: dict, num_examples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first validation windows: ``inputs [N, L]`` and ``query_mask [N, L]``, True at the positions whose
    prediction is an AR hit (the next token completes a bigram seen earlier in the window)."""
    from kernelized.eval.ar_hit import ar_hit_mask

    val = run_data(config)["val"]
    pairs = [val[i] for i in range(min(num_examples, len(val)))]
    inputs = torch.stack([x for x, _ in pairs])
    tokens = torch.cat([inputs, torch.stack([y[-1:] for _, y in pairs])], dim=1)
    return inputs, ar_hit_mask(tokens)[:, 1:]


def _sample(model, tok, gen: dict, device, seed: int) -> str:
    prompt = gen.get("prompt", "def ")
    ids = tok.encode(prompt) or [tok.eos_id or 0]
    max_new = int(gen.get("max_new_tokens", 200))
    max_len = model.cfg.max_len if model.cfg.positions != "none" else len(ids) + max_new
    ids = ids[-max(1, max_len - max_new) :]
    g = torch.Generator(device=device).manual_seed(seed)
    out = generate(
        model,
        torch.tensor([ids], device=device),
        min(max_new, max_len - len(ids)),
        temperature=float(gen.get("temperature", 0.8)),
        top_k=gen.get("top_k", 40),
        eos_id=tok.eos_id,
        generator=g,
    )
    return tok.decode(out[0].tolist())


# -- CLI ---------------------------------------------------------------------------------------
def prepare_runs(config: dict, args) -> list[Run]:
    cli.narrow_axes(config, args)
    if config["kernel"] is None and "kernel" not in config["grid"]:
        config["kernel"] = pattern_kernel(config["model"])  # runs are named by their attention
    runs = expand_grid(config, always=("kernel", "seed"), resolve=resolve)
    vocab = config.get("vocab_size") or load_tokenizer(config["tokenizer"]).vocab_size
    for run in runs:  # fail on a bad model or train section before reading any data
        try:
            with torch.device("meta"):
                build_model(run.config, vocab)
            TrainConfig.from_dict({**run.config["train"], "seed": run.config["seed"]})
            CorpusConfig(**run.config["corpus"])
        except (ValueError, TypeError) as e:
            raise ValueError(f"run {run.run_id}: {e}") from None
    return runs


def count_params(runs: list[Run], name: str) -> int:
    """Build each run's model on the meta device and print its size (no data, no tokenizer download)."""
    for run in runs:
        vocab = run.config.get("vocab_size") or load_tokenizer(run.config["tokenizer"]).vocab_size
        with torch.device("meta"):
            n = build_model(run.config, vocab).num_parameters()
        print(f"{name} kernel={run.config['kernel']}: {n:,} parameters ({n / 1e6:.1f}M)")
    return 0


@cli.command
def main(argv: list[str]) -> int:
    parser = cli.experiment_parser("lm", __doc__, default_preset="tiny")
    parser.add_argument("--count-params", action="store_true", help="build the model(s), print their size, stop")
    args = parser.parse_args(argv)
    config = load_preset("lm", args.preset, cli.overrides(args), defaults=DEFAULTS)
    name = Path(str(args.preset)).stem
    if args.count_params:  # the preset's vocab_size stands in for a tokenizer that needs the network
        return count_params(prepare_runs(config, args), name)
    runs = prepare_runs(config, args)
    name, out, workers, todo = cli.start(args, config, "lm", runs, train_flops)
    if args.dry_run:
        print("\n".join(f"  {run.run_id}" for run in runs))
        return 0
    distributed.init_from_env()
    for run in [] if args.report_only else todo:  # tokenizer and corpus problems: found before any run starts
        run_data(run.config)
    start = time.perf_counter()
    records = cli.sweep(args, runs, run_one, out, workers, "lm")
    if distributed.get_rank() == 0:
        table = write_report(config, name, records, out, other_runs(runs, out))
        print(f"\n{table}\n[lm] wrote {out / 'report.md'} ({time.perf_counter() - start:.0f} s)")
        done = finished(records)
        if done:
            print(f"[lm] sample ({done[0]['run_id']}):\n{(Path(done[0]['run_dir']) / 'sample.txt').read_text()[:500]}")
    distributed.barrier()
    return cli.finish(records)

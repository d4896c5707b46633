"""`kernelized lm`: train a causal language model, measure perplexity (overall, AR hits, other), generate.

    kernelized lm --preset tiny                              # CPU, minutes, offline (stdlib corpus)
    kernelized lm --preset tiny --kernels rebased,taylor,softmax   # one run per kernel + comparison table
    kernelized lm --preset tiny --kernels rebased,taylor --seeds 0,1,2   # + mean ± 95% CI, paired tests
    kernelized lm --preset rebased-150m --count-params       # build the model, print its size, stop
    torchrun --nproc_per_node 2 -m kernelized lm --preset tiny     # data parallel (gloo on CPU)

A preset (``configs/lm/<name>.yaml`` or a path) holds ``tokenizer``, ``seq_len``, ``corpus`` (see
:class:`kernelized.data.corpora.CorpusConfig`), ``model`` (``d_model``, ``n_layers``, a ``pattern`` of mixer
specs repeated over the layers, ``mlp``, ``positions``, ...), ``train`` (a :class:`TrainConfig`), ``generate``
and optionally ``kernels`` and ``seeds``. ``--set train.max_steps=50`` overrides any field.

Evaluation: perplexity on the validation windows, on AR-hit targets (their bigram occurred earlier in the same
window) and on the others, plus AR hits split by how often their bigram occurs in the training tokens; a check
that prefill + recurrent decoding reproduces the full forward; a generated sample.

Files: ``<out>/<run>/{config.yaml, metrics.jsonl, checkpoint.pt, summary.json, eval.json, sample.txt}`` and
``<out>/{results.csv, report.md, ar_hit.png, tokens-<hash>.pt}``. Runs resume: a killed command started again
continues from the last checkpoint; finished runs are not redone.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import hashlib
import json
import math
import sys
from pathlib import Path

import torch
import yaml

from kernelized import kernels
from kernelized.data.corpora import CorpusConfig, TokenWindows, load_corpus
from kernelized.data.tokenizers import load_tokenizer
from kernelized.eval.ar_hit import BigramCounts
from kernelized.eval.perplexity import FREQUENCY_BUCKETS, bucket_name, make_lm_eval_fn, perplexities
from kernelized.eval.stats import mean_ci, paired_comparison
from kernelized.experiments.common import load_yaml_text
from kernelized.models import LanguageModel, ModelConfig
from kernelized.models.generation import generate, incremental_logits
from kernelized.train import TrainConfig, Trainer, distributed, load_checkpoint, save_atomic, write_json_atomic

PRESET_DIR = Path(__file__).resolve().parents[3] / "configs" / "lm"
MODEL_KEYS = {"d_model", "n_layers", "pattern", "mlp", "mlp_hidden", "positions", "norm", "max_len", "dropout"}
MODEL_KEYS |= {"tie_embeddings", "vocab_multiple"}


# -- presets -----------------------------------------------------------------------------------
def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str, overrides: list[str] = ()) -> dict:
    """A preset dict from ``configs/lm/<name>.yaml`` (or a yaml path), with ``key.sub=value`` overrides applied."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(f"preset must be one of {available_presets()} or a yaml file, got {name_or_path!r}")
    preset = load_yaml_text(path.read_text()) or {}
    preset.setdefault("name", path.stem)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value (e.g. train.max_steps=50), got {item!r}")
        key, value = item.split("=", 1)
        node = preset
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {key}: {part!r} is not a section of the preset")
        node[leaf] = load_yaml_text(value)
    return preset


def model_config(preset: dict, vocab_size: int, kernel: str | None = None) -> ModelConfig:
    """The ModelConfig of a preset; ``kernel`` replaces the kernel of every kernel-attention layer
    ("softmax" swaps those layers for softmax attention with as many heads)."""
    m = dict(preset["model"])
    unknown = sorted(set(m) - MODEL_KEYS)
    if unknown:
        raise ValueError(f"model section has unknown keys {unknown}; expected a subset of {sorted(MODEL_KEYS)}")
    seq_len = int(preset["seq_len"])
    positions = m.get("positions", "learned")
    max_len = int(m.get("max_len") or seq_len)
    if positions != "none" and seq_len > max_len:
        raise ValueError(
            f"seq_len={seq_len} is longer than the {positions} positions allow (model.max_len={max_len}); "
            "raise model.max_len or use positions: none with rotary attention"
        )
    pattern = m.get("pattern")
    if not isinstance(pattern, list) or not pattern:
        raise ValueError(f"model.pattern must be a non-empty list of mixer specs, got {pattern!r}")
    n_layers = int(m.get("n_layers", len(pattern)))
    mixers = [swap_kernel(copy.deepcopy(pattern[i % len(pattern)]), kernel, positions) for i in range(n_layers)]
    blocks = [{"mixer": spec, "mlp": m.get("mlp", "swiglu"), "mlp_hidden": m.get("mlp_hidden")} for spec in mixers]
    multiple = int(m.get("vocab_multiple", 1))
    return ModelConfig(
        vocab_size=math.ceil(vocab_size / multiple) * multiple,
        d_model=int(m["d_model"]),
        blocks=blocks,
        max_len=max_len,
        positions=positions,
        norm=m.get("norm", "layernorm"),
        dropout=float(m.get("dropout", 0.0)),
        tie_embeddings=bool(m.get("tie_embeddings", True)),
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


def check_kernels(names: list[str]) -> list[str]:
    valid = kernels.available() + ["softmax"]
    bad = [n for n in names if n not in valid]
    if bad:
        raise ValueError(f"--kernels must name kernels from {valid}, got {bad}")
    return names


def load_tokens(preset: dict, tok, out: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Train/val token streams, tokenized once (by rank 0) and cached in ``out/tokens-<hash>.pt``: resumed and
    multi-process runs read the same tokens without tokenizing again."""
    fields = {f.name for f in dataclasses.fields(CorpusConfig)}
    unknown = sorted(set(preset.get("corpus", {})) - fields)
    if unknown:
        raise ValueError(f"corpus section has unknown keys {unknown}; expected a subset of {sorted(fields)}")
    corpus = CorpusConfig(**preset.get("corpus", {}))
    key = json.dumps({"corpus": dataclasses.asdict(corpus), "tokenizer": tok.name, "vocab": tok.vocab_size})
    path = out / f"tokens-{hashlib.sha256(key.encode()).hexdigest()[:12]}.pt"
    if distributed.get_rank() == 0 and not path.exists():
        train, val = load_corpus(corpus, tok)
        out.mkdir(parents=True, exist_ok=True)
        save_atomic({"train": train, "val": val, "key": key}, path)
    distributed.barrier()
    cached = torch.load(path, weights_only=True)
    return cached["train"], cached["val"]


# -- one run -----------------------------------------------------------------------------------
def run_one(
    preset: dict, run_dir: Path, kernel: str | None, data: dict, device: str, progress: bool, seed: int | None = None
) -> dict:
    """Train (or resume), evaluate, generate; returns the row of the comparison table.

    ``seed`` (default: the preset's ``train.seed``) sets the initialisation and the data order."""
    tok, train_ds, val_ds = data["tokenizer"], data["train"], data["val"]
    cfg = model_config(preset, tok.vocab_size, kernel)
    train = {**preset.get("train", {}), "device": device, "progress": progress}
    if seed is not None:
        train["seed"] = seed
    train_cfg = TrainConfig.from_dict(train)
    rank0 = distributed.get_rank() == 0
    if rank0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(
            yaml.safe_dump({"preset": preset, "kernel": kernel, "model": cfg.to_dict()}, sort_keys=False)
        )
    torch.manual_seed(train_cfg.seed)
    model = LanguageModel(cfg)
    eval_fn = make_lm_eval_fn(data.get("bigrams"))
    trainer = Trainer(model, train_cfg, train_ds, val_ds, run_dir=run_dir, eval_fn=eval_fn)
    summary = trainer.fit()
    result_path = run_dir / "eval.json"
    if result_path.exists():  # evaluated earlier too: nothing left to do
        return json.loads(result_path.read_text())
    if trainer.optimizer is None:  # finished earlier: fit() returned its summary without loading weights
        model.load_state_dict(load_checkpoint(run_dir / "checkpoint.pt")["model"])
    metrics = perplexities(trainer.evaluate())  # every process takes part (sums are reduced)
    if not rank0:
        return {}
    device_ = next(model.parameters()).device
    gen = preset.get("generate", {})
    sample = _sample(model, tok, gen, device_, train_cfg.seed)
    window = val_ds[0][0][None].to(device_)
    step_logits, sizes = incremental_logits(model, window, prefill=max(1, window.shape[1] // 2 + 1))
    with torch.no_grad():
        full = model.eval()(window)
    row = {
        "run": run_dir.name,
        "kernel": kernel or "-",
        "seed": train_cfg.seed,
        "params": model.num_parameters(),
        "ppl": metrics["ppl"],
        "ar_hit_ppl": metrics["ar_hit_ppl"],
        "other_ppl": metrics["other_ppl"],
        "ar_hit_fraction": metrics["ar_hit_fraction"],
        "accuracy": metrics["accuracy"],
        "loss": metrics["loss"],
        "train_loss": summary.get("train_loss"),
        "steps": summary.get("steps"),
        "train_time_s": summary.get("train_time_s"),
        "tokens_per_s": summary.get("tokens_per_s"),
        "decode_state_numbers": sizes[-1],
        "decode_state_growth_per_token": sizes[-1] - sizes[-2] if len(sizes) > 1 else 0,
        "decode_max_abs_diff": float((step_logits - full).abs().max()),
        "eval_tokens": len(val_ds) * val_ds.seq_len,
    }
    for name in BUCKETS:  # AR hits by how often their bigram occurs in the training tokens
        for key in (f"ar_hit_ppl_{name}", f"ar_hit_share_{name}"):
            if key in metrics:
                row[key] = metrics[key]
    (run_dir / "sample.txt").write_text(sample)
    write_json_atomic(row, result_path)
    return row


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


# -- reports -----------------------------------------------------------------------------------
COLUMNS = ["run", "kernel", "seed", "params", "ppl", "ar_hit_ppl", "other_ppl", "ar_hit_fraction", "accuracy"]
COLUMNS += ["train_loss", "steps", "train_time_s", "tokens_per_s", "decode_state_numbers"]
COLUMNS += ["decode_state_growth_per_token", "decode_max_abs_diff"]
METRICS = ["ppl", "ar_hit_ppl", "other_ppl"]
BUCKETS = [bucket_name(lo, hi) for lo, hi in FREQUENCY_BUCKETS]
COLUMNS += [f"ar_hit_{kind}_{name}" for name in BUCKETS for kind in ("ppl", "share")]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v)


def _table(header: list[str], body: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in body]


def aggregate(rows: list[dict]) -> list[dict]:
    """Per kernel: mean and 95% CI over seeds of each perplexity (:func:`kernelized.eval.stats.mean_ci`)."""
    kernels_ = list(dict.fromkeys(r["kernel"] for r in rows))
    out = []
    for k in kernels_:
        mine = sorted((r for r in rows if r["kernel"] == k), key=lambda r: r.get("seed") or 0)
        cis = {m: mean_ci([r[m] for r in mine]) for m in METRICS}
        out.append({"kernel": k, "seeds": [r.get("seed") for r in mine], **cis})
    return out


def write_report(rows: list[dict], out: Path, preset: dict) -> None:
    """results.csv (one line per run), report.md (per-kernel means with 95% CIs when there are several seeds,
    paired comparisons with the first kernel, every run) and ar_hit.png in ``out``."""
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"# LM preset `{preset['name']}`",
        "",
        f"Corpus `{preset['corpus'].get('source', 'stdlib')}`, tokenizer `{preset.get('tokenizer', 'byte')}`, "
        f"seq_len {preset['seq_len']}. Perplexity on the validation windows; AR hits are targets completing a "
        "bigram seen earlier in the same window (Zoology), other = the rest. "
        "decode_max_abs_diff: max |logits| difference between prefill+recurrent decoding and the full forward.",
        "",
    ]
    groups = aggregate(rows)
    if any(len(g["seeds"]) > 1 for g in groups):
        lines += ["## Per kernel: mean ± 95% CI over seeds", ""]
        body = [[g["kernel"], len(g["seeds"])] + [g[m].format(3) for m in METRICS] for g in groups]
        lines += _table(["kernel", "seeds"] + METRICS, body) + [""]
        base = groups[0]
        paired = []
        for g in groups[1:]:
            common = sorted(set(g["seeds"]) & set(base["seeds"]))
            if len(common) < 2:
                continue
            for m in METRICS:
                a = [r[m] for s in common for r in rows if r["kernel"] == g["kernel"] and r.get("seed") == s]
                b = [r[m] for s in common for r in rows if r["kernel"] == base["kernel"] and r.get("seed") == s]
                c = paired_comparison(a, b)
                ci = f"[{c['t_ci_low']:.3f}, {c['t_ci_high']:.3f}]"
                paired.append([f"{g['kernel']} - {base['kernel']}", m, len(common), c["mean_diff"], ci, c["p_ttest"]])
                paired[-1].append(f"{c['p_permutation']:.3g} (min {c['min_p']:.3g})")
        if paired:
            lines += ["## Paired differences (same seeds)", ""]
            header = ["comparison", "metric", "n", "mean diff", "95% CI (t)", "p (t-test)", "p (sign flip)"]
            lines += _table(header, paired) + [""]
        lines += ["## Every run", ""]
    shown = ["kernel", "seed", "params", "ppl", "ar_hit_ppl", "other_ppl", "ar_hit_fraction", "accuracy", "steps"]
    shown += ["train_time_s", "decode_state_growth_per_token", "decode_max_abs_diff"]
    lines += _table(shown, [[r.get(c) for c in shown] for r in rows])
    if any(f"ar_hit_ppl_{BUCKETS[0]}" in r for r in rows):
        lines += [
            "",
            "## AR hits by the bigram's count in the training tokens",
            "",
            "Perplexity (share of all validation targets) of AR hits whose bigram occurs that many times in the "
            "training tokens; Zoology: rare bigrams separate the architectures.",
            "",
        ]
        cells = [
            [r["kernel"], r.get("seed")]
            + [f"{r.get(f'ar_hit_ppl_{b}', float('nan')):.3f} ({r.get(f'ar_hit_share_{b}', 0):.3f})" for b in BUCKETS]
            for r in rows
        ]
        lines += _table(["kernel", "seed"] + [f"seen {b.removeprefix('train')}x" for b in BUCKETS], cells)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    _figure(groups, out, preset)


def _figure(groups: list[dict], out: Path, preset: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(2.4 + 1.2 * len(groups), 3.4))
    xs = range(len(groups))
    for shift, key, label in ((-0.2, "ar_hit_ppl", "AR hits"), (0.2, "other_ppl", "other tokens")):
        means = [g[key].mean for g in groups]
        errs = [0.0 if math.isnan(g[key].half_width) else g[key].half_width for g in groups]
        bars = ax.bar([x + shift for x in xs], means, width=0.4, yerr=errs, capsize=3, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
    ax.set_xticks(list(xs), [g["kernel"] for g in groups])
    ax.set_ylabel("validation perplexity")
    ax.set_ylim(0, 1.3 * max(max(g["ar_hit_ppl"].mean, g["other_ppl"].mean) for g in groups))
    ax.legend(loc="upper center", ncols=2, fontsize=8)
    n = max(len(g["seeds"]) for g in groups)
    ax.set_title(f"lm/{preset['name']}: AR hits vs other tokens" + (f" (mean, 95% CI, {n} seeds)" if n > 1 else ""))
    fig.tight_layout()
    fig.savefig(out / "ar_hit.png", dpi=120)
    plt.close(fig)


# -- CLI ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kernelized lm", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="tiny", help=f"one of {available_presets()} or a yaml path")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset field")
    p.add_argument("--kernels", default=None, help="comma-separated kernels to compare (softmax = softmax attention)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds, one run each (default: train.seed)")
    p.add_argument("--out", default=None, help="output folder (default runs/lm/<preset>)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.add_argument("--count-params", action="store_true", help="build the model(s), print the parameter count, stop")
    return p


def _parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError as e:
        raise ValueError(f"--seeds must be comma-separated integers, got {text!r}") from e


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        preset = load_preset(args.preset, args.set)
        names = args.kernels.split(",") if args.kernels else preset.get("kernels") or [None]
        kernel_list = check_kernels([n for n in names if n]) if names != [None] else [None]
        seeds = _parse_seeds(args.seeds) if args.seeds else preset.get("seeds") or [None]
        if args.count_params:  # the preset's vocab_size stands in for a tokenizer that needs the network
            vocab = preset.get("vocab_size") or load_tokenizer(preset.get("tokenizer", "byte")).vocab_size
            for kernel in kernel_list:
                with torch.device("meta"):  # shapes only: no memory, no initialisation cost
                    model = LanguageModel(model_config(preset, vocab, kernel))
                n = model.num_parameters()
                print(f"{preset['name']} kernel={kernel or '-'}: {n:,} parameters ({n / 1e6:.1f}M)")
            return 0
        tok = load_tokenizer(preset.get("tokenizer", "byte"))
        for kernel in kernel_list:  # fail on a bad model or train section before reading any data
            model_config(preset, tok.vocab_size, kernel)
        TrainConfig.from_dict(preset.get("train", {}))
        distributed.init_from_env()
        out = Path(args.out) if args.out else Path("runs") / "lm" / preset["name"]
        seq_len = int(preset["seq_len"])
        train, val = load_tokens(preset, tok, out)
        data = {"tokenizer": tok, "train": TokenWindows(train, seq_len), "val": TokenWindows(val, seq_len)}
        data["bigrams"] = BigramCounts(train, tok.vocab_size)  # for AR hits split by training frequency
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = []
    for kernel in kernel_list:
        for seed in seeds:
            name = kernel or "model"
            run_dir = out / (name if seed is None else f"{name}-seed{seed}")
            row = run_one(preset, run_dir, kernel, data, args.device, progress=not args.no_progress, seed=seed)
            rows.append(row)
            if row and distributed.get_rank() == 0:
                print(
                    f"[lm] {run_dir.name}: ppl {row['ppl']:.3f}  AR-hit ppl {row['ar_hit_ppl']:.3f}  "
                    f"other ppl {row['other_ppl']:.3f}  ({row['params']:,} params)"
                )
    if distributed.get_rank() == 0:
        write_report(rows, out, preset)
        print(f"[lm] wrote {out / 'report.md'}")
        first = rows[0]["run"]
        print(f"[lm] sample ({first}):\n{(out / first / 'sample.txt').read_text()[:500]}")
    distributed.barrier()
    return 0

"""``kernelized analyze``: attention maps, IoU with softmax and ReBased's gamma/beta for trained MQAR runs.

Two ways to call it:

- ``kernelized analyze RUN_DIR [--reference SOFTMAX_RUN_DIR]``: one run's attention maps on its test
  examples (PNG: every attention layer averaged over heads, and the heads of the last layer), the IoU of each
  layer's map with the reference run's on the same inputs, and its gamma/beta statistics.
- ``kernelized analyze SWEEP_DIR`` (e.g. ``runs/mqar/demo``): every run of a sweep against the softmax run
  with the same length, width and seed (same data): IoU per kernel and length (mean ± 95% CI over seeds),
  gamma/beta of ReBased-like kernels across lengths, and map PNGs of seed 0. Writes ``analysis.md``.

The IoU protocol is :mod:`kernelized.eval.attention`'s: per query row, the smallest set of keys holding at
least ``--mass`` (0.9) of the head-averaged weight; IoU of the two sets; averaged over the positions that
carry a label (queries of MQAR), then over examples.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from kernelized.eval.attention import attention_maps, best_head_iou, draw_maps, gamma_beta_stats, map_iou
from kernelized.eval.stats import mean_ci
from kernelized.experiments import mqar
from kernelized.experiments.common import markdown_table, read_yaml
from kernelized.train.checkpoint import load_checkpoint, write_text_atomic


def load_run(run_dir: str | Path) -> tuple[dict, torch.nn.Module]:
    """A trained (or checkpointed) MQAR run: its config and its model with the checkpoint's weights, in eval mode."""
    run_dir = Path(run_dir)
    config_path, ckpt_path = run_dir / "config.yaml", run_dir / "checkpoint.pt"
    for path in (config_path, ckpt_path):
        if not path.is_file():
            raise ValueError(f"{run_dir} is not a trained MQAR run: {path.name} is missing")
    config = read_yaml(config_path)
    model = mqar.build_model(config)
    model.load_state_dict(load_checkpoint(ckpt_path)["model"])
    return config, model.eval()


def test_batch(config: dict, num_examples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``num_examples`` test examples of a run: ``inputs, labels [N, L]``."""
    _, test = mqar.datasets(config)
    inputs, labels = test.tensors
    return inputs[:num_examples], labels[:num_examples]


def same_task(a: dict, b: dict) -> bool:
    keys = ("vocab_size", "num_kv_pairs", "power_a", "random_non_queries", "num_test", "data_seed")
    return a["seq_len"] == b["seq_len"] and a["seed"] == b["seed"] and all(a["task"][k] == b["task"][k] for k in keys)


def layer_ious(maps: dict, ref_maps: dict, labels: torch.Tensor, mass: float) -> list[float]:
    """Mean IoU over examples of attention layer i of one model with layer i of the other (head means)."""
    out = []
    for a, b in zip(maps.values(), ref_maps.values()):
        out.append(map_iou(a, b, mass=mass, query_mask=labels != -100).mean().item())
    return out


def layer_best_heads(maps: dict, ref_maps: dict, labels: torch.Tensor, mass: float) -> list[float]:
    """Per layer, the IoU of the single head that overlaps most with the reference layer's head mean."""
    return [best_head_iou(a, b, mass, labels != -100)[1] for a, b in zip(maps.values(), ref_maps.values())]


def _accuracy(model, inputs, labels) -> float:
    with torch.no_grad():
        pred = model(inputs).argmax(-1)
    mask = labels != -100
    return ((pred == labels) & mask).sum().item() / max(mask.sum().item(), 1)


def draw_run(config: dict, maps: dict, labels: torch.Tensor, path: Path, ref_maps: dict | None = None) -> Path:
    """PNG of example 0: each layer averaged over heads (and the reference's), then the last layer's heads."""
    panels = {}
    for i, m in enumerate(maps.values()):
        panels[f"{config['kernel']} layer {i} (head mean)"] = m[0].mean(0)
    for i, m in enumerate((ref_maps or {}).values()):
        panels[f"softmax layer {i} (head mean)"] = m[0].mean(0)
    last = list(maps.values())[-1][0]
    for h in range(min(last.shape[0], 8)):
        panels[f"{config['kernel']} last layer, head {h}"] = last[h]
    title = f"{config['kernel']}, L={config['seq_len']}, d_model={config['model']['d_model']}, seed {config['seed']}"
    return draw_maps(panels, path, title=title, marks=labels[0] != -100)


def analyze_run(run_dir: Path, reference: Path | None, out: Path, num_examples: int, mass: float) -> dict:
    config, model = load_run(run_dir)
    inputs, labels = test_batch(config, num_examples)
    maps = attention_maps(model, inputs)
    if not maps:
        raise ValueError(f"{run_dir}: the model has no attention layer with attention weights")
    result = {"run": str(run_dir), "kernel": config["kernel"], "accuracy": _accuracy(model, inputs, labels)}
    ref_maps = None
    if reference is not None:
        ref_config, ref_model = load_run(reference)
        if not same_task(config, ref_config):
            raise ValueError(
                f"{reference} was trained on another task or seed than {run_dir}; IoU needs the same inputs"
            )
        ref_maps = attention_maps(ref_model, inputs)
        result["iou_by_layer"] = layer_ious(maps, ref_maps, labels, mass)
        result["best_head_iou_by_layer"] = layer_best_heads(maps, ref_maps, labels, mass)
    result["gamma_beta"] = gamma_beta_stats(model)
    result["figure"] = str(draw_run(config, maps, labels, out / f"maps_{run_dir.name}.png", ref_maps))
    return result


# -- a whole sweep -----------------------------------------------------------------------------------
def _runs(sweep_dir: Path) -> list[tuple[Path, dict]]:
    runs = []
    for d in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        if (d / "config.yaml").is_file() and (d / "checkpoint.pt").is_file():
            runs.append((d, read_yaml(d / "config.yaml")))
    return runs


def analyze_sweep(sweep_dir: Path, out: Path, num_examples: int, mass: float) -> str:
    runs = _runs(sweep_dir)
    if not runs:
        raise ValueError(f"{sweep_dir} holds no trained runs (folders with config.yaml and checkpoint.pt)")
    softmax = [(d, c) for d, c in runs if c["kernel"] == "softmax"]
    iou_rows: dict[tuple, list[float]] = {}
    layer_count = 0
    drawn = set()
    gb: dict[tuple, list[dict]] = {}
    for run_dir, config in runs:
        _, model = load_run(run_dir)
        for row in gamma_beta_stats(model):
            gb.setdefault((config["kernel"], config["seq_len"], row["param"]), []).append(row)
        if config["kernel"] == "softmax":
            continue
        refs = [
            (d, c) for d, c in softmax if same_task(config, c) and c["model"]["d_model"] == config["model"]["d_model"]
        ]
        if not refs:
            continue
        # the softmax run at the same lr if there is one, else the first
        ref_dir, _ = next(((d, c) for d, c in refs if c["train"]["lr"] == config["train"]["lr"]), refs[0])
        inputs, labels = test_batch(config, num_examples)
        maps = attention_maps(model, inputs)
        _, ref_model = load_run(ref_dir)
        ref_maps = attention_maps(ref_model, inputs)
        ious = layer_ious(maps, ref_maps, labels, mass) + layer_best_heads(maps, ref_maps, labels, mass)
        layer_count = max(layer_count, len(ious) // 2)
        key = (config["kernel"], config["seq_len"], config["model"]["d_model"], config["train"]["lr"])
        iou_rows.setdefault(key, []).append(ious)
        picture = (config["kernel"], config["seq_len"])
        if picture not in drawn and config["seed"] == min(c["seed"] for _, c in runs):
            draw_run(config, maps, labels, out / f"maps_{config['kernel']}_L{config['seq_len']}.png", ref_maps)
            drawn.add(picture)

    lines = [
        f"# Attention analysis of {sweep_dir}",
        "",
        "IoU of each attention layer's top-mass sets with the softmax model's on the same test inputs "
        f"({num_examples} examples; per query row the smallest key set holding >= {mass:g} of the head-averaged "
        "weight; averaged over labelled query positions; mean ± 95% CI over seeds). The softmax reference is "
        "the run with the same length, width, seed and learning rate. `best head`: the IoU of the kernel "
        "model's single head that overlaps most with the softmax head mean.",
        "",
    ]
    rows = []
    for (kernel, L, d, lr), values in sorted(iou_rows.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        row = {"kernel": kernel, "L": L, "d_model": d, "lr": lr, "seeds": len(values)}
        for i in range(layer_count):
            ci = mean_ci([v[i] for v in values if len(v) == 2 * layer_count])
            row[f"layer {i}: IoU (head mean)"] = ci.format(3) if ci.n else "–"
            ci = mean_ci([v[layer_count + i] for v in values if len(v) == 2 * layer_count])
            row[f"layer {i}: best head"] = ci.format(3) if ci.n else "–"
        rows.append(row)
    lines.append(markdown_table(rows) if rows else "(no run has a softmax reference)\n")
    lines += [
        "## Learned gamma and beta (ReBased-like kernels)",
        "",
        "Mean and standard deviation over the entries of each parameter, averaged over layers and seeds.",
        "",
    ]
    gb_rows = []
    for (kernel, L, param), vals in sorted(gb.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        gb_rows.append(
            {
                "kernel": kernel,
                "L": L,
                "param": param,
                "mean": sum(v["mean"] for v in vals) / len(vals),
                "std": sum(v["std"] for v in vals) / len(vals),
                "n": len(vals),
            }
        )
    lines.append(markdown_table(gb_rows, digits=3) if gb_rows else "(no kernel with learned gamma/beta)\n")
    figures = sorted(p.name for p in out.glob("maps_*.png"))
    if figures:
        lines += ["## Attention maps (test example 0, seed 0)", ""] + [f"![{f}]({f})" for f in figures]
    text = "\n".join(lines) + "\n"
    write_text_atomic(text, out / "analysis.md")
    return text


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="kernelized analyze", description=__doc__.split("\n")[0])
    p.add_argument("path", help="a trained MQAR run folder, or a sweep folder holding many")
    p.add_argument("--reference", default=None, help="softmax run folder to compare one run with")
    p.add_argument("--examples", type=int, default=16, help="test examples to analyse")
    p.add_argument("--mass", type=float, default=0.9, help="share of each row's weight in its top-mass set")
    p.add_argument("--out", default=None, help="output folder (default: <path>/analysis)")
    return p.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    path = Path(args.path)
    out = Path(args.out) if args.out else path / "analysis"
    try:
        if args.examples < 1:
            raise ValueError(f"--examples must be >= 1, got {args.examples}")
        if not 0 < args.mass <= 1:
            raise ValueError(f"--mass must be in (0, 1], got {args.mass}")
        if not path.is_dir():
            raise ValueError(f"{path} is not a folder")
        out.mkdir(parents=True, exist_ok=True)
        if (path / "config.yaml").is_file():
            reference = Path(args.reference) if args.reference else None
            result = analyze_run(path, reference, out, args.examples, args.mass)
            write_text_atomic(json.dumps(result, indent=2) + "\n", out / "analysis.json")
            print(json.dumps({k: v for k, v in result.items() if k != "gamma_beta"}, indent=2))
            for row in result["gamma_beta"]:
                print(f"  {row['layer']}.{row['param']}: mean {row['mean']:.3f}, std {row['std']:.3f}")
        else:
            print(analyze_sweep(path, out, args.examples, args.mass))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

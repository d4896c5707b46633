"""Paired test (same fine-tuning seeds, lr 3e-4) of softmax fine-tuned from its PTB pretraining against the same
classifier trained from scratch (runs/glue/cpu and runs/glue/cpu_scratch, see docs/results/glue.md).

    .venv/bin/python docs/results/glue/scratch_vs_pretrained.py
"""

import json
from pathlib import Path

from kernelized.eval.stats import paired_comparison
from kernelized.experiments.framework.presets import read_yaml


def scores(folder: str) -> dict[int, tuple[float, float]]:
    out = {}
    for result in Path(folder).glob("*/result.json"):
        config, r = read_yaml(result.with_name("config.yaml")), json.loads(result.read_text())
        if config["kernel"] == "softmax" and config["finetune"]["train"]["lr"] == 3e-4:
            out[r["seed"]] = (r["score"], r["test_score"])
    return out


pre, scratch = scores("runs/glue/cpu/finetune"), scores("runs/glue/cpu_scratch/finetune")
seeds = sorted(set(pre) & set(scratch))
for i, split in enumerate(("dev", "test")):
    c = paired_comparison([pre[s][i] for s in seeds], [scratch[s][i] for s in seeds])
    print(f"{split}: pretrained - scratch = {100 * c['mean_diff']:+.2f} points, 95% t CI "
          f"[{100 * c['t_ci_low']:+.2f}, {100 * c['t_ci_high']:+.2f}], paired t p = {c['p_ttest']:.3f}, n = {c['n']}")

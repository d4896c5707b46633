"""`kernelized sparsity`: a softmax student learns the teacher, gradient noise is what it says, the report's RKS
vs PRF tally follows the paired tests, and bad input is one error line."""

import csv
import math

import pytest
import torch
import yaml

from kernelized import cli
from kernelized.experiments import sparsity, sparsity_report

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"d_model": 8, "num_heads": 2, "seq_len": 8, "steps": 150, "batch_size": 16, "eval_every": 50, "eval_batch": 32,
        "grad_batches": 3, "lr": 1.0e-2, "target": 0.5}  # fmt: skip


def _config(**kw):
    return {**sparsity.DEFAULTS, **TINY, **kw}


def test_a_softmax_student_learns_the_softmax_teacher():
    summary = sparsity.run_one(_config(kernel="softmax", density=1.0), None)
    errors = [e for _, e in summary["curve"]]
    assert errors[0] > 0.8 and summary["final_error"] < 0.3  # the student's own family: it fits
    assert summary["steps_to_target"] is not None and summary["steps_to_target"] <= 150
    assert set(summary["noise"]) == {"start", "middle", "end"}


def test_gradient_noise_is_zero_for_identical_minibatches_and_positive_otherwise():
    config = _config(kernel="elu", density=0.5)
    model, task = sparsity.build_student(config), sparsity.task_of(config)
    fixed = task.sample(16, torch.Generator().manual_seed(0))

    class SameBatch:
        def sample(self, batch, generator):
            return fixed

    same = sparsity.gradient_noise(model, SameBatch(), config, torch.Generator())
    assert same["grad_var"] < 1e-12 * same["grad_mean_sq"]
    other = sparsity.gradient_noise(model, task, config, torch.Generator().manual_seed(1))
    assert other["grad_var"] > 0 and math.isfinite(other["noise_ratio"])
    names = [n for n, p in model.named_parameters() if any(p is q for q in sparsity.attention_parameters(model))]
    assert names == ["q_proj.weight", "k_proj.weight"]  # elu has no parameters of its own


def _record(kernel, density, seed, error):
    noise = {"noise_ratio": error}
    summary = {"final_error": error, "steps_to_target": None, "curve": [(0, 1.0), (10, error)],
               "noise": {"start": noise, "middle": noise, "end": noise}}  # fmt: skip
    config = {"kernel": kernel, "density": density, "seed": seed}
    return {"run_id": f"{kernel}-{density}-{seed}", "config": config, "status": "finished", "summary": summary}


def test_the_rks_vs_prf_tally_counts_significant_pairs_by_direction():
    records = []
    for seed, jitter in enumerate((0.0, 0.01, -0.01, 0.02, 0.005)):
        records += [_record("gmm-rks", 0.1, seed, 0.8 + jitter), _record("gmm-prf", 0.1, seed, 0.5 - jitter / 2)]
        records += [_record("fastfood-rks", 0.1, seed, 0.6 - jitter), _record("fastfood-prf", 0.1, seed, 0.6 + jitter)]
        records += [_record("softmax", 0.1, seed, 0.01 + jitter / 10)]
    pairs = sparsity_report.paired_tests(records)
    gmm = next(c for c in pairs if {c["a"], c["b"]} == {"gmm-rks", "gmm-prf"} and c["metric"].startswith("final"))
    assert gmm["after Holm"] in ("a > b", "a < b")
    (tally, _) = [r for r in sparsity_report.rks_vs_prf(pairs) if r["density"] == 0.1]
    constant = [
        _record(k, 0.2, s, e + (0.3 if k == "gmm-rks" else 0.0))
        for s, e in enumerate((0.1, 0.2, 0.4))
        for k in ("gmm-rks", "gmm-prf")
    ]  # the same difference on every seed: t undefined, still a verdict
    (same,) = [c for c in sparsity_report.paired_tests(constant) if c["metric"].startswith("final")]
    assert same["after Holm"] in ("a > b", "a < b")
    assert (tally["families"], tally["RKS worse"], tally["RKS better"]) == (2, 1, 0)  # fastfood: no difference


def test_a_tiny_sweep_writes_its_report_and_bad_input_exits_2(tmp_path, capsys):
    preset = tmp_path / "tiny.yaml"
    grid = {"kernel": ["softmax", "gmm-rks", "gmm-prf"], "density": [0.2], "seed": [0, 1]}
    preset.write_text(yaml.safe_dump({**TINY, "steps": 20, "eval_every": 10, "grid": grid}))
    out = tmp_path / "out"
    assert sparsity.main(["--preset", str(preset), "--out", str(out), "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    assert "6 of 6 runs of this config finished." in report and "## RKS against PRF" in report
    assert "| 0.200 | gmm-rks |" in report and (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 6
    for bad, match in ((["--set", "density=0"], "density"), (["--set", "grad_batches=1"], "grad_batches"),
                       (["--kernels", "nope"], "kernel")):  # fmt: skip
        assert cli.main(["sparsity", "--preset", str(preset), "--out", str(tmp_path / "bad"), *bad]) == 2
        assert match in capsys.readouterr().err

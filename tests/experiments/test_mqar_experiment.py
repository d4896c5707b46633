import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from kernelized.experiments import mqar
from kernelized.experiments.framework import available_presets, load_preset
from kernelized.layers import BaseConv, KernelAttention, SoftmaxAttention

TINY = {
    "task": {"vocab_size": 16, "num_kv_pairs": 2, "num_train": 48, "num_test": 16},
    "model": {"d_model": 24, "num_heads": 2, "feature_dim": 4},
    "train": {"epochs": 2, "batch_size": 16, "progress": False},
    "grid": {"kernel": ["softmax", "elu"], "seq_len": [16], "train.lr": [3.0e-3], "seed": [0, 1]},
}


def write_preset(tmp_path: Path, name: str = "tiny", **changes) -> Path:
    preset = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            preset[section][field] = value
        else:
            preset[section] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(preset, sort_keys=False))
    return path


def config_for(kernel: str, **model) -> dict:
    config = load_preset("mqar", "demo", defaults=mqar.DEFAULTS)
    config.pop("grid")
    config.update(kernel=kernel, seq_len=32)
    config["model"].update(model)
    return config


def test_the_papers_model():
    model = mqar.build_model(config_for("rebased", d_model=64))
    blocks = model.backbone.blocks
    assert [type(b.mixer) for b in blocks] == [BaseConv, KernelAttention]
    attn = blocks[1].mixer
    assert attn.num_heads == 12 and attn.feature_dim == 16 and attn.head_dim_v == 64 // 12
    assert attn.feature_map.norm_scope == "all"  # the authors' LayerNorm over all heads
    assert blocks[0].mixer.kernel_size == 3
    assert all(b.mlp is None for b in blocks)
    assert model.head.weight is model.backbone.embed.weight  # tied
    assert model.backbone.pos.num_embeddings == 32  # learned positions, one per token
    deeper = mqar.build_model(config_for("softmax", num_layers=4))
    assert [type(b.mixer) for b in deeper.backbone.blocks] == [BaseConv, SoftmaxAttention] * 2
    assert deeper.backbone.blocks[1].mixer.num_heads == 1


def test_kernel_names_resolve_to_variants_or_registered_kernels():
    assert mqar.mixer_spec(config_for("based"))["kernel"] == "taylor"  # an alias in kernels, as everywhere
    assert mqar.mixer_spec(config_for("performer"))["kernel"] == "performer"
    config = config_for("sq")
    config["kernels"] = {"sq": {"kernel": "rebased", "kernel_options": {"use_gamma": False, "normalize": False}}}
    fm = mqar.build_model(config).backbone.blocks[1].mixer.feature_map
    assert not fm.use_gamma and not fm.normalize and fm.use_beta


def test_paper_pairs_and_micro_batches():
    config = load_preset("mqar", "paper", defaults=mqar.DEFAULTS)
    runs = mqar.prepare_runs({**config, "grid": {"seq_len": [128, 512, 2048]}})
    assert [r.config["task"]["num_kv_pairs"] for r in runs] == [16, 128, 512]
    # the authors' effective batch 512 with micro-batches 256 at L=512, 64 at L=2048
    assert [mqar.train_config(r.config).micro_batch_size for r in runs] == [512, 256, 64]


def test_presets_expand_and_validate():
    assert {"demo", "paper", "ablation"} <= set(available_presets("mqar"))
    sizes = {}
    for name in ("demo", "paper", "ablation"):
        config = load_preset("mqar", name, defaults=mqar.DEFAULTS)
        sizes[name] = len(mqar.prepare_runs(config))  # builds every model shape on the meta device
    assert sizes["demo"] >= 5 * 2 * 3
    assert sizes["paper"] == 5 * 5 * 4 * 4 * 5


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"task__num_kv_pairs": 5}, "num_kv_pairs"),  # 4 * 5 > 16
        ({"task__vocab_size": 4}, "vocab_size"),
        ({"grid": {"kernel": ["rebasd"], "seq_len": [16]}}, "kernel must be one of"),
        ({"train__batchsize": 3}, "batchsize"),
        ({"grid": {"kernel": "softmax"}}, "grid.kernel"),
        ({"model__num_layers": 1}, "num_layers"),
        pytest.param(
            {"train__device": "cuda"},
            "CUDA is not available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present"),
        ),
    ],
)
def test_bad_input_fails_before_any_training(tmp_path, capsys, changes, message):
    path = write_preset(tmp_path, **changes)
    assert mqar.main(["--preset", str(path), "--out", str(tmp_path / "runs")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_malformed_and_unknown_presets(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: {vocab_size: 16\n")
    assert mqar.main(["--preset", str(bad), "--out", str(tmp_path / "runs")]) == 2
    assert "malformed" in capsys.readouterr().err
    assert mqar.main(["--preset", "no-such-preset", "--out", str(tmp_path / "runs")]) == 2
    assert "demo" in capsys.readouterr().err  # lists the available presets
    assert mqar.main(["--preset", "demo", "--set", "task.num_kv_pairs=200", "--dry-run"]) == 2
    assert not (tmp_path / "runs").exists()


def test_a_sweep_end_to_end_and_again(tmp_path, capsys):
    path = write_preset(tmp_path)
    out = tmp_path / "runs"
    assert mqar.main(["--preset", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    sweep = out
    assert "report:" in printed and str(sweep / "figure.png") in printed and "| softmax | elu |" in printed
    with open(sweep / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["kernel"] for r in rows} == {"softmax", "elu"}
    assert all(0.0 <= float(r["best.accuracy"]) <= 1.0 for r in rows)
    assert all(r["task.num_kv_pairs"] == "2" for r in rows)
    report = (sweep / "report.md").read_text()
    assert "## Significance" in report and "| 16 | 24 | softmax | elu | 2 |" in report
    assert (sweep / "figure.png").read_bytes()[:4] == b"\x89PNG"
    # the run's logged best accuracy is the one in the table
    (run,) = sweep.glob("kernel=elu_seed=0_seq_len=16_lr=0.003-*")
    summary = json.loads((run / "summary.json").read_text())
    evals = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert summary["best"]["accuracy"] == max(e["accuracy"] for e in evals if e["event"] == "eval")
    # a second invocation trains nothing: finished runs are skipped
    stamp = {p: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.jsonl")}
    assert mqar.main(["--preset", str(path), "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.jsonl")} == stamp


def test_same_seed_same_data_across_kernels():
    a, b = config_for("elu"), config_for("rebased")
    for x, y in zip(mqar.datasets(a), mqar.datasets(b)):
        assert torch.equal(x.tensors[0], y.tensors[0])
    c = config_for("elu")
    c["seed"] = 1
    assert not torch.equal(mqar.datasets(a)[0].tensors[0], mqar.datasets(c)[0].tensors[0])


def test_a_killed_run_resumes_to_the_same_end(tmp_path, monkeypatch):
    from kernelized.train.trainer import Trainer

    config = config_for("rebased", d_model=24, num_heads=2, feature_dim=4)
    config["seq_len"] = 16
    config["task"].update(vocab_size=16, num_kv_pairs=2, num_train=48, num_test=16)
    config["train"].update(epochs=3, batch_size=16, progress=False)  # 3 steps per epoch, checkpoint each epoch
    full = mqar.run_one(config, tmp_path / "full")

    real_step = Trainer._train_step

    def killed_at_step_5(self, indices):
        if self.step == 4:
            raise RuntimeError("killed")
        return real_step(self, indices)

    monkeypatch.setattr(Trainer, "_train_step", killed_at_step_5)
    with pytest.raises(RuntimeError, match="killed"):
        mqar.run_one(config, tmp_path / "cut")
    monkeypatch.setattr(Trainer, "_train_step", real_step)
    resumed = mqar.run_one(config, tmp_path / "cut")  # the same command again: resumes from epoch 1's checkpoint
    assert resumed["steps"] == full["steps"] == 9
    assert resumed["best"] == full["best"] and resumed["final"] == full["final"]

    def evals(run):
        lines = [json.loads(x) for x in open(tmp_path / run / "metrics.jsonl")]
        return [{k: v for k, v in e.items() if k != "elapsed"} for e in lines if e["event"] == "eval"]

    assert evals("cut") == evals("full")


def test_changed_settings_are_new_runs_and_the_report_reads_only_its_own(tmp_path, capsys):
    """Before: rerunning into the same --out with another --set reused the old runs in 0 s and reported them
    under the new settings."""
    path = write_preset(tmp_path)
    out = tmp_path / "runs"
    argv = ["--preset", str(path), "--out", str(out), "--kernels", "elu", "--seeds", "0"]
    assert mqar.main(argv) == 0
    first = sorted(p.name for p in out.glob("kernel=*"))
    assert mqar.main([*argv, "--set", "train.epochs=1", "--set", "task.num_kv_pairs=3"]) == 0
    runs = sorted(p.name for p in out.glob("kernel=*"))
    assert len(runs) == 2 and first[0] in runs  # a new run beside the old one
    (new,) = set(runs) - set(first)
    assert yaml.safe_load((out / new / "config.yaml").read_text())["train"]["epochs"] == 1
    assert yaml.safe_load((out / first[0] / "config.yaml").read_text())["train"]["epochs"] == 2  # never rewritten
    report = (out / "report.md").read_text()
    assert "1 run folder(s) of other settings in this folder were ignored" in report
    assert "(length, kv pairs) = (16, 3)" in report
    with open(out / "results.csv") as f:
        assert [r["run_id"] for r in csv.DictReader(f)] == [new]


def test_report_only_with_missing_cells_and_a_failed_run(tmp_path, capsys, monkeypatch):
    """Before: --report-only crashed on a cell without finished runs, and one failed run made the figure code
    crash, burying the real error."""
    path = write_preset(tmp_path)
    out = tmp_path / "runs"
    assert mqar.main(["--preset", str(path), "--out", str(out), "--report-only"]) == 0  # nothing run yet
    assert "0 of 4 runs of this config finished" in (out / "report.md").read_text()
    real = mqar.run_one

    def failing(config, run_dir):
        if config["kernel"] == "elu":
            raise RuntimeError("elu broke")
        return real(config, run_dir)

    monkeypatch.setattr(mqar, "run_one", failing)
    assert mqar.main(["--preset", str(path), "--out", str(out)]) == 1
    assert "2 of 4 runs failed" in capsys.readouterr().err
    report = (out / "report.md").read_text()
    assert "RuntimeError: elu broke" in report and "| 16 | 24 |" in report and "–" in report
    assert (out / "figure.png").read_bytes()[:4] == b"\x89PNG"  # drawn from the runs that finished
    monkeypatch.setattr(mqar, "run_one", real)
    assert mqar.main(["--preset", str(path), "--out", str(out)]) == 0  # the failed runs are tried again
    assert "4 of 4 runs of this config finished" in (out / "report.md").read_text()


def test_gpu_sized_presets_print_an_estimate_and_the_cpu_preset(capsys):
    assert mqar.main(["--preset", "paper", "--dry-run", "--device", "cpu", "--kernels", "softmax"]) == 0
    err = capsys.readouterr().err
    assert "sized for a GPU" in err and "kernelized mqar --preset demo" in err and "hours" in err

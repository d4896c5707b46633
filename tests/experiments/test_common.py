"""Presets, overrides, grids, sweeps (serial and parallel, resumable) and the reduction protocol."""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path

import pytest

from kernelized.eval.stats import mean_ci, paired_comparison
from kernelized.experiments.common import (
    Run,
    available_presets,
    expand_grid,
    load_preset,
    markdown_table,
    pairwise_comparisons,
    reduce_runs,
    run_sweep,
    with_ci_column,
    write_markdown_table,
)

PRESET = """
data: {vocab_size: 64, seq_len: 32}
model: {d_model: 16, kernel_options: {}}
train: {lr: 1e-3, epochs: 2}
seed: 0
grid:
  model.kernel_options: [{p: 1}]
  train.lr: [1e-3, 3.0e-3]
  seed: [0, 1]
"""

DEFAULTS = {
    "data": {"vocab_size": 32, "seq_len": 16, "num_examples": 100},
    "model": {"d_model": 8, "kernel": "rebased", "kernel_options": {}},
    "train": {"lr": 1e-3, "epochs": 1},
    "seed": 0,
}


@pytest.fixture
def preset_dir(tmp_path, monkeypatch):
    """A ./configs/toy/ folder with one preset, as a user's working directory would have."""
    folder = tmp_path / "configs" / "toy"
    folder.mkdir(parents=True)
    (folder / "small.yaml").write_text(PRESET)
    monkeypatch.chdir(tmp_path)
    return folder


def test_load_preset_by_name_and_path_with_defaults(preset_dir):
    assert available_presets("toy") == ["small"]
    by_name = load_preset("toy", "small", defaults=DEFAULTS)
    by_path = load_preset("toy", str(preset_dir / "small.yaml"), defaults=DEFAULTS)
    assert by_name == by_path
    assert by_name["data"] == {"vocab_size": 64, "seq_len": 32, "num_examples": 100}  # default kept
    assert by_name["model"]["kernel"] == "rebased"
    assert list(by_name["grid"]) == ["model.kernel_options", "train.lr", "seed"]
    plain = load_preset("toy", "small")  # no defaults: the preset is its own schema
    assert "num_examples" not in plain["data"]


def test_overrides_are_parsed_by_yaml_and_may_pin_or_replace_grid_axes(preset_dir):
    cfg = load_preset("toy", "small", ["train.epochs=5", "data.seq_len=1e2", "seed=3", "grid.train.lr=[0.1]"])
    assert cfg["train"]["epochs"] == 5 and cfg["data"]["seq_len"] == 100.0  # plain YAML 1.1 says "1e2"
    assert cfg["seed"] == 3 and "seed" not in cfg["grid"]  # pinned
    assert cfg["grid"]["train.lr"] == [0.1]
    cfg = load_preset("toy", "small", {"model.kernel_options.anything": True, "grid.data.vocab_size": [8, 16]})
    assert cfg["model"]["kernel_options"] == {"anything": True} and cfg["grid"]["data.vocab_size"] == [8, 16]


def test_grid_axes_need_no_fixed_field_without_defaults(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("train: {lr: 1e-3}\ngrid: {kernel: [a, b], seed: [0, 1]}\n")
    assert [r.run_id for r in expand_grid(load_preset("toy", str(path)))] == [
        "kernel=a_seed=0",
        "kernel=a_seed=1",
        "kernel=b_seed=0",
        "kernel=b_seed=1",
    ]
    pinned = load_preset("toy", str(path), ["kernel=b"])
    assert pinned["kernel"] == "b" and list(pinned["grid"]) == ["seed"]
    with pytest.raises(ValueError, match="unknown key 'kernal'"):
        load_preset("toy", str(path), ["kernal=b"])


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        (["train.lrr=1"], r"unknown key 'train.lrr'.*small.yaml"),
        (["epochs=1"], r"unknown key 'epochs'"),
        (["train.lr"], r"key=value"),
        (["grid.train.lr=0.1"], r"non-empty list"),
        (["grid.nope=[1]"], r"unknown key 'nope'"),
    ],
)
def test_bad_overrides_name_the_key(preset_dir, overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_preset("toy", "small", overrides)


def test_bad_presets_name_the_file_and_key(preset_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: [1, 2\n")
    with pytest.raises(ValueError, match=r"malformed YAML in .*bad.yaml"):
        load_preset("toy", str(bad))
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match=r"bad.yaml must hold a mapping"):
        load_preset("toy", str(bad))
    bad.write_text("model: {d_modell: 3}\n")
    with pytest.raises(ValueError, match=r"unknown key 'model.d_modell' in .*bad.yaml.*d_model"):
        load_preset("toy", str(bad), defaults=DEFAULTS)
    bad.write_text("grid: {model.width: [1, 2]}\nmodel: {d_model: 3}\n")
    with pytest.raises(ValueError, match=r"grid key 'model.width'"):
        load_preset("toy", str(bad), defaults=DEFAULTS)
    with pytest.raises(ValueError, match=r"grid.model.width .* non-empty list"):
        bad.write_text("grid: {model.width: 3}\n")
        load_preset("toy", str(bad))
    with pytest.raises(ValueError, match=r"unknown toy preset 'large'; available: \['small'\]"):
        load_preset("toy", "large")
    with pytest.raises(ValueError, match="does not exist"):
        load_preset("toy", str(tmp_path / "missing.yaml"))


def test_expand_grid_is_a_deterministic_product_with_readable_ids(preset_dir):
    preset = load_preset("toy", "small", ["grid.model.d_model=[16, 32]"])
    runs = expand_grid(preset)
    assert len(runs) == 1 * 2 * 2 * 2
    assert [r.params["train.lr"] for r in runs] == [1e-3] * 4 + [3e-3] * 4  # first axis slowest
    assert [r.params["model.d_model"] for r in runs[:4]] == [16, 32, 16, 32]  # the added axis comes last
    assert runs == expand_grid(preset)
    assert runs[0].run_id == "kernel_options=p-1_lr=0.001_seed=0_d_model=16"
    assert len({r.run_id for r in runs}) == len(runs)
    assert all(re.fullmatch(r"[A-Za-z0-9._=+-]+", r.run_id) for r in runs)
    last = runs[-1].config
    assert last["train"]["lr"] == 3e-3 and last["seed"] == 1 and last["model"]["d_model"] == 32
    assert "grid" not in last and preset["train"]["lr"] == 1e-3  # the preset itself is untouched


def test_expand_grid_edge_cases():
    assert [(r.run_id, r.config) for r in expand_grid({"a": 1})] == [("run", {"a": 1})]
    runs = expand_grid({"x": {"lr": 1}, "y": {"lr": 2}, "grid": {"x.lr": [1], "y.lr": [2, 3]}})
    assert runs[0].run_id == "x-lr=1_y-lr=2"  # last parts collide: full keys
    long = expand_grid({"name": "", "grid": {"name": ["n" * 300]}})[0].run_id
    assert len(long) <= 120


def fake_run(config: dict, run_dir: Path) -> dict:
    """A stand-in for an experiment's run function: a deterministic 'accuracy' from the config."""
    import torch

    (run_dir / "calls").open("a").write("x")
    if config.get("fail"):
        raise RuntimeError("this run was told to fail")
    accuracy = 0.5 + config["train"]["lr"] * 10 + 0.01 * config["seed"]
    return {"best": {"accuracy": accuracy}, "threads": torch.get_num_threads(), "steps": 7, "pair": (1, 2)}


def test_run_sweep_runs_skips_finished_and_writes_results(tmp_path):
    preset = {"train": {"lr": 0.0}, "seed": 0, "steps": 1, "grid": {"train.lr": [0.001, 0.01], "seed": [0, 1]}}
    runs = expand_grid(preset)
    records = run_sweep(runs, fake_run, tmp_path / "sweep", progress=False)
    assert [r["run_id"] for r in records] == [r.run_id for r in runs]
    assert records[1]["summary"]["best"]["accuracy"] == pytest.approx(0.5 + 0.01 + 0.01)
    assert (tmp_path / "sweep" / runs[0].run_id / "config.yaml").exists()
    again = run_sweep(runs, fake_run, tmp_path / "sweep", progress=False)
    assert [r["summary"] for r in again] == [r["summary"] for r in records]
    assert all((tmp_path / "sweep" / r.run_id / "calls").read_text() == "x" for r in runs)  # ran once each
    assert records[0]["summary"]["pair"] == [1, 2]  # as read back from result.json on a re-run
    (tmp_path / "sweep" / runs[0].run_id / "result.json").unlink()  # killed before run_fn returned
    assert run_sweep(runs, fake_run, tmp_path / "sweep", progress=False) == records
    assert (tmp_path / "sweep" / runs[0].run_id / "calls").read_text() == "xx"
    with open(tmp_path / "sweep" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["run_id"] for row in rows] == [r.run_id for r in runs]
    assert float(rows[3]["best.accuracy"]) == pytest.approx(0.5 + 0.1 + 0.01)
    assert rows[3]["train.lr"] == "0.01"
    assert rows[3]["steps"] == "1" and rows[3]["summary.steps"] == "7"  # a summary name clashing with the config


def test_run_sweep_keeps_going_past_a_failed_run(tmp_path):
    runs = [
        Run("ok", {"train": {"lr": 0.001}, "seed": 0}),
        Run("bad", {"train": {"lr": 0.001}, "seed": 0, "fail": True}),
        Run("ok2", {"train": {"lr": 0.002}, "seed": 0}),
    ]
    with pytest.raises(RuntimeError, match=r"1 of 3 runs failed: bad .*told to fail"):
        run_sweep(runs, fake_run, tmp_path, progress=False)
    assert (tmp_path / "ok2" / "result.json").exists() and not (tmp_path / "bad" / "result.json").exists()
    assert "told to fail" in (tmp_path / "bad" / "error.txt").read_text()
    with open(tmp_path / "results.csv") as f:
        assert [row.get("status") for row in csv.DictReader(f)] == ["", "failed", ""]


def test_run_sweep_in_parallel_processes(tmp_path):
    runs = expand_grid({"train": {"lr": 0.0}, "seed": 0, "grid": {"train.lr": [0.001, 0.002, 0.003]}})
    records = run_sweep(runs, fake_run, tmp_path, workers=2, progress=False)
    expected_threads = max(1, (os.cpu_count() or 1) // 2)
    assert [r["summary"]["threads"] for r in records] == [expected_threads] * 3
    assert [r["summary"]["best"]["accuracy"] for r in records] == pytest.approx([0.51, 0.52, 0.53])
    with pytest.raises(ValueError, match="workers"):
        run_sweep(runs, fake_run, tmp_path, workers=0)


def record(kernel, lr, seed, accuracy, length=64):
    config = {"kernel": kernel, "data": {"seq_len": length}, "train": {"lr": lr}, "seed": seed}
    summary = None if accuracy is None else {"best": {"accuracy": accuracy}}
    return {"run_id": f"{kernel}-{lr}-{seed}", "config": config, "summary": summary}


def protocol_records():
    values = {
        ("a", 0.01): [0.90, 0.92, 0.94],
        ("a", 0.001): [0.95, 0.80, 0.81],  # mean 0.853 < 0.92: lr 0.01 wins for a
        ("b", 0.01): [0.50, 0.52, None],  # one failed run
        ("b", 0.001): [0.60, 0.70, 0.65],
    }
    return [record(k, lr, s, v) for (k, lr), vs in values.items() for s, v in enumerate(vs)]


def test_reduce_runs_picks_the_best_lr_and_gives_a_t_interval():
    rows = reduce_runs(protocol_records(), ["kernel", "data.seq_len"], "best.accuracy", "train.lr", "seed")
    assert [(r["kernel"], r["data.seq_len"], r["lr"]) for r in rows] == [("a", 64, 0.01), ("b", 64, 0.001)]
    a, b = rows
    assert a["values"] == [0.90, 0.92, 0.94] and a["seeds"] == [0, 1, 2]
    ci = mean_ci([0.90, 0.92, 0.94])
    assert (a["mean"], a["low"], a["high"], a["half_width"], a["n"]) == pytest.approx(tuple(ci))
    assert a["lr_means"][0.001] == pytest.approx((0.95 + 0.80 + 0.81) / 3)
    assert b["mean"] == pytest.approx(0.65) and b["missing"] == 1
    low = reduce_runs(protocol_records(), ["kernel"], mode="min")
    assert low[0]["lr"] == 0.001 and low[1]["lr"] == 0.01
    assert reduce_runs(protocol_records(), ["kernel"], lr_key=None)[0]["n"] == 6


def test_pairwise_comparisons_pair_by_seed():
    rows = reduce_runs(protocol_records(), ["kernel", "data.seq_len"])
    (comp,) = pairwise_comparisons(rows, method_key="kernel")
    assert (comp["a"], comp["b"], comp["data.seq_len"]) == ("a", "b", 64)
    expected = paired_comparison([0.90, 0.92, 0.94], [0.60, 0.70, 0.65])
    assert comp["p_ttest"] == pytest.approx(expected["p_ttest"]) and comp["mean_diff"] == pytest.approx(0.27)
    assert comp["p_permutation"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="method_key"):
        pairwise_comparisons(rows, method_key="model")


def test_markdown_tables(tmp_path):
    rows = [{"kernel": "a", "acc": 0.91234, "n": 3}, {"kernel": "b|c", "acc": math.nan, "n": 1}]
    text = markdown_table(rows, digits=3)
    assert text == "| kernel | acc | n |\n|---|---|---|\n| a | 0.912 | 3 |\n| b\\|c | – | 1 |\n"
    assert markdown_table(rows, ["n"], ["seeds"]) == "| seeds |\n|---|\n| 3 |\n| 1 |\n"
    table = with_ci_column(reduce_runs(protocol_records(), ["kernel"]), digits=2, scale=100)
    assert table[0]["mean ± 95% CI"] == f"92.00 ± {mean_ci([0.90, 0.92, 0.94]).half_width * 100:.2f}"
    written = write_markdown_table(tmp_path / "r.md", table, ["kernel", "mean ± 95% CI"], title="Toy", note="Note.")
    assert (tmp_path / "r.md").read_text() == written and written.startswith("# Toy\n\nNote.\n\n| kernel |")


def trainer_run(config: dict, run_dir: Path) -> dict:
    """A real run function: the Trainer on a tiny next-token task ((x + 1) mod 8), as experiments write them."""
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    from kernelized.train import TrainConfig, Trainer

    g = torch.Generator().manual_seed(100)
    tokens = torch.randint(0, 8, (64, 6), generator=g)
    data = TensorDataset(tokens, (tokens + 1) % 8)
    torch.manual_seed(config["seed"])
    model = nn.Sequential(nn.Embedding(8, 8), nn.Linear(8, 8))
    cfg = TrainConfig.from_dict({**config["train"], "seed": config["seed"], "progress": False})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is fastest; restored for the tests that follow
    try:
        return Trainer(model, cfg, data, data, run_dir=run_dir).fit()
    finally:
        torch.set_num_threads(threads)


def test_sweep_of_real_trainings_reduces_to_best_over_epochs(tmp_path):
    preset = {"train": {"epochs": 3, "batch_size": 16, "lr": 0.0}, "seed": 0, "grid": {}}
    preset["grid"] = {"train.lr": [1e-3, 3e-2], "seed": [0, 1]}
    records = run_sweep(expand_grid(preset), trainer_run, tmp_path, progress=False)
    (row,) = reduce_runs(records, cell_keys=[], metric="best.accuracy", lr_key="train.lr", seed_key="seed")
    best_over_epochs = {}  # straight from each run's metrics.jsonl
    for rec in records:
        lines = [json.loads(x) for x in (Path(rec["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
        accuracies = [x["accuracy"] for x in lines if x["event"] == "eval"]
        assert len(accuracies) == 3  # one evaluation per epoch
        best_over_epochs.setdefault(rec["config"]["train"]["lr"], []).append(max(accuracies))
    means = {lr: sum(v) / len(v) for lr, v in best_over_epochs.items()}
    assert row["lr"] == max(means, key=means.get) == 3e-2  # the larger lr learns this task in 3 epochs
    assert row["values"] == best_over_epochs[3e-2] and row["mean"] == pytest.approx(means[3e-2])

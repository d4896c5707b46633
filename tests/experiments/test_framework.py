"""The experiment framework: presets, overrides, typed schemas, run identity, sweeps (serial, parallel, Ray,
resumable, failures), the reduction protocol, tables and figures."""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kernelized.eval.stats import mean_ci, paired_comparison
from kernelized.experiments.framework import (
    Run,
    available_presets,
    collect,
    config_hash,
    expand_grid,
    load_preset,
    markdown_table,
    other_runs,
    pairwise_comparisons,
    reduce_runs,
    run_sweep,
    status_section,
    with_ci_column,
    write_figure,
    write_markdown_table,
)
from kernelized.experiments.framework.cli import command
from kernelized.experiments.framework.schema import check_types, defaults_of

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
    ids = [r.run_id for r in expand_grid(load_preset("toy", str(path)))]
    assert [i.rsplit("-", 1)[0] for i in ids] == [
        "kernel=a_seed=0",
        "kernel=a_seed=1",
        "kernel=b_seed=0",
        "kernel=b_seed=1",
    ]
    assert all(re.fullmatch(r"[0-9a-f]{8}", i.rsplit("-", 1)[1]) for i in ids) and len(set(ids)) == 4
    pinned = load_preset("toy", str(path), ["kernel=b"])
    assert pinned["kernel"] == "b" and list(pinned["grid"]) == ["seed"]
    with pytest.raises(ValueError, match="unknown key 'kernal'"):
        load_preset("toy", str(path), ["kernal=b"])


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        (["train.lrr=1"], r"unknown key 'train.lrr'.*small.yaml.*valid keys of 'train' are \['epochs', 'lr'\]"),
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
    assert runs[0].run_id.startswith("kernel_options=p-1_lr=0.001_seed=0_d_model=16-")
    assert len({r.run_id for r in runs}) == len(runs)
    assert all(re.fullmatch(r"[A-Za-z0-9._=+-]+", r.run_id) for r in runs)
    last = runs[-1].config
    assert last["train"]["lr"] == 3e-3 and last["seed"] == 1 and last["model"]["d_model"] == 32
    assert "grid" not in last and preset["train"]["lr"] == 1e-3  # the preset itself is untouched


def test_expand_grid_edge_cases():
    ((rid, config),) = [(r.run_id, r.config) for r in expand_grid({"a": 1})]
    assert rid == f"run-{config_hash({'a': 1})}" and config == {"a": 1}
    runs = expand_grid({"x": {"lr": 1}, "y": {"lr": 2}, "grid": {"x.lr": [1], "y.lr": [2, 3]}})
    assert runs[0].run_id.startswith("x-lr=1_y-lr=2-")  # last parts collide: full keys
    long = expand_grid({"name": "", "grid": {"name": ["n" * 300]}})[0].run_id
    assert len(long) <= 110


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
    records = run_sweep(runs, fake_run, tmp_path, progress=False)
    assert [r["status"] for r in records] == ["finished", "failed", "finished"]
    assert (tmp_path / "ok2" / "result.json").exists() and not (tmp_path / "bad" / "result.json").exists()
    assert "told to fail" in (tmp_path / "bad" / "error.txt").read_text()
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["status"] for row in rows] == ["finished", "failed", "finished"]
    assert rows[1]["error"] == "RuntimeError: this run was told to fail"
    assert [r["status"] for r in collect(runs, tmp_path)] == ["finished", "failed", "finished"]  # --report-only
    text = status_section(records)
    assert "2 of 3 runs" in text and "`bad`: RuntimeError: this run was told to fail" in text
    # a rerun tries the failed run again (and only it)
    assert [r["status"] for r in run_sweep(runs, fake_run, tmp_path, progress=False)][1] == "failed"
    assert (tmp_path / "bad" / "calls").read_text() == "xx" and (tmp_path / "ok" / "calls").read_text() == "x"


def test_run_sweep_in_parallel_processes(tmp_path):
    runs = expand_grid({"train": {"lr": 0.0}, "seed": 0, "grid": {"train.lr": [0.001, 0.002, 0.003]}})
    records = run_sweep(runs, fake_run, tmp_path, workers=2, progress=False)
    expected_threads = max(1, (os.cpu_count() or 1) // 2)
    assert [r["summary"]["threads"] for r in records] == [expected_threads] * 3
    assert [r["summary"]["best"]["accuracy"] for r in records] == pytest.approx([0.51, 0.52, 0.53])
    with pytest.raises(ValueError, match="--workers"):
        run_sweep(runs, fake_run, tmp_path, workers=0)
    with pytest.raises(ValueError, match="--launcher"):
        run_sweep(runs, fake_run, tmp_path, launcher="slurm")


def record(kernel, lr, seed, accuracy, length=64):
    config = {"kernel": kernel, "data": {"seq_len": length}, "train": {"lr": lr}, "seed": seed}
    summary = None if accuracy is None else {"best": {"accuracy": accuracy}}
    status = "failed" if accuracy is None else "finished"
    return {"run_id": f"{kernel}-{lr}-{seed}", "config": config, "summary": summary, "status": status}


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


# -- run identity ----------------------------------------------------------------------------------------------
def test_a_run_is_its_whole_config(tmp_path):
    base = {"train": {"lr": 0.001, "steps": 5, "progress": True}, "seed": 0, "workers": 1, "grid": {"seed": [0, 1]}}
    runs = expand_grid(base)
    same = expand_grid({**base, "workers": 2, "train": {**base["train"], "progress": False}})  # runtime keys only
    assert [r.run_id for r in same] == [r.run_id for r in runs]
    changed = expand_grid({**base, "train": {**base["train"], "steps": 6}})  # a setting that changes results
    assert not {r.run_id for r in changed} & {r.run_id for r in runs}
    assert [r.run_id.rsplit("-", 1)[0] for r in changed] == ["seed=0", "seed=1"]  # readable part unchanged
    assert config_hash({"a": 1.0, "b": {"c": 2}}) == config_hash({"b": {"c": 2}, "a": 1})  # order, 1.0 == 1
    assert config_hash({"data": {"cache_dir": "x"}}, ignore=["data.cache_dir"]) == config_hash({"data": {}})

    first = run_sweep(runs, fake_run, tmp_path, progress=False)
    again = run_sweep(same, fake_run, tmp_path, progress=False)  # same config: skipped
    assert [r["summary"] for r in again] == [r["summary"] for r in first]
    assert all((tmp_path / r.run_id / "calls").read_text() == "x" for r in runs)
    new = run_sweep(changed, fake_run, tmp_path, progress=False)  # changed config: new runs, old ones kept
    assert all((tmp_path / r.run_id / "calls").read_text() == "x" for r in changed + runs)
    assert other_runs(changed, tmp_path) == sorted(r.run_id for r in runs)
    assert "2 run folder(s) of other settings in this folder were ignored" in status_section(
        new, other_runs(changed, tmp_path)
    )
    # each folder keeps the config it ran, and says what made it
    stored = (tmp_path / runs[0].run_id / "config.yaml").read_text()
    assert (
        "steps: 5" in stored
        and json.loads((tmp_path / runs[0].run_id / "run.json").read_text())["run_id"] == runs[0].run_id
    )


def test_a_folder_holding_another_config_is_not_reused(tmp_path):
    (run,) = expand_grid({"train": {"lr": 0.001}, "seed": 0})
    run_sweep([run], fake_run, tmp_path, progress=False)
    path = tmp_path / run.run_id / "config.yaml"
    path.write_text(path.read_text().replace("0.001", "0.5"))  # edited by hand
    with pytest.raises(ValueError, match="holds another config"):
        run_sweep([run], fake_run, tmp_path, progress=False)


def test_only_rank_zero_writes_sweep_files(tmp_path, monkeypatch):
    from kernelized.train import distributed

    monkeypatch.setattr(distributed, "get_rank", lambda: 1)
    runs = expand_grid({"train": {"lr": 0.001}, "seed": 0, "grid": {"seed": [0, 1]}})
    records = run_sweep(runs, fake_run, tmp_path, progress=False)
    assert [r["status"] for r in records] == ["missing", "missing"]  # rank 1 reads nothing back it did not write
    assert not (tmp_path / "results.csv").exists()
    assert not any((tmp_path / r.run_id / name).exists() for r in runs for name in ("config.yaml", "result.json"))
    assert all((tmp_path / r.run_id / "calls").exists() for r in runs)  # but every process ran the runs


# -- typed configs ----------------------------------------------------------------------------------------------
@dataclass
class Inner:
    width: int = 8
    options: dict = field(default_factory=dict)


@dataclass
class Settings:
    name: str = "x"
    rate: float = 0.1
    inner: Inner = field(default_factory=Inner)
    maybe: int | None = None


def test_typed_schema_names_unknown_keys_at_any_depth_and_wrong_types(tmp_path):
    defaults = defaults_of(Settings)
    assert defaults == {"name": "x", "rate": 0.1, "inner": {"width": 8, "options": {}}, "maybe": None}
    path = tmp_path / "p.yaml"
    path.write_text("inner: {widht: 3}\n")
    with pytest.raises(
        ValueError, match=r"unknown key 'inner.widht' .* valid keys of 'inner' are \['options', 'width'\]"
    ):
        load_preset("toy", str(path), defaults=defaults)
    path.write_text("inner: {options: {anything: 1}}\nrate: 1\n")  # free-form below options; an int is a float
    config = load_preset("toy", str(path), defaults=defaults)
    check_types(config, Settings, "p.yaml")
    for bad, pattern in (({"inner": {"width": "8x"}}, r"inner.width in p.yaml must be int, got '8x'"),
                         ({"maybe": 1.5}, r"maybe in p.yaml must be int or null"),
                         ({"name": True}, r"name in p.yaml must be str")):  # fmt: skip
        with pytest.raises(ValueError, match=pattern):
            check_types({**config, **bad}, Settings, "p.yaml")


def test_packaged_presets_are_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert {"demo", "paper", "ablation"} <= set(available_presets("mqar"))
    assert {"cpu", "small", "listops"} <= set(available_presets("lra")) and "tiny" in available_presets("lm")


# -- CLI errors, figures --------------------------------------------------------------------------------------
def test_command_turns_user_errors_into_one_line_and_exit_2(capsys):
    @command
    def main(argv):
        if argv == ["value"]:
            raise ValueError("--thing must be positive, got -1")
        if argv == ["file"]:
            open("/nonexistent/file.yaml")
        raise KeyError("a bug")

    assert main(["value"]) == 2 and capsys.readouterr().err == "error: --thing must be positive, got -1\n"
    assert main(["file"]) == 2 and "error: /nonexistent/file.yaml: No such file" in capsys.readouterr().err
    with pytest.raises(KeyError):  # bugs are not dressed up as user errors
        main(["bug"])


def test_write_figure_is_atomic_and_reports_instead_of_raising(tmp_path):
    def good(path):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.plot([1, 2])
        fig.savefig(path)
        plt.close(fig)

    def bad(path):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.set_yscale("log")
        ax.plot([1, 2], [math.nan, math.nan])
        raise ValueError("Data cannot be log-scaled")

    assert write_figure(good, tmp_path / "f.png") is None and (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    message = write_figure(bad, tmp_path / "g.png")
    assert message == "figure g.png not written: ValueError: Data cannot be log-scaled"
    assert list(tmp_path.iterdir()) == [tmp_path / "f.png"]  # no partial file left


# -- Ray ----------------------------------------------------------------------------------------------------------
def test_ray_launcher_gives_the_same_results_as_local(tmp_path):
    ray = pytest.importorskip("ray")
    from kernelized.experiments import mqar

    small = ["task.num_train=64", "task.num_test=16", "train.epochs=1", "grid.seq_len=[32]", "grid.seed=[0]"]
    small += ["grid.kernel=[softmax, based]", "train.progress=false"]
    config = load_preset("mqar", "demo", small, defaults=mqar.DEFAULTS)
    runs = mqar.prepare_runs(config)
    local = run_sweep(runs, mqar.run_one, tmp_path / "local", workers=2, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_sweep(runs, mqar.run_one, tmp_path / "ray", workers=2, launcher="ray", progress=False)
    finally:
        ray.shutdown()
    assert [r["status"] for r in remote] == ["finished", "finished"]
    for a, b in zip(local, remote):
        assert a["run_id"] == b["run_id"] and a["summary"]["best"] == b["summary"]["best"]
        assert a["summary"]["train_loss"] == b["summary"]["train_loss"]
    # resume is unchanged: a second call finds every run finished and trains nothing
    assert run_sweep(runs, mqar.run_one, tmp_path / "ray", progress=False) == remote


_ORPHAN_SCRIPT = """
import os, sys, time
from pathlib import Path
from kernelized.experiments.framework.grid import expand_grid
from kernelized.experiments.framework.sweep import run_sweep

def run_fn(config, run_dir):
    Path(sys.argv[1], f"pid-{os.getpid()}").write_text("")
    time.sleep(120)
    return {}

if __name__ == "__main__":
    runs = expand_grid({"seed": 0, "grid": {"x": [1, 2]}})
    run_sweep(runs, run_fn, Path(sys.argv[1]) / "out", workers=2, progress=False)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="PR_SET_PDEATHSIG is Linux's")
def test_local_workers_end_when_the_sweep_process_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "sweep.py"
    script.write_text(_ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path)])
    deadline = time.time() + 60
    while len(list(tmp_path.glob("pid-*"))) < 2 and time.time() < deadline:
        time.sleep(0.2)
    pids = [int(p.name[4:]) for p in tmp_path.glob("pid-*")]
    assert len(pids) == 2, "the workers did not start"
    parent.send_signal(signal.SIGKILL)
    parent.wait()

    def alive(pid):
        try:
            os.kill(pid, 0)
            return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0
        except (ProcessLookupError, FileNotFoundError):
            return False

    deadline = time.time() + 20
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    left = [p for p in pids if alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"workers {left} kept running after their sweep was killed"

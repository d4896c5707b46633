"""`kernelized analyze` on tiny MQAR, LRA and LM sweeps: dispatch, maps of every head, IoU against softmax."""

import json
import shutil

import pytest
import torch
import yaml

from kernelized.experiments import analyze, lm, lra, mqar

MQAR_PRESET = {
    "task": {"vocab_size": 16, "num_kv_pairs": 2, "num_train": 32, "num_test": 8},
    "model": {"d_model": 24, "num_heads": 2, "feature_dim": 4},
    "train": {"epochs": 1, "batch_size": 16, "progress": False},
    "grid": {"kernel": ["softmax", "rebased"], "seq_len": [16], "seed": [0, 1]},
}
LRA_ARGS = [
    "--preset",
    "small",
    "--task",
    "listops",
    "--kernels",
    "softmax,elu,gmm-prf",
    "--seeds",
    "0",
    "--set",
    "train.max_steps=4",
]
LRA_ARGS += ["--set", "train.eval_every=2", "--set", "per_task.listops.data.generate.num_examples=200"]
LRA_ARGS += ["--set", "per_task.listops.model.d_model=16", "--set", "per_task.listops.model.num_heads=2"]
LM_ARGS = ["--set", "train.max_steps=3", "--set", "train.eval_every=3", "--set", "corpus.train_tokens=4000"]
LM_ARGS += ["--set", "corpus.val_tokens=600", "--set", "seq_len=32", "--kernels", "rebased,softmax"]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """One tiny sweep per experiment, trained once; KERNELIZED_DATA points into tmp for the whole module."""
    root = tmp_path_factory.mktemp("analyze")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERNELIZED_DATA", str(root / "data"))
        preset = root / "tiny.yaml"
        preset.write_text(yaml.safe_dump(MQAR_PRESET, sort_keys=False))
        assert mqar.main(["--preset", str(preset), "--no-progress", "--out", str(root / "mqar")]) == 0
        assert lra.main([*LRA_ARGS, "--no-progress", "--out", str(root / "lra")]) == 0
        assert lm.main([*LM_ARGS, "--no-progress", "--out", str(root / "lm")]) == 0
        torch.set_num_threads(threads)  # lra runs set their own thread count
        yield root


def run_dir(sweeps, experiment: str, kernel: str, seed: int = 0):
    (found,) = [p for p in (sweeps / experiment).glob(f"*kernel={kernel}_seed={seed}*") if p.is_dir()]
    return found


def panels(layers: dict) -> int:
    """Panels a figure of every head has: per layer each head and the head mean."""
    return sum(h + 1 for h in layers.values())


@pytest.mark.parametrize("experiment,kernel", [("mqar", "rebased"), ("lra", "elu"), ("lm", "rebased")])
def test_a_run_against_itself_overlaps_completely(sweeps, tmp_path, capsys, experiment, kernel):
    run = run_dir(sweeps, experiment, kernel)
    assert analyze.main([str(run), "--reference", str(run), "--examples", "3", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "analysis.json").read_text())
    assert record["experiment"] == experiment and record["kernel"] == kernel
    assert record["iou_by_layer"] and all(v == pytest.approx(1.0) for v in record["iou_by_layer"].values())
    assert all(0.0 <= b["iou"] <= 1.0 for b in record["best_head_iou_by_layer"].values())
    assert record["panels"] == 2 * panels(record["layers"])  # every head of every layer, run and reference
    assert (tmp_path / record["figure"]).read_bytes()[:4] == b"\x89PNG"
    assert record["cls_token"] == (experiment == "lra")


def test_mqar_sweep(sweeps, capsys):
    sweep = sweeps / "mqar"
    assert analyze.main([str(sweep), "--examples", "4"]) == 0
    text = (sweep / "analysis" / "analysis.md").read_text()
    assert "| rebased | 16 | 24 | 0.001 | 2 |" in text  # kernel, seq_len, d_model, lr, 2 seeds
    assert "gamma_q" in text and "beta_k" in text
    records = json.loads((sweep / "analysis" / "analysis.json").read_text())
    for r in (r for r in records if r["kernel"] == "rebased"):
        assert f"kernel=softmax_seed={r['seed']}_" in r["reference"]  # the same seed's softmax run
        assert all(0.0 <= v <= 1.0 for v in r["iou_by_layer"].values())
    drawn = [r for r in records if r.get("figure")]
    assert sorted(r["kernel"] for r in drawn) == ["rebased", "softmax"] and all(r["seed"] == 0 for r in drawn)
    for r in drawn:
        assert (sweep / "analysis" / r["figure"]).read_bytes()[:4] == b"\x89PNG"
    # rebased's figure: its 2 heads + mean, then the softmax reference's 1 head + mean
    assert {r["kernel"]: r["panels"] for r in drawn} == {"rebased": 3 + 2, "softmax": 2}


def test_lra_sweep_aligns_the_cls_token(sweeps, capsys):
    sweep = sweeps / "lra"
    assert analyze.main([str(sweep), "--examples", "4"]) == 0
    text = (sweep / "analysis" / "analysis.md").read_text()
    assert "| task | kernel | seeds | blocks.0: IoU (head mean) |" in text
    assert "| listops | elu | 1 |" in text
    (elu,) = [r for r in json.loads((sweep / "analysis" / "analysis.json").read_text()) if r["kernel"] == "elu"]
    assert "kernel=softmax_seed=0" in elu["reference"] and elu["cls_token"]
    assert elu["layers"] == {"blocks.0": 2, "blocks.1": 2}
    assert elu["panels"] == 2 * 2 * 3  # run and reference: 2 layers x (2 heads + mean)
    assert all(0.0 <= v <= 1.0 for v in elu["iou_by_layer"].values())


def test_lm_sweep(sweeps, capsys):
    sweep = sweeps / "lm"
    assert analyze.main([str(sweep), "--examples", "4"]) == 0
    text = (sweep / "analysis" / "analysis.md").read_text()
    assert "| rebased | 1 |" in text and "gamma_k" in text
    (rebased,) = [r for r in json.loads((sweep / "analysis" / "analysis.json").read_text()) if r["kernel"] == "rebased"]
    assert list(rebased["layers"]) == ["blocks.1", "blocks.3"]  # the attention layers; the BaseConvs have no maps
    assert all(0.0 <= v <= 1.0 for v in rebased["iou_by_layer"].values())


def test_long_inputs_draw_a_window(sweeps, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(analyze, "WINDOW", 6)
    run = run_dir(sweeps, "lra", "elu")
    assert analyze.main([str(run), "--examples", "2", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "analysis.json").read_text())
    assert record["drawn"] == 6 < record["positions"] and record["reference"] is None
    assert record["panels"] == 6 and not record["iou_by_layer"]


def test_sweep_without_softmax_says_so(sweeps, tmp_path, capsys):
    for run in (sweeps / "mqar").glob("kernel=rebased*"):
        shutil.copytree(run, tmp_path / "sweep" / run.name)
    assert analyze.main([str(tmp_path / "sweep"), "--examples", "2"]) == 0
    assert "no softmax run" in (tmp_path / "sweep" / "analysis" / "analysis.md").read_text()


def test_other_inputs_are_refused(sweeps, tmp_path, capsys):
    run = run_dir(sweeps, "mqar", "rebased")
    for other in (run_dir(sweeps, "mqar", "softmax", seed=1), run_dir(sweeps, "lm", "softmax")):
        assert analyze.main([str(run), "--reference", str(other), "--out", str(tmp_path)]) == 2
        assert "same inputs" in capsys.readouterr().err


def test_an_mqar_run_without_run_json(sweeps, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(run_dir(sweeps, "mqar", "rebased"), old)
    (old / "run.json").unlink()  # written before the framework: the MQAR config tells
    assert analyze.main([str(old), "--examples", "2", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "analysis.json").read_text())["experiment"] == "mqar"


def test_unsupported_folders(sweeps, tmp_path, capsys):
    bench = tmp_path / "bench" / "run"
    bench.mkdir(parents=True)
    (bench / "config.yaml").write_text("kernel: softmax\nseed: 0\n")
    (bench / "run.json").write_text(json.dumps({"experiment": "bench"}))
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.yaml").write_text("kernel: softmax\nseed: 0\ntask: listops\n")
    for folder in (bench, bench.parent, plain):
        assert analyze.main([str(folder)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "mqar, lra, lm" in err
    assert analyze.main([str(tmp_path / "bench" / "run" / "nothing")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert analyze.main([str(tmp_path / "plain")]) == 2 and "run.json" in capsys.readouterr().err


def test_sweep_without_checkpoints_says_how_to_train(sweeps, tmp_path, capsys):
    run = run_dir(sweeps, "lra", "elu")
    copy = tmp_path / "sweep" / run.name
    copy.mkdir(parents=True)
    for name in ("config.yaml", "run.json"):
        shutil.copy(run / name, copy / name)
    assert analyze.main([str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err
    assert "none has a checkpoint" in err and "kernelized lra" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert analyze.main([str(empty)]) == 2
    assert "neither a run folder" in capsys.readouterr().err


def test_bad_options(sweeps, tmp_path, capsys):
    run = run_dir(sweeps, "mqar", "rebased")
    assert analyze.main([str(run), "--mass", "1.5"]) == 2
    assert "--mass" in capsys.readouterr().err
    assert analyze.main([str(run), "--examples", "0"]) == 2
    assert analyze.main([str(sweeps / "mqar"), "--reference", str(run)]) == 2
    assert "--reference" in capsys.readouterr().err


def test_a_learned_spectrum_is_drawn_against_its_initialisation(sweeps, tmp_path, capsys):
    from kernelized.eval import spectra

    run = run_dir(sweeps, "lra", "gmm-prf")
    assert analyze.main([str(run), "--examples", "2", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "analysis.json").read_text())
    layers = record["spectra"]
    assert [entry["layer"] for entry in layers] == ["encoder.blocks.0.mixer.feature_map",
                                                   "encoder.blocks.1.mixer.feature_map"]  # fmt: skip
    assert all((tmp_path / entry["figure"]).read_bytes()[:4] == b"\x89PNG" for entry in layers)
    config, _ = lra.load_trained(run)
    (_, untrained), *_ = spectra.learned_maps(lra.initial_model(config))
    assert layers[0]["initial"] == spectra.spectrum_summary(untrained)  # the run's own starting point
    assert layers[0]["learned"] != layers[0]["initial"]  # training moved the spectrum
    capsys.readouterr()
    assert analyze.main([str(sweeps / "lra"), "--examples", "2", "--out", str(tmp_path / "sweep")]) == 0
    text = (tmp_path / "sweep" / "analysis.md").read_text()
    assert "## Learned spectra (initial -> trained)" in text and "| encoder.blocks.0.mixer.feature_map | 0 |" in text

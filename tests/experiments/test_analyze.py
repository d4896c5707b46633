import json

import pytest
import yaml

from kernelized.experiments import analyze, mqar

PRESET = {
    "task": {"vocab_size": 16, "num_kv_pairs": 2, "num_train": 32, "num_test": 8},
    "model": {"d_model": 24, "num_heads": 2, "feature_dim": 4},
    "train": {"epochs": 1, "batch_size": 16, "progress": False},
    "grid": {"kernel": ["softmax", "rebased"], "seq_len": [16], "seed": [0, 1]},
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyze")
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(PRESET, sort_keys=False))
    assert mqar.main(["--preset", str(path), "--out", str(root / "runs")]) == 0
    return root / "runs" / "tiny"


def test_one_run_against_softmax(sweep, tmp_path, capsys):
    run, ref = sweep / "kernel=rebased_seq_len=16_seed=0", sweep / "kernel=softmax_seq_len=16_seed=0"
    assert analyze.main([str(run), "--reference", str(ref), "--examples", "4", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "analysis.json").read_text())
    assert len(result["iou_by_layer"]) == 1 and 0.0 <= result["iou_by_layer"][0] <= 1.0
    assert result["best_head_iou_by_layer"][0] >= 0.0
    assert {r["param"] for r in result["gamma_beta"]} == {"gamma_q", "gamma_k", "beta_q", "beta_k"}
    assert (tmp_path / "maps_kernel=rebased_seq_len=16_seed=0.png").read_bytes()[:4] == b"\x89PNG"
    # a model compared with itself overlaps completely
    assert analyze.main([str(ref), "--reference", str(ref), "--examples", "4", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "analysis.json").read_text())["iou_by_layer"] == [1.0]


def test_a_whole_sweep(sweep, capsys):
    assert analyze.main([str(sweep), "--examples", "4"]) == 0
    text = (sweep / "analysis" / "analysis.md").read_text()
    assert "| rebased | 16 | 24 |" in text  # IoU row of rebased against softmax, 2 seeds
    assert "gamma_q" in text and "beta_k" in text
    assert (sweep / "analysis" / "maps_rebased_L16.png").exists()


def test_bad_input(sweep, tmp_path, capsys):
    assert analyze.main([str(tmp_path / "nothing")]) == 2
    assert "not a folder" in capsys.readouterr().err
    other_seed = sweep / "kernel=softmax_seq_len=16_seed=1"
    run = sweep / "kernel=rebased_seq_len=16_seed=0"
    assert analyze.main([str(run), "--reference", str(other_seed), "--out", str(tmp_path)]) == 2
    assert "same inputs" in capsys.readouterr().err
    assert analyze.main([str(run), "--mass", "1.5"]) == 2

"""GLUE TSV files in GLUE's own layouts (made small here), the labels and metrics of every task, bad input."""

import math

import numpy as np
import pytest
from scipy import stats

from kernelized.data import glue
from kernelized.eval import glue_metrics as gm

FILES = {  # task: (file name, text) in GLUE's own column layout
    "cola": ("dev.tsv", "gj04\t1\t\tThe cat sat.\ngj04\t0\t*\tCat the sat.\n"),
    "sst2": ("dev.tsv", "sentence\tlabel\na fine film\t1\ndull\t0\n"),
    "mrpc": ("dev.tsv", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe left.\tHe went away.\n"),
    "stsb": (
        "dev.tsv",
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain\tx\t2012\t1\tnone\tnone\tA man sings.\tA man is singing.\t4.6\n",
    ),  # fmt: skip
    "mnli": (
        "dev_mismatched.tsv",
        "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
        "0\t1\t2\tfiction\tIt rains.\tIt is dry.\tcontradiction\tcontradiction\n",
    ),  # fmt: skip
    "rte": ("dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA dog barks.\tAn animal barks.\tentailment\n"),
}


def _write(tmp_path, task):
    name, text = FILES[task]
    folder = tmp_path / glue.get_task(task).folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return name.removesuffix(".tsv")


def test_every_layout_reads_its_texts_and_labels(tmp_path):
    expected = {
        "cola": [("The cat sat.", None, 1), ("Cat the sat.", None, 0)],
        "sst2": [("a fine film", None, 1), ("dull", None, 0)],
        "mrpc": [("He left.", "He went away.", 1)],
        "stsb": [("A man sings.", "A man is singing.", 4.6)],
        "mnli": [("It rains.", "It is dry.", 2)],
        "rte": [("A dog barks.", "An animal barks.", 0)],
    }
    for task, rows in expected.items():
        assert glue.read_tsv(tmp_path, task, _write(tmp_path, task)) == rows, task
    assert glue.get_task("stsb").is_regression and glue.get_task("stsb").num_labels == 1
    assert glue.get_task("mnli").num_labels == 3 and glue.get_task("mnli").dev_splits[1] == "dev_mismatched"
    assert {t for t, s in glue.TASKS.items() if s.in_glue} == {
        "cola",
        "sst2",
        "mrpc",
        "qqp",
        "stsb",
        "mnli",
        "qnli",
        "rte",
        "wnli",
    }
    assert not glue.get_task("rotten-tomatoes").in_glue and glue.get_task("rotten-tomatoes").test_labelled


def test_bad_files_name_the_file_and_field(tmp_path):
    with pytest.raises(ValueError, match="GLUE task must be one of"):
        glue.get_task("squad")
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "dev.tsv").write_text("text\tlabel\nfine\t1\n")
    with pytest.raises(ValueError, match=r"dev.tsv: column 'sentence' missing"):
        glue.read_tsv(tmp_path, "sst2", "dev")
    (tmp_path / "SST-2" / "dev.tsv").write_text("sentence\tlabel\nfine\t2\n")
    with pytest.raises(ValueError, match=r"dev.tsv:2: label '2' is not one of sst2's classes \['0', '1'\]"):
        glue.read_tsv(tmp_path, "sst2", "dev")
    with pytest.raises(FileNotFoundError, match="train.tsv not found"):
        glue.read_tsv(tmp_path, "sst2", "train")


def test_metrics_match_their_definitions():
    pred, gold = np.array([1, 1, 0, 0, 1, 0]), np.array([1, 0, 0, 0, 1, 1])
    tp, tn, fp, fn = 2, 2, 1, 1
    assert gm.metric("accuracy", pred, gold) == pytest.approx(4 / 6)
    assert gm.metric("f1", pred, gold) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert gm.metric("matthews", pred, gold) == pytest.approx(mcc)
    assert gm.metric("matthews", np.ones(4), np.array([1, 0, 1, 0])) == 0.0  # a constant predictor
    x, y = np.array([0.1, 2.0, 3.5, 4.9]), np.array([0.5, 1.0, 4.0, 4.2])
    assert gm.metric("pearson", x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    assert gm.metric("spearman", x, y) == pytest.approx(1.0)
    assert gm.task_score({"f1": 0.8, "accuracy": 0.7}) == pytest.approx(0.75)
    assert gm.glue_average({"cola": 0.4, "sst2": 0.9, "wnli": 0.1}, exclude=("wnli",)) == pytest.approx(0.65)
    with pytest.raises(ValueError, match="metric must be one of"):
        gm.metric("bleu", x, y)
    with pytest.raises(ValueError, match="equal-length"):
        gm.metric("accuracy", x, y[:2])

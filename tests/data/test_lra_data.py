"""LRA loaders on small local files (and the hub calls mocked at the boundary): encodings, splits, bad files."""

from __future__ import annotations

import datasets
import huggingface_hub
import numpy as np
import pytest
import torch

from kernelized.data import listops, lra, pathfinder


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def test_encode_bytes_truncates_pads_and_offsets():
    x = lra.encode_bytes(["ab", "é", "abcdef"], 4)
    assert x.tolist() == [[99, 100, 0, 0], [0xC3 + 2, 0xA9 + 2, 0, 0], [99, 100, 101, 102]]


def test_text_from_local_parquet_and_csv_through_datasets(tmp_path):
    import pandas as pd

    pd.DataFrame({"text": ["good film", "bad"], "label": [1, 0]}).to_parquet(tmp_path / "train.parquet")
    pd.DataFrame({"text": ["meh", "great"], "label": [0, 1]}).to_csv(tmp_path / "test.csv", index=False)
    tokens, labels = lra.load_text("train", 6, tmp_path).tensors
    assert tokens[0].tolist() == [b + 2 for b in b"good f"] and labels.tolist() == [1, 0]
    tokens, labels = lra.load_text("val", 6, tmp_path).tensors  # IMDB's val is its test split (as LRA)
    assert tokens[1, :5].tolist() == [b + 2 for b in b"great"] and labels.tolist() == [0, 1]


def test_text_from_the_hub_uses_imdb_and_test_as_val(monkeypatch):
    calls = []

    def fake_load(name, split=None, data_files=None, **kw):
        calls.append((name, split))
        return datasets.Dataset.from_dict({"text": ["x", "yy"], "label": [0, 1]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    ds = lra.load_text("val", 3, None)
    assert calls == [("stanfordnlp/imdb", "test")]
    assert ds.tensors[0].tolist() == [[ord("x") + 2, 0, 0], [ord("y") + 2] * 2 + [0]]


def test_text_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no train"):
        lra.load_text("train", 4, tmp_path)
    (tmp_path / "train.csv").write_text("review,label\nfine,1\n")
    with pytest.raises(ValueError, match=r"train.csv: missing field\(s\) \['text'\]"):
        lra.load_text("train", 4, tmp_path)
    (tmp_path / "test.csv").write_text("text,label\nfine,7\n")
    with pytest.raises(ValueError, match=r"test.csv: field 'label' must lie in \[0, 2\)"):
        lra.load_text("test", 4, tmp_path)
    (tmp_path / "x.txt").write_text("fine")
    with pytest.raises(ValueError, match=r"x.txt: expected a .csv"):
        lra.load_text("train", 4, tmp_path / "x.txt")


def _write_aan(path, rows):
    path.write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))


def test_retrieval_reads_aan_tsv_and_the_hub_file(tmp_path, monkeypatch):
    _write_aan(tmp_path / "new_aan_pairs.eval.tsv", [(1.0, "a", "b", "cites x", "paper y"), (0, "c", "d", "u", "v")])
    x1, x2, labels = lra.load_retrieval("val", 5, tmp_path).tensors
    assert x1[0].tolist() == [b + 2 for b in b"cites"] and x2[1].tolist() == [ord("v") + 2, 0, 0, 0, 0]
    assert labels.tolist() == [1, 0]

    def fake_download(repo_id, filename, repo_type=None, **kw):
        assert (repo_id, filename, repo_type) == ("OpenNLPLab/lra", "data/aan/new_aan_pairs.eval.tsv", "dataset")
        return str(tmp_path / "new_aan_pairs.eval.tsv")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert torch.equal(lra.load_retrieval("val", 5, None).tensors[0], x1)


def test_retrieval_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="new_aan_pairs.train.tsv"):
        lra.load_retrieval("train", 4, tmp_path)
    _write_aan(tmp_path / "new_aan_pairs.test.tsv", [(1, "a", "b", "t1", "t2"), (1, "a", "b", "only four")])
    with pytest.raises(ValueError, match=r"new_aan_pairs.test.tsv:2: expected 5 tab-separated fields"):
        lra.load_retrieval("test", 4, tmp_path)
    _write_aan(tmp_path / "new_aan_pairs.test.tsv", [("yes", "a", "b", "t1", "t2")])
    with pytest.raises(ValueError, match=r"new_aan_pairs.test.tsv:1: field 'label'"):
        lra.load_retrieval("test", 4, tmp_path)


def test_image_from_local_arrays_gray_and_lra_split(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "train_images.npy", rgb)
    np.save(tmp_path / "train_labels.npy", np.arange(20) % 10)
    train = lra.load_image("train", tmp_path)
    val = lra.load_image("val", tmp_path)
    assert len(train) == 18 and len(val) == 2  # train[:90%], train[90%:]
    gray = np.round(rgb[0].astype(np.float64) @ [0.2989, 0.5870, 0.1140])
    assert train.tensors[0].shape == (18, 1024)
    assert np.abs(train.tensors[0][0].numpy() - 2 - gray.reshape(-1)).max() <= 1
    assert val.tensors[1].tolist() == [8, 9]
    with pytest.raises(FileNotFoundError, match="test_images.npy"):
        lra.load_image("test", tmp_path)


def test_image_from_the_hub_converts_pil(monkeypatch):
    from PIL import Image

    imgs = [Image.fromarray(np.full((32, 32, 3), v, np.uint8)) for v in (0, 100, 255)]

    def fake_load(name, split=None, data_files=None, **kw):
        assert (name, split) == ("uoft-cs/cifar10", "test")
        return datasets.Dataset.from_dict({"img": imgs, "label": [3, 4, 5]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    tokens, labels = lra.load_image("test").tensors
    assert tokens[:, 0].tolist() == [2, 102, 257] and labels.tolist() == [3, 4, 5]


def test_load_task_for_generated_tasks_and_errors(tmp_path):
    listops.write_splits(tmp_path / "lo", 10, config=listops.ListOpsConfig(5, 3, 5, 40))
    ds = lra.load_task("listops", "train", max_len=40, path=tmp_path / "lo")
    assert ds.tensors[0].shape == (8, 40) and int(ds.tensors[0].max()) < lra.TASKS["listops"].vocab_size
    pathfinder.write_splits(tmp_path / "pf", 10, config=pathfinder.PathfinderConfig.preset("pf16"))
    tokens, labels = lra.load_task("pathfinder", "val", path=tmp_path / "pf").tensors
    assert tokens.shape == (1, 256) and tokens.min() >= 2
    with pytest.raises(ValueError, match="more than max_len=100"):
        lra.load_task("pathfinder", "val", path=tmp_path / "pf", max_len=100)
    with pytest.raises(ValueError, match="task must be one of .*'listops'.*got 'lisops'"):
        lra.load_task("lisops", "train")
    with pytest.raises(ValueError, match="needs a data path"):
        lra.load_task("listops", "train")
    with pytest.raises(ValueError, match="split must be one of"):
        lra.load_task("text", "dev")

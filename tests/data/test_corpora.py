import json

import pytest
import torch

from kernelized.data.corpora import CorpusConfig, TokenWindows, iter_documents, load_corpus, stdlib_files
from kernelized.data.tokenizers import ByteTokenizer

BYTE = ByteTokenizer()


def test_stdlib_corpus_is_deterministic_and_splits_are_disjoint():
    files = stdlib_files()
    assert any(p.name == "os.py" for p in files) and all(p.suffix == ".py" for p in files)
    cfg = CorpusConfig(source="stdlib", train_tokens=20_000, val_tokens=5_000, val_fraction=0.2)
    train, val = load_corpus(cfg, BYTE)
    assert train.shape == (20_000,) and val.shape == (5_000,) and train.dtype == torch.int32
    train2, val2 = load_corpus(cfg, BYTE)
    assert torch.equal(train, train2) and torch.equal(val, val2)
    assert (train == BYTE.eos_id).any()  # documents are separated
    first_train = [d for _, d in zip(range(20), iter_documents(cfg, "train"))]
    first_val = [d for _, d in zip(range(5), iter_documents(cfg, "validation"))]
    assert not set(first_train) & set(first_val)
    # another seed gives another document order
    other = load_corpus(CorpusConfig(source="stdlib", train_tokens=2000, val_fraction=0.2, seed=1), BYTE)[0]
    assert not torch.equal(other, train[:2000])


def test_local_text_jsonl_and_folder(tmp_path):
    (tmp_path / "a.txt").write_text("".join(f"line {i}\n" for i in range(200)))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"text": f"doc {i}", "id": i}) for i in range(50)))
    txt = list(iter_documents(CorpusConfig(source=str(tmp_path / "a.txt"), val_fraction=0.0)))
    assert "".join(txt) == (tmp_path / "a.txt").read_text()  # 64-line blocks, in file order
    docs = list(iter_documents(CorpusConfig(source=str(tmp_path / "b.jsonl"), val_fraction=0.0)))
    assert sorted(docs) == sorted(f"doc {i}" for i in range(50))
    cfg = CorpusConfig(source=str(tmp_path), val_fraction=0.3)
    train_docs, val_docs = list(iter_documents(cfg, "train")), list(iter_documents(cfg, "validation"))
    assert len(train_docs) + len(val_docs) == 4 + 50 and val_docs and not set(train_docs) & set(val_docs)
    train, val = load_corpus(CorpusConfig(source=str(tmp_path), val_fraction=0.3, train_tokens=10**6), BYTE)
    assert train.numel() == sum(len(d.encode()) + 1 for d in train_docs)


def test_hub_loader_on_local_files(tmp_path):
    pytest.importorskip("datasets")
    data = tmp_path / "my_corpus"
    data.mkdir()
    rows = {"train": [f"train story {i}" for i in range(30)], "validation": [f"val story {i}" for i in range(7)]}
    for split, texts in rows.items():
        (data / f"{split}.jsonl").write_text("\n".join(json.dumps({"story": t}) for t in texts))
    for streaming in (False, True):
        cfg = CorpusConfig(source=f"hf:{data}", text_field="story", streaming=streaming)
        assert list(iter_documents(cfg, "train")) == rows["train"]
        assert list(iter_documents(cfg, "validation")) == rows["validation"]
        train, val = load_corpus(cfg, BYTE)
        assert BYTE.decode(val.tolist()) == "".join(rows["validation"])
    with pytest.raises(ValueError, match="could not be loaded"):
        list(iter_documents(CorpusConfig(source=f"hf:{data}", val_split="test"), "validation"))
    with pytest.raises(ValueError, match="text_field 'text' not found"):
        list(iter_documents(CorpusConfig(source=f"hf:{data}"), "train"))


def test_empty_or_missing_corpus_is_a_clear_error(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="no train text"):
        load_corpus(CorpusConfig(source=str(tmp_path / "empty.txt")), BYTE)
    with pytest.raises(ValueError, match="not found"):
        load_corpus(CorpusConfig(source=str(tmp_path / "nothing_here")), BYTE)
    (tmp_path / "x.jsonl").write_text(json.dumps({"body": "hi"}))
    with pytest.raises(ValueError, match="text_field"):
        load_corpus(CorpusConfig(source=str(tmp_path / "x.jsonl"), val_fraction=0.0), BYTE)


def test_token_windows():
    tokens = torch.arange(23)
    ds = TokenWindows(tokens, seq_len=5)
    assert len(ds) == 4
    for i in range(4):
        x, y = ds[i]
        assert torch.equal(x, torch.arange(5 * i, 5 * i + 5)) and torch.equal(y, x + 1)
    with pytest.raises(IndexError):
        ds[4]
    with pytest.raises(ValueError, match="fewer than seq_len"):
        TokenWindows(torch.arange(5), seq_len=5)

"""Text corpora for language modelling, tokenized into one stream and cut into fixed-length windows.

Sources (``CorpusConfig.source``):
  - ``"ptb"``: the Penn Treebank LM splits (Mikolov's, 887k training words) from the data cache, one sentence a
    document; ``val_split: test`` reads the test split.
  - ``"stdlib"``: the Python standard library's own ``.py`` files, found through ``sysconfig``; present on
    every machine that runs this code, so the tiny preset trains offline.
  - a local path: a ``.txt`` / ``.jsonl`` / ``.json`` / ``.py`` file, or a folder of them (read recursively).
  - ``"hf:<dataset id>"`` (e.g. ``"hf:Salesforce/wikitext"`` with ``config="wikitext-103-raw-v1"``,
    ``"hf:roneneldan/TinyStories"``, ``"hf:monology/pile-uncopyrighted"``): `datasets.load_dataset`, optionally
    streaming; the id may also be a local folder of data files (how the tests exercise this path offline).

Local sources have no named splits: each document goes to validation when a hash of its name falls below
``val_fraction``, so the split is deterministic and the same on every machine. Hub sources use their own
splits (``train_split`` / ``val_split``). Documents are joined with the tokenizer's end-of-document token.
"""

from __future__ import annotations

import functools
import json
import os
import random
import sysconfig
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from kernelized._checks import check_positive_int
from kernelized.data.cache import hub_cache

TEXT_SUFFIXES = (".txt", ".md", ".py", ".jsonl", ".json")
LINES_PER_TEXT_DOCUMENT = 64  # a .txt file is cut into blocks of lines so both splits see every file


@dataclass
class CorpusConfig:
    """Where the text comes from and how much of it to tokenize.

    Args:
        source: "stdlib", a local file/folder, or "hf:<dataset id or local folder>".
        config: the `datasets` configuration name (e.g. "wikitext-2-raw-v1"); hub sources only.
        train_split, val_split: split names for hub sources.
        text_field: the record field holding the text (jsonl/json files and hub datasets).
        streaming: hub sources: stream records instead of downloading the whole split.
        train_tokens, val_tokens: stop reading once this many tokens are collected.
        val_fraction: local sources: share of documents held out for validation (by name hash).
        seed: order of local documents (a fixed shuffle, so training data order is deterministic).
    """

    source: str = "stdlib"
    config: str | None = None
    train_split: str = "train"
    val_split: str = "validation"
    text_field: str = "text"
    streaming: bool = False
    train_tokens: int = 1_000_000
    val_tokens: int = 100_000
    val_fraction: float = 0.05
    seed: int = 0


# -- documents ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def stdlib_files() -> tuple[Path, ...]:
    """The standard library's ``.py`` files (site-packages skipped), sorted by relative path."""
    root = sysconfig.get_paths()["stdlib"]
    files = []
    for folder, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in ("site-packages", "dist-packages", "__pycache__"))
        files += [Path(folder, n) for n in names if n.endswith(".py")]
    return tuple(sorted(files, key=lambda p: p.relative_to(root).as_posix()))


def _in_split(doc_id: str, split: str, val_fraction: float) -> bool:
    bucket = zlib.crc32(doc_id.encode("utf-8")) / 2**32  # stable across machines and Python runs
    return (bucket < val_fraction) == (split == "validation")


def _file_documents(path: Path, text_field: str) -> Iterator[tuple[str, str]]:
    """(document id, text) pairs of one local file."""
    name = path.as_posix()
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if line.strip():
                    yield f"{name}:{i}", _field(json.loads(line), text_field, path)
    elif path.suffix == ".json":
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        records = data if isinstance(data, list) else data.get(text_field, [])
        for i, record in enumerate(records):
            yield f"{name}:{i}", record if isinstance(record, str) else _field(record, text_field, path)
    elif path.suffix == ".txt":
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
        for i in range(0, len(lines), LINES_PER_TEXT_DOCUMENT):
            yield f"{name}:{i}", "".join(lines[i : i + LINES_PER_TEXT_DOCUMENT])
    else:  # source files: one document each
        yield name, path.read_text(encoding="utf-8", errors="replace")


def _field(record, text_field: str, path) -> str:
    if not isinstance(record, dict) or text_field not in record:
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"text_field {text_field!r} not found in a record of {path}; record has {keys}")
    return str(record[text_field])


def _local_files(source: str) -> tuple[list[Path], Path]:
    path = Path(os.path.expanduser(source))
    if path.is_file():
        return [path], path.parent
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
        return files, path
    raise ValueError(
        f"corpus source {source!r} not found: expected 'stdlib', an existing file or folder, or 'hf:<dataset id>'"
    )


def iter_documents(cfg: CorpusConfig, split: str = "train") -> Iterator[str]:
    """The texts of one split (``"train"`` or ``"validation"``), in a deterministic order."""
    if cfg.source.startswith("hf:"):
        yield from _hub_documents(cfg, cfg.train_split if split == "train" else cfg.val_split)
        return
    if cfg.source == "ptb":  # Mikolov's splits from the data cache: one sentence a document (<eos> after each)
        yield from ptb_sentences("train" if split == "train" else cfg.val_split)
        return
    if cfg.source == "stdlib":
        files = stdlib_files()
        root = Path(sysconfig.get_paths()["stdlib"])
    else:
        files, root = _local_files(cfg.source)
    files = list(files)
    random.Random(cfg.seed).shuffle(files)  # mix packages; fixed by the seed, so data order is reproducible
    for path in files:
        for doc_id, text in _file_documents(path, cfg.text_field):
            rel = doc_id.replace(root.as_posix() + "/", "", 1)
            if text and _in_split(rel, split, cfg.val_fraction):
                yield text


def ptb_sentences(split: str) -> list[str]:
    """The sentences of a Penn Treebank split (``train``; ``validation`` or ``valid``; ``test``) from the data cache
    (``kernelized data fetch ptb``; one error naming that command when missing)."""
    from kernelized.data import penn_treebank
    from kernelized.data.fetch import verified_folder

    names = {"train": "train", "validation": "valid", "valid": "valid", "test": "test"}
    if split not in names:
        raise ValueError(f"corpus source 'ptb' has the splits train, validation and test; got {split!r}")
    return penn_treebank.read_splits(verified_folder("ptb"))[names[split]]


def _hub_documents(cfg: CorpusConfig, split: str) -> Iterator[str]:
    try:
        import datasets
    except ImportError as e:
        raise ValueError(f"corpus source {cfg.source!r} needs the `datasets` package, which is not installed") from e
    name = cfg.source[len("hf:") :]
    try:
        ds = datasets.load_dataset(name, cfg.config, split=split, streaming=cfg.streaming, cache_dir=hub_cache())
    except Exception as e:  # missing id, missing split, no network: say which
        raise ValueError(
            f"corpus source {cfg.source!r} (config={cfg.config!r}, split={split!r}) could not be loaded: "
            f"{type(e).__name__}: {e}"
        ) from e
    for record in ds:
        text = _field(record, cfg.text_field, cfg.source)
        if text:
            yield text


# -- tokens ------------------------------------------------------------------------------------


def tokenize_documents(documents, tokenizer, max_tokens: int) -> torch.Tensor:
    """Encode documents into one stream, each followed by the end-of-document token, cut at max_tokens: ``[N]``.

    Stored as int32 numpy pieces while reading (a Python list of 10^8 ints would take gigabytes).
    """
    check_positive_int("max_tokens", max_tokens)
    pieces, total = [], 0
    eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
    for text in documents:
        ids = np.asarray(tokenizer.encode(text) + eos, dtype=np.int32)
        pieces.append(ids)
        total += len(ids)
        if total >= max_tokens:
            break
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    return torch.from_numpy(stream[:max_tokens].copy())


def load_corpus(cfg: CorpusConfig, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and validation token streams ``([N_train], [N_val])``, int32; raises ValueError on an empty corpus."""
    train = tokenize_documents(iter_documents(cfg, "train"), tokenizer, cfg.train_tokens)
    val = tokenize_documents(iter_documents(cfg, "validation"), tokenizer, cfg.val_tokens)
    for split, tokens in (("train", train), ("validation", val)):
        if tokens.numel() == 0:
            raise ValueError(
                f"corpus source {cfg.source!r} gave no {split} text (empty files, or val_fraction="
                f"{cfg.val_fraction} left nothing for this split)"
            )
    return train, val


class TokenWindows(Dataset):
    """Non-overlapping windows of a token stream: item i is ``(x, y)`` with ``x = s[i*L : i*L+L]`` and
    ``y = s[i*L+1 : i*L+L+1]`` (the next tokens), both int64 ``[L]``. A tail shorter than L+1 is dropped.
    """

    def __init__(self, tokens: torch.Tensor, seq_len: int):
        check_positive_int("seq_len", seq_len)
        if tokens.dim() != 1:
            raise ValueError(f"tokens must be a 1-d stream [N], got shape {tuple(tokens.shape)}")
        if tokens.numel() < seq_len + 1:
            raise ValueError(
                f"the corpus has {tokens.numel()} tokens, fewer than seq_len + 1 = {seq_len + 1}; "
                "use more text or a shorter seq_len"
            )
        self.tokens = tokens
        self.seq_len = seq_len

    def __len__(self) -> int:
        return (self.tokens.numel() - 1) // self.seq_len

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"window {i} out of range [0, {len(self)})")
        start = i * self.seq_len
        chunk = self.tokens[start : start + self.seq_len + 1].long()
        return chunk[:-1], chunk[1:]

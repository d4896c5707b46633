"""Stratified train / val / test splits by seed, shared by the real corpora (BBC News, Rotten Tomatoes)."""

from __future__ import annotations

import numpy as np

from kernelized._checks import check_choice

SPLITS = ("train", "val", "test")
FRACTIONS = (0.8, 0.1, 0.1)


def stratified_split(labels: np.ndarray, split: str, seed: int = 0, unit: str = "document") -> np.ndarray:
    """Indices of ``split``: per label, a shuffle by ``seed`` cut 80 / 10 / 10 (each label needs 3 items); the same
    seed gives the same split on every machine. ``unit`` names the items in the error."""
    check_choice("split", split, SPLITS)
    rng = np.random.default_rng(seed)
    out = []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        if len(idx) < 3:
            raise ValueError(f"label {label} has {len(idx)} {unit}(s); a train/val/test split needs 3")
        n_val = n_test = max(1, int(round(FRACTIONS[1] * len(idx))))
        cuts = {"train": idx[: len(idx) - n_val - n_test], "val": idx[len(idx) - n_val - n_test : len(idx) - n_test]}
        cuts["test"] = idx[len(idx) - n_test :]
        out.append(cuts[split])
    return np.sort(np.concatenate(out))

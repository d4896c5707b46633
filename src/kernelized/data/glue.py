"""The GLUE tasks (Wang et al. 2019): what each one reads, its labels and its official metrics.

Sources: ``datasets`` (``nyu-mll/glue``, one config per task) with hub access, or local TSV files in GLUE's own
layout (``<folder>/<task dir>/{train,dev}.tsv``; MNLI: ``dev_matched.tsv`` and ``dev_mismatched.tsv``), read by
:func:`read_tsv` with the columns GLUE's files have (CoLA's files have no header; every other task's do).

Metrics (:mod:`kernelized.eval.glue_metrics`): Matthews correlation for CoLA, F1 and accuracy for MRPC and QQP,
Pearson and Spearman for STS-B (a regression on [0, 5]), accuracy otherwise; MNLI is scored on both dev sets.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

HUB_ID = "nyu-mll/glue"


@dataclass(frozen=True)
class Task:
    """One GLUE task: its folder and hub config, the TSV columns (text a, text b or None, label), whether the
    files have a header, the label names in id order (empty: regression), the metrics and the dev splits."""

    name: str
    folder: str
    hub_config: str
    columns: tuple[str | int, str | int | None, str | int]
    header: bool = True
    labels: tuple[str, ...] = ("0", "1")
    metrics: tuple[str, ...] = ("accuracy",)
    dev_splits: tuple[str, ...] = ("dev",)
    hub_fields: tuple[str, str | None] = ("sentence", None)

    @property
    def num_labels(self) -> int:
        return len(self.labels) or 1  # STS-B: one regression output

    @property
    def is_regression(self) -> bool:
        return not self.labels


NLI = ("entailment", "not_entailment")
TASKS = {
    t.name: t
    for t in (
        Task("cola", "CoLA", "cola", (3, None, 1), header=False, metrics=("matthews",)),
        Task("sst2", "SST-2", "sst2", ("sentence", None, "label")),
        Task(
            "mrpc",
            "MRPC",
            "mrpc",
            ("#1 String", "#2 String", "Quality"),
            metrics=("f1", "accuracy"),
            hub_fields=("sentence1", "sentence2"),
        ),  # fmt: skip
        Task(
            "qqp",
            "QQP",
            "qqp",
            ("question1", "question2", "is_duplicate"),
            metrics=("f1", "accuracy"),
            hub_fields=("question1", "question2"),
        ),  # fmt: skip
        Task(
            "stsb",
            "STS-B",
            "stsb",
            ("sentence1", "sentence2", "score"),
            labels=(),
            metrics=("pearson", "spearman"),
            hub_fields=("sentence1", "sentence2"),
        ),  # fmt: skip
        Task(
            "mnli",
            "MNLI",
            "mnli",
            ("sentence1", "sentence2", "gold_label"),
            labels=("entailment", "neutral", "contradiction"),
            dev_splits=("dev_matched", "dev_mismatched"),
            hub_fields=("premise", "hypothesis"),
        ),  # fmt: skip
        Task(
            "qnli", "QNLI", "qnli", ("question", "sentence", "label"), labels=NLI, hub_fields=("question", "sentence")
        ),
        Task(
            "rte", "RTE", "rte", ("sentence1", "sentence2", "label"), labels=NLI, hub_fields=("sentence1", "sentence2")
        ),
        Task("wnli", "WNLI", "wnli", ("sentence1", "sentence2", "label"), hub_fields=("sentence1", "sentence2")),
    )
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"GLUE task must be one of {list(TASKS)}, got {name!r}")
    return TASKS[name]


def _column(row: list[str], header: dict[str, int] | None, col: str | int, path: Path) -> str:
    index = col if isinstance(col, int) else (header or {}).get(col)
    if index is None or index >= len(row):
        raise ValueError(f"{path}: column {col!r} missing (the file has {sorted(header or {})})")
    return row[index]


def _label(task: Task, value: str, where: str) -> float | int:
    if task.is_regression:
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{where}: {task.name} needs a numeric score, got {value!r}") from None
    if value not in task.labels:
        raise ValueError(f"{where}: label {value!r} is not one of {task.name}'s classes {list(task.labels)}")
    return task.labels.index(value)


def read_tsv(folder: str | os.PathLike, task: str, split: str) -> list[tuple[str, str | None, float | int]]:
    """``[(text_a, text_b or None, label id or score)]`` of ``<folder>/<task dir>/<split>.tsv`` (or of
    ``<folder>/<split>.tsv`` when the folder is the task's own)."""
    spec = get_task(task)
    folder = Path(folder)
    path = folder / spec.folder / f"{split}.tsv"
    path = path if path.is_file() else folder / f"{split}.tsv"
    if not path.is_file():
        raise FileNotFoundError(f"{task}: {split}.tsv not found in {folder / spec.folder} or {folder}")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = {name: i for i, name in enumerate(rows.pop(0))} if spec.header and rows else None
    out = []
    for n, row in enumerate(rows, 2 if spec.header else 1):
        a_col, b_col, y_col = spec.columns
        a = _column(row, header, a_col, path)
        b = _column(row, header, b_col, path) if b_col is not None else None
        out.append((a, b, _label(spec, _column(row, header, y_col, path), f"{path}:{n}")))
    if not out:
        raise ValueError(f"{path}: no examples")
    return out

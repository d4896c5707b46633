"""The GLUE tasks (Wang et al. 2019): what each one reads, its labels and its official metrics.

Sources: ``datasets`` (``nyu-mll/glue``, one config per task) with hub access, or local TSV files in GLUE's own
layout (``<folder>/<task dir>/{train,dev}.tsv``; MNLI: ``dev_matched.tsv`` and ``dev_mismatched.tsv``), read by
:func:`read_tsv` with the columns GLUE's files have (CoLA's files have no header; every other task's do).

Besides the nine GLUE tasks, ``rotten-tomatoes`` (Pang and Lee's sentence polarity snippets, the data SST was built
from: the offline SST-2 analogue) reads the fetched corpus (``kernelized data fetch rotten-tomatoes``) or
``data.path``, split 80 / 10 / 10 by ``split_seed`` into train / dev / test; with ``source="hub"`` it is
``cornell-movie-review-data/rotten_tomatoes`` with the hub's own splits. It has a labelled test split, which GLUE's
tasks do not (their test labels are hidden): :func:`load_examples` is the one entry point for all of them.

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
    in_glue: bool = True  # counts in the GLUE average
    test_labelled: bool = False  # GLUE's test labels are hidden; rotten-tomatoes has its own labelled test split

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
        ),
        Task(
            "qqp",
            "QQP",
            "qqp",
            ("question1", "question2", "is_duplicate"),
            metrics=("f1", "accuracy"),
            hub_fields=("question1", "question2"),
        ),
        Task(
            "stsb",
            "STS-B",
            "stsb",
            ("sentence1", "sentence2", "score"),
            labels=(),
            metrics=("pearson", "spearman"),
            hub_fields=("sentence1", "sentence2"),
        ),
        Task(
            "mnli",
            "MNLI",
            "mnli",
            ("sentence1", "sentence2", "gold_label"),
            labels=("entailment", "neutral", "contradiction"),
            dev_splits=("dev_matched", "dev_mismatched"),
            hub_fields=("premise", "hypothesis"),
        ),
        Task(
            "qnli", "QNLI", "qnli", ("question", "sentence", "label"), labels=NLI, hub_fields=("question", "sentence")
        ),
        Task(
            "rte", "RTE", "rte", ("sentence1", "sentence2", "label"), labels=NLI, hub_fields=("sentence1", "sentence2")
        ),
        Task("wnli", "WNLI", "wnli", ("sentence1", "sentence2", "label"), hub_fields=("sentence1", "sentence2")),
        Task(
            "rotten-tomatoes",
            "rotten-tomatoes",
            "",
            ("text", None, "label"),
            hub_fields=("text", None),
            in_glue=False,
            test_labelled=True,
        ),
    )
}
RT_HUB_ID = "cornell-movie-review-data/rotten_tomatoes"
#: training examples per task (GLUE's train splits; rotten-tomatoes: our 80 % split), for time estimates
TRAIN_SIZES = {"cola": 8_551, "sst2": 67_349, "mrpc": 3_668, "qqp": 363_846, "stsb": 5_749, "mnli": 392_702,
               "qnli": 104_743, "rte": 2_490, "wnli": 635, "rotten-tomatoes": 10_248}  # fmt: skip
SOURCES = ("auto", "hub")


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


def splits_of(task: str) -> tuple[str, ...]:
    """The labelled splits of a task: ``train``, its dev split(s) and, for rotten-tomatoes, ``test``."""
    spec = get_task(task)
    return ("train", *spec.dev_splits, *(("test",) if spec.test_labelled else ()))


def load_examples(
    task: str, split: str, path: str | os.PathLike | None = None, source: str = "auto", split_seed: int = 0
) -> list[tuple[str, str | None, float | int]]:
    """``[(text_a, text_b or None, label id or score)]`` of one labelled split (:func:`splits_of`).

    ``source="auto"``: GLUE tasks from ``path`` (TSV files in GLUE's layout) when given, else the hub
    (``nyu-mll/glue``); rotten-tomatoes from ``path`` or the data cache, split by ``split_seed``.
    ``source="hub"``: the hub for every task."""
    spec = get_task(task)
    if split not in splits_of(task):
        raise ValueError(f"split of {task} must be one of {list(splits_of(task))}, got {split!r}")
    if source not in SOURCES:
        raise ValueError(f"data.source must be one of {list(SOURCES)}, got {source!r}")
    if source == "hub" or (spec.in_glue and path is None):
        return _hub_examples(spec, split)
    if spec.in_glue:
        return read_tsv(path, task, split)
    from kernelized.data import rotten_tomatoes
    from kernelized.data.fetch import verified_folder

    folder = Path(path) if path is not None else verified_folder("rotten-tomatoes")
    texts, labels = rotten_tomatoes.read_corpus(folder)
    texts, labels = rotten_tomatoes.split(texts, labels, "val" if split == "dev" else split, split_seed)
    return [(t, None, int(y)) for t, y in zip(texts, labels)]


def _hub_examples(spec: Task, split: str) -> list[tuple[str, str | None, float | int]]:
    hub_split = {"dev": "validation", "dev_matched": "validation_matched", "dev_mismatched": "validation_mismatched"}
    name, config = (HUB_ID, spec.hub_config) if spec.in_glue else (RT_HUB_ID, None)
    try:
        import datasets

        from kernelized.data.cache import hub_cache

        ds = datasets.load_dataset(name, config, split=hub_split.get(split, split), cache_dir=hub_cache())
    except Exception as e:  # no datasets, no network, unknown split: one line naming what was asked
        raise ValueError(
            f"{spec.name}: {name} ({config or 'default'}, {split}) could not be loaded from the hub "
            f"({type(e).__name__}: {e}); pass data.path with GLUE's TSV files instead"
        ) from None
    a_field, b_field = spec.hub_fields
    cast = float if spec.is_regression else int
    return [(r[a_field], r[b_field] if b_field else None, cast(r["label"])) for r in ds]

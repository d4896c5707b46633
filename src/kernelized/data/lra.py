"""Long Range Arena data: the five tasks as TensorDatasets of token ids, from local files or the hub.

Token ids, shared by every task: 0 = padding, 1 = [CLS]; ListOps has its own 15 symbols after them
(:data:`kernelized.data.listops.VOCAB`); bytes and pixels are ``value + 2`` (vocab 258).

| task       | sources (LRA's first, then the CPU tier's real corpora)             | example tensors                   |
|------------|---------------------------------------------------------------------|-----------------------------------|
| listops    | generated or LRA's ``basic_{train,val,test}.tsv``                   | tokens [N, T], labels [N] (10)    |
| text       | ``imdb`` (hub or csv/json/parquet); ``bbc-news`` topics             | tokens [N, T], labels [N] (2 / 5) |
| retrieval  | ``aan`` (``new_aan_pairs.*.tsv``); ``bbc-news`` same-topic pairs    | x1, x2 [N, T], labels [N] (2)     |
| image      | ``cifar10`` gray (hub or ``.npy``); ``fashion-mnist`` IDX, padded   | pixels [N, 1024], labels [N] (10) |
| pathfinder | generated ``{train,val,test}.npz``, or LRA's PNG folders            | pixels [N, H*W], labels [N] (2)   |

The fetched corpora (:mod:`kernelized.data.fashion_mnist`, :mod:`kernelized.data.bbc_news`) are read from the data
cache after ``kernelized data fetch <source>``, or from ``path``.

Splits follow LRA: IMDB has no validation split, so "val" is its test split (LRA's input pipeline does the same);
CIFAR-10 "train" is ``train[:45000]``, "val" ``train[45000:]``; AAN "val" is the ``eval`` file. Text is truncated
to ``max_len`` bytes (LRA: "truncated or padded"); ListOps refuses sequences longer than ``max_len`` (cutting one
would change its answer).

Network loaders (``datasets.load_dataset`` for IMDB and CIFAR-10, ``huggingface_hub.hf_hub_download`` for the
AAN TSVs of ``OpenNLPLab/lra`` -- 8.5 GB for train) run only when no local path is given.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from kernelized._checks import check_choice, check_positive_int
from kernelized.data import bbc_news, fashion_mnist, listops, pathfinder
from kernelized.data.cache import hub_cache
from kernelized.data.fetch import verified_folder
from kernelized.data.splits import SPLITS

PAD_ID, CLS_ID, OFFSET = 0, 1, 2
BYTE_VOCAB = 256 + OFFSET
IMDB_HUB_ID = "stanfordnlp/imdb"
CIFAR_HUB_ID = "uoft-cs/cifar10"
AAN_HUB_ID = "OpenNLPLab/lra"
AAN_FILES = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv", "test": "new_aan_pairs.test.tsv"}


@dataclass(frozen=True)
class TaskInfo:
    """What a model needs to know about a task."""

    name: str
    num_classes: int
    vocab_size: int
    dual: bool  # two inputs (retrieval)
    max_len: int  # LRA's length per input


TASKS = {
    "listops": TaskInfo("listops", 10, listops.VOCAB_SIZE, False, 2000),
    "text": TaskInfo("text", 2, BYTE_VOCAB, False, 4000),
    "retrieval": TaskInfo("retrieval", 2, BYTE_VOCAB, True, 4000),
    "image": TaskInfo("image", 10, BYTE_VOCAB, False, 1024),
    "pathfinder": TaskInfo("pathfinder", 2, BYTE_VOCAB, False, 1024),
}


# Where a task's examples come from: the first source is LRA's own; the others are real corpora this machine can
# have (``kernelized data fetch <source>``) for the CPU tier.
SOURCES = {
    "listops": ("listops",),
    "text": ("imdb", "bbc-news"),
    "retrieval": ("aan", "bbc-news"),
    "image": ("cifar10", "fashion-mnist"),
    "pathfinder": ("pathfinder",),
}
FETCHED = ("bbc-news", "fashion-mnist")  # sources read from the data cache
_SOURCE_CLASSES = {("text", "bbc-news"): 5}


def task_info(task: str, source: str | None = None) -> TaskInfo:
    """The task's :class:`TaskInfo`; ``source`` (default: LRA's) changes the class count where it differs."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    info = TASKS[task]
    if source is not None:
        check_choice(f"data.source of task {task}", source, SOURCES[task])
        info = replace(info, num_classes=_SOURCE_CLASSES.get((task, source), info.num_classes))
    return info


# ---------------------------------------------------------------- bytes and pixels


def encode_bytes(texts: list[str] | list[bytes], max_len: int) -> torch.Tensor:
    """UTF-8 bytes + 2, truncated and right-padded with 0: ``[N, max_len]`` int64."""
    check_positive_int("max_len", max_len)
    out = np.zeros((len(texts), max_len), dtype=np.int64)
    for i, t in enumerate(texts):
        b = np.frombuffer(t if isinstance(t, bytes) else t.encode("utf-8"), dtype=np.uint8)[:max_len]
        out[i, : len(b)] = b.astype(np.int64) + OFFSET
    return torch.from_numpy(out)


def encode_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 images ``[N, H, W]`` -> raster-order tokens ``[N, H * W]`` (value + 2)."""
    if images.ndim != 3:
        raise ValueError(f"images must be [N, H, W] grayscale, got shape {images.shape}")
    return torch.from_numpy(images.reshape(len(images), -1).astype(np.int64) + OFFSET)


def rgb_to_gray(images: np.ndarray) -> np.ndarray:
    """``[N, H, W, 3]`` uint8 -> ``[N, H, W]`` uint8 with TensorFlow's ``rgb_to_grayscale`` weights (as LRA)."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W, 3] RGB, got shape {images.shape}")
    gray = images.astype(np.float32) @ np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)
    return np.clip(np.round(gray), 0, 255).astype(np.uint8)


def _check_split(split: str) -> None:
    check_choice("split", split, SPLITS)


def _labels(values, source: str, num_classes: int) -> torch.Tensor:
    labels = np.asarray(values)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.number):
        raise ValueError(f"{source}: field 'label' must be a 1-d list of class numbers, got {labels.dtype}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{source}: field 'label' must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]"
        )
    return torch.as_tensor(labels.astype(np.int64))


def _load_hf(builder_or_id: str, split: str, data_files=None, **kwargs):
    """``datasets.load_dataset`` with an error that says what to install."""
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is an optional extra
        raise ImportError("loading this task needs `datasets` (pip install 'kernelized[hf]')") from e
    kwargs.setdefault("cache_dir", hub_cache())  # the data cache, like every download
    return datasets.load_dataset(builder_or_id, split=split, data_files=data_files, **kwargs)


def _local_builder(path: Path) -> str:
    kinds = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
    if path.suffix not in kinds:
        raise ValueError(f"{path}: expected a .csv, .tsv, .json, .jsonl or .parquet file, got {path.suffix!r}")
    return kinds[path.suffix]


# ---------------------------------------------------------------- the tasks


def load_text(split: str, max_len: int, path: str | os.PathLike | None = None) -> TensorDataset:
    """IMDB reviews as bytes: ``(tokens [N, max_len], labels [N])``.

    ``path``: a folder with ``{train,test}.{csv,json,jsonl,parquet}`` (columns ``text``, ``label``) or one such file
    per call; None = the hub's ``stanfordnlp/imdb``. "val" reads the test split, as LRA does.
    """
    _check_split(split)
    hf_split = "train" if split == "train" else "test"
    if path is None:
        ds = _load_hf(IMDB_HUB_ID, hf_split)
        source = f"{IMDB_HUB_ID}[{hf_split}]"
    else:
        file = Path(path)
        if file.is_dir():
            found = sorted(p for p in file.glob(f"{hf_split}.*") if p.suffix in (".csv", ".json", ".jsonl", ".parquet"))
            if not found:
                raise FileNotFoundError(f"no {hf_split}.{{csv,json,jsonl,parquet}} in IMDB folder {file}")
            file = found[0]
        if not file.is_file():
            raise FileNotFoundError(f"IMDB file not found: {file}")
        builder = _local_builder(file)
        extra = {"delimiter": "\t"} if file.suffix == ".tsv" else {}
        try:
            ds = _load_hf(builder, "train", data_files=str(file), **extra)
        except Exception as e:
            raise ValueError(f"{file}: could not be read as {builder} ({type(e).__name__}: {e})") from None
        source = str(file)
    missing = {"text", "label"} - set(ds.column_names)
    if missing:
        raise ValueError(f"{source}: missing field(s) {sorted(missing)}; got columns {ds.column_names}")
    return TensorDataset(encode_bytes(ds["text"], max_len), _labels(ds["label"], source, 2))


def read_aan(path: str | os.PathLike) -> tuple[list[str], list[str], list[int]]:
    """An AAN TSV (no header; ``label, id1, id2, text1, text2``) -> (texts1, texts2, labels)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"AAN file not found: {path}")
    csv.field_size_limit(1 << 30)
    t1, t2, labels = [], [], []
    with open(path, newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if len(row) != 5:
                raise ValueError(
                    f"{path}:{lineno}: expected 5 tab-separated fields (label, id1, id2, text1, text2), got {len(row)}"
                )
            try:
                label = int(float(row[0]))
            except ValueError:
                raise ValueError(f"{path}:{lineno}: field 'label' must be 0 or 1, got {row[0]!r}") from None
            if label not in (0, 1):
                raise ValueError(f"{path}:{lineno}: field 'label' must be 0 or 1, got {row[0]!r}")
            labels.append(label)
            t1.append(row[3])
            t2.append(row[4])
    if not labels:
        raise ValueError(f"{path}: no examples")
    return t1, t2, labels


def load_retrieval(split: str, max_len: int, path: str | os.PathLike | None = None) -> TensorDataset:
    """AAN pairs: ``(x1 [N, max_len], x2 [N, max_len], labels [N])``, each document truncated to ``max_len`` bytes.

    ``path``: the folder with LRA's ``new_aan_pairs.{train,eval,test}.tsv``; None = download that file from the
    hub dataset ``OpenNLPLab/lra`` (``data/aan/``).
    """
    _check_split(split)
    name = AAN_FILES[split]
    if path is None:
        from huggingface_hub import hf_hub_download

        file = Path(hf_hub_download(AAN_HUB_ID, f"data/aan/{name}", repo_type="dataset", cache_dir=hub_cache()))
    else:
        file = Path(path) / name if Path(path).is_dir() else Path(path)
    t1, t2, labels = read_aan(file)
    return TensorDataset(encode_bytes(t1, max_len), encode_bytes(t2, max_len), torch.tensor(labels))


def load_image(split: str, path: str | os.PathLike | None = None) -> TensorDataset:
    """Gray CIFAR-10 as pixel sequences: ``(tokens [N, 1024], labels [N])``.

    ``path``: a folder with ``{train,test}_images.npy`` (uint8 ``[N, 32, 32, 3]`` or gray ``[N, 32, 32]``) and
    ``{train,test}_labels.npy``; None = the hub's ``uoft-cs/cifar10``. LRA's split: train = train[:45000] (90%),
    val = train[45000:], test = test.
    """
    _check_split(split)
    hf_split = "test" if split == "test" else "train"
    if path is None:
        ds = _load_hf(CIFAR_HUB_ID, hf_split)
        images = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in ds["img"]])
        labels, source = np.asarray(ds["label"]), f"{CIFAR_HUB_ID}[{hf_split}]"
    else:
        folder = Path(path)
        files = {k: folder / f"{hf_split}_{k}.npy" for k in ("images", "labels")}
        for f in files.values():
            if not f.is_file():
                raise FileNotFoundError(f"CIFAR-10 array not found: {f}")
        try:
            images, labels = np.load(files["images"]), np.load(files["labels"])
        except Exception as e:
            raise ValueError(f"{folder}: unreadable .npy ({type(e).__name__}: {e})") from None
        source = str(files["images"])
        if images.dtype != np.uint8:
            raise ValueError(f"{source}: images must be uint8, got {images.dtype}")
        if len(labels) != len(images):
            raise ValueError(f"{files['labels']}: {len(labels)} labels for {len(images)} images")
    if images.ndim == 4:
        images = rgb_to_gray(images)
    if split != "test":
        cut = int(round(0.9 * len(images)))
        sl = slice(0, cut) if split == "train" else slice(cut, None)
        images, labels = images[sl], labels[sl]
    return TensorDataset(encode_pixels(images), _labels(labels, source, 10))


def load_pathfinder(split: str, path: str | os.PathLike) -> TensorDataset:
    """Pathfinder: ``(tokens [N, H * W], labels [N])`` from ``<path>/<split>.npz`` (our generator's files) or from
    a released LRA difficulty folder (``.../pathfinder32/curv_contour_length_14`` with ``metadata/`` and images)."""
    path = Path(path)
    if (path / "metadata").is_dir():
        images, labels = pathfinder.read_lra_folder(path, split)
        source = str(path)
    else:
        images, labels = pathfinder.read_split(path, split)
        source = str(path / f"{split}.npz")
    return TensorDataset(encode_pixels(images), _labels(labels, source, 2))


def load_listops(split: str, max_len: int, path: str | os.PathLike) -> TensorDataset:
    """ListOps from ``<path>/basic_<split>.tsv``: ``(tokens [N, max_len], labels [N])``."""
    return listops.load_split(path, split, max_len)


def load_bbc_text(split: str, max_len: int, path=None, split_seed: int = 0) -> TensorDataset:
    """BBC News topics as bytes: ``(tokens [N, max_len], labels [N])`` (5 classes), stratified split."""
    docs, labels, topics = bbc_news.read_corpus(verified_folder("bbc-news", path))
    if len(topics) != 5:
        raise ValueError(f"bbc-news: expected the 5 BBC topics, found {len(topics)}: {topics}")
    idx = bbc_news.split_indices(labels, split, split_seed)
    return TensorDataset(encode_bytes([docs[i] for i in idx], max_len), torch.as_tensor(labels[idx]))


def load_bbc_retrieval(split: str, max_len: int, path=None, split_seed: int = 0, pairs_per_document: int = 1):
    """Same-topic pairs of BBC articles: ``(x1 [P, max_len], x2 [P, max_len], labels [P])``, balanced."""
    docs, labels, _ = bbc_news.read_corpus(verified_folder("bbc-news", path))
    idx = bbc_news.split_indices(labels, split, split_seed)
    first, second, same = bbc_news.retrieval_pairs(labels, idx, split_seed + SPLITS.index(split), pairs_per_document)
    tokens = encode_bytes(docs, max_len)
    return TensorDataset(tokens[first], tokens[second], torch.as_tensor(same))


def load_fashion_mnist(split: str, path=None) -> TensorDataset:
    """Fashion-MNIST padded to 32x32: ``(pixels [N, 1024], labels [N])`` (10 classes)."""
    images, labels = fashion_mnist.load_split(verified_folder("fashion-mnist", path), split)
    return TensorDataset(encode_pixels(images), torch.as_tensor(labels))


def load_task(
    task: str,
    split: str,
    *,
    max_len: int | None = None,
    path: str | os.PathLike | None = None,
    source: str | None = None,
    split_seed: int = 0,
    pairs_per_document: int = 1,
):
    """One split of an LRA task as a TensorDataset (inputs..., labels); ``max_len`` defaults to LRA's; ``source``
    picks the data (:data:`SOURCES`; default LRA's); ``split_seed`` and ``pairs_per_document`` are bbc-news's."""
    info = task_info(task, source)
    _check_split(split)
    max_len = max_len or info.max_len
    if source == "bbc-news":
        if task == "text":
            return load_bbc_text(split, max_len, path, split_seed)
        return load_bbc_retrieval(split, max_len, path, split_seed, pairs_per_document)
    if task in ("listops", "pathfinder") and path is None:
        raise ValueError(f"task {task!r} needs a data path (write one with `kernelized data {task} --out DIR`)")
    if task == "listops":
        return load_listops(split, max_len, path)
    if task == "text":
        return load_text(split, max_len, path)
    if task == "retrieval":
        return load_retrieval(split, max_len, path)
    if task == "image":
        ds = load_fashion_mnist(split, path) if source == "fashion-mnist" else load_image(split, path)
    else:
        ds = load_pathfinder(split, path)
    if ds.tensors[0].shape[1] > max_len:
        raise ValueError(
            f"{task} images give {ds.tensors[0].shape[1]} pixels per sequence, more than max_len={max_len}"
        )
    return ds

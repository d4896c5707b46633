"""Fashion-MNIST (Xiao et al. 2017) as LRA's Image task: 70,000 real 28x28 grey images of 10 clothing classes,
padded to 32x32 = 1,024 pixels in raster order, the length of LRA's sequential CIFAR-10.

Files: the standard IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` in one folder; ``kernelized
data fetch fashion-mnist`` copies them into the data cache (from Debian's ``dataset-fashion-mnist``, which puts
them in ``/usr/share/datasets/fashion-mnist/``, or from ``--from DIR``). With hub access the same images are the
``datasets`` id ``zalando-datasets/fashion_mnist``.

Splits, as LRA's CIFAR-10: train = the first 90% of the 60,000 training images (54,000), val = the last 10%
(6,000), test = the 10,000 ``t10k`` images. Labels: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat,
5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot (balanced: 10% each in every split up to sampling).
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np

from kernelized._checks import check_choice

FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
SIZE = 32  # LRA Image's side: 32 x 32 = 1,024 tokens
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_MAGIC = {2051: 3, 2049: 1}  # IDX magic numbers (unsigned bytes): images have 3 dimensions, labels 1


def find_file(folder: str | os.PathLike, stem: str) -> Path:
    """``<folder>/<stem>.gz`` or ``<folder>/<stem>``; a clear error naming both when neither exists."""
    folder = Path(folder)
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}[.gz] not found in {folder} (run `kernelized data fetch fashion-mnist`)"
    )


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (gzipped or not) of unsigned bytes -> ``uint8`` array of its shape, read-only.

    Kept per process while the file's size and mtime stay: a run loads train and val from one training file,
    which would otherwise be decompressed twice (0.5 s each)."""
    path = Path(path).resolve()
    stat = path.stat()
    return _read_idx(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)  # the four Fashion-MNIST files
def _read_idx(path: Path, mtime_ns: int, size: int) -> np.ndarray:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 8:
        raise ValueError(f"{path}: not an IDX file ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in _MAGIC:
        raise ValueError(f"{path}: IDX magic number must be 2049 (labels) or 2051 (images), got {magic}")
    ndim = _MAGIC[magic]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} ({int(np.prod(shape))} bytes), file has {data.size}")
    data = data.reshape(shape)
    data.setflags(write=False)  # shared by every caller: nobody may change the cached copy
    return data


def pad_to(images: np.ndarray, size: int = SIZE, source: str = "images") -> np.ndarray:
    """``[N, H, W]`` uint8 -> ``[N, size, size]``, centred on a black (0) border; H, W must be at most ``size``."""
    if images.ndim != 3:
        raise ValueError(f"{source}: images must be [N, H, W], got shape {images.shape}")
    h, w = images.shape[1:]
    if h > size or w > size:
        raise ValueError(f"{source}: images must be at most {size}x{size} (Fashion-MNIST: 28x28), got {h}x{w}")
    top, left = (size - h) // 2, (size - w) // 2
    return np.pad(images, ((0, 0), (top, size - h - top), (left, size - w - left)))


def load_split(folder: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images [N, 32, 32] uint8, labels [N] int64)`` of ``split`` in {"train", "val", "test"}."""
    check_choice("split", split, ("train", "val", "test"))
    part = "test" if split == "test" else "train"
    images = read_idx(find_file(folder, FILES[part, "images"]))
    labels = read_idx(find_file(folder, FILES[part, "labels"])).astype(np.int64)
    source = str(find_file(folder, FILES[part, "images"]))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{source}: {images.shape} images for {labels.shape} labels (expected [N, H, W] and [N])")
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{source}: Fashion-MNIST images must be 28x28, got {images.shape[1]}x{images.shape[2]}")
    if labels.size and labels.max() >= len(CLASSES):
        raise ValueError(f"{source}: labels must lie in [0, {len(CLASSES)}), got max {labels.max()}")
    if split != "test":
        cut = int(round(0.9 * len(images)))
        keep = slice(0, cut) if split == "train" else slice(cut, None)
        images, labels = images[keep], labels[keep]
    return pad_to(images, SIZE, source), labels

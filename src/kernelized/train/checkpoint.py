"""Atomic files and random-number-generator states: what exact resume needs."""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch


def _atomic_write(path: Path, write) -> None:
    """Write through ``write(file_object)`` to a temporary file in the same folder, then os.replace it.

    A reader (or a run killed mid-write) sees the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_atomic(obj, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    _atomic_write(Path(path), lambda f: torch.save(obj, f))


def write_json_atomic(obj, path: str | Path) -> None:
    """JSON (indented, keys in insertion order) to ``path`` atomically."""
    _atomic_write(Path(path), lambda f: f.write((json.dumps(obj, indent=2, default=_json_default) + "\n").encode()))


def write_text_atomic(text: str, path: str | Path) -> None:
    """UTF-8 text to ``path`` atomically."""
    _atomic_write(Path(path), lambda f: f.write(text.encode()))


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: its path and how to start that run over are in the message."""


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint written by :func:`save_atomic` onto the CPU (tensors are moved by their owners).

    A corrupt or truncated file (a disk filled up, a copy cut short: :func:`save_atomic` itself never leaves
    half a file) raises :class:`CheckpointError` naming the file and how to start that run over, instead of
    torch's ``OSError: [Errno 22]`` or ``UnpicklingError`` without a path.
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as e:  # zip, pickle, EOF and OS errors all mean: this file is unusable
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {e}); delete it to start that run "
            f"over from step 0 (or delete its folder {path.parent} to start the run anew)"
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a checkpoint; delete it")
    return ckpt


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def rng_state() -> dict:
    """The states of python's, numpy's and torch's (CPU and CUDA) global generators."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)

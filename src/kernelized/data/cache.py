"""The data cache: one folder for every generated or downloaded data set, never the working directory.

``$KERNELIZED_DATA`` when set, else ``~/.cache/kernelized/data``. Experiments put generated ListOps and
Pathfinder splits, tokenized corpora and Hugging Face downloads (:func:`hub_cache`) under it, each in a
subfolder keyed by the settings that made it, so two runs with the same data settings share one copy whatever
their ``--out``.
"""

from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path:
    """``$KERNELIZED_DATA`` or ``~/.cache/kernelized/data`` (not created here)."""
    env = os.environ.get("KERNELIZED_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kernelized" / "data"


def cache_path(*parts: str) -> Path:
    """A path inside the data cache, e.g. ``cache_path("lra", "listops-3fa2")``."""
    return data_root().joinpath(*parts)


def hub_cache() -> str:
    """Where Hugging Face downloads (``datasets``, ``huggingface_hub``) go: ``<data cache>/hub``."""
    return str(cache_path("hub"))

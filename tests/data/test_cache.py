"""The data cache: $KERNELIZED_DATA or ~/.cache/kernelized/data, for generated data and every download."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernelized.data import cache, lra


def test_data_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("KERNELIZED_DATA", raising=False)
    assert cache.data_root() == Path.home() / ".cache" / "kernelized" / "data"
    monkeypatch.setenv("KERNELIZED_DATA", str(tmp_path / "d"))
    assert cache.cache_path("lra", "x") == tmp_path / "d" / "lra" / "x"
    assert cache.hub_cache() == str(tmp_path / "d" / "hub")


def test_hub_downloads_go_to_the_data_cache(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    seen = {}
    monkeypatch.setenv("KERNELIZED_DATA", str(tmp_path))
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: seen.update(k) or "loaded")
    assert lra._load_hf("imdb", "train") == "loaded"
    assert seen["cache_dir"] == str(tmp_path / "hub")

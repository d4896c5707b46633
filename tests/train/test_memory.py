"""Per-run peak RSS: a reset forgets an earlier, larger peak (what a sweep worker running several runs needs)."""

from __future__ import annotations

import pytest
import torch

from kernelized.train.memory import peak_rss_mb, reset_peak_rss


def test_reset_forgets_an_earlier_peak():
    if not reset_peak_rss():
        pytest.skip("no /proc/self/clear_refs on this platform")
    big = torch.ones(64 * 2**20)  # 256 MiB, touched
    with_big = peak_rss_mb()
    del big
    reset_peak_rss()
    after = peak_rss_mb()
    assert with_big - after > 200  # MiB: the 256 MiB buffer no longer counts

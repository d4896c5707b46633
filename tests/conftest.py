"""Shared test helpers: seeding, a relative-RMS comparison (fla's assert_close), NaN-poisoned allocations."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def assert_close(name: str, ref: torch.Tensor, out: torch.Tensor, ratio: float = 1e-5, atol: float = 1e-9) -> None:
    """Pass if max |ref - out| <= atol, else if RMS(ref - out) / RMS(ref) < ratio; never with NaN/Inf."""
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{name}: non-finite values"
    diff = (ref.double() - out.double()).abs()
    if diff.max() <= atol:
        return
    rel = diff.pow(2).mean().sqrt() / ref.double().pow(2).mean().sqrt().clamp_min(1e-30)
    assert rel < ratio, f"{name}: relative RMS error {rel:.3e} >= {ratio:.1e} (max abs diff {diff.max():.3e})"


def prefill_then_decode(layer, x: torch.Tensor, prefill: int) -> torch.Tensor:
    """``layer``'s outputs over ``x [B, T, d]``: one call on the first ``prefill`` tokens that returns its state, then
    one call per remaining token from that state (as generation runs a mixer)."""
    y, state = layer(x[:, :prefill], output_state=True)
    parts = [y]
    for t in range(prefill, x.shape[1]):
        y, state = layer(x[:, t : t + 1], state=state, output_state=True)
        parts.append(y)
    return torch.cat(parts, 1)


@pytest.fixture
def one_thread():
    """Tiny models and draws run faster on one torch thread: intra-op threads only contend, badly so on a loaded
    machine. Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def nan_poison(monkeypatch):
    """Uninitialised allocations come back NaN, so an op that leaves part of its output unwritten fails."""
    for name in ("empty", "empty_like"):
        real = getattr(torch, name)

        def poisoned(*args, _real=real, **kwargs):
            return _real(*args, **kwargs).fill_(float("nan"))

        monkeypatch.setattr(torch, name, poisoned)
    real_new_empty = torch.Tensor.new_empty
    monkeypatch.setattr(
        torch.Tensor, "new_empty", lambda self, *a, **k: real_new_empty(self, *a, **k).fill_(float("nan"))
    )
    yield

"""The benchmark harness: it measures what it says (memory, FLOPs, ratios) and writes its reports.

No timing assertions: timings depend on the machine; these tests check the machinery on tiny shapes.
"""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from kernelized.experiments import bench


def test_smoke_run_writes_json_markdown_and_plots(tmp_path):
    argv = ["--preset", "smoke", "--out", str(tmp_path), "--sections", "kernels,decode"]
    argv += ["--cases", "SDPA,rebased chunk,rebased polynomial", "--lengths", "32,64"]
    assert bench.main(argv) == 0
    result = json.loads((tmp_path / "smoke.json").read_text())
    rows = result["kernels"]
    expected = {"softmax (SDPA)", "rebased chunk", "rebased polynomial"}
    if result["environment"]["cpu_kernels"]:  # the chunk form without the compiled kernels, side by side
        expected.add("rebased chunk (PyTorch path)")
    assert {r["case"] for r in rows} == expected
    assert {(r["T"], r["mode"]) for r in rows} == {(t, m) for t in (32, 64) for m in ("fwd", "fwd+bwd")}
    for r in rows:
        assert r["seconds"] > 0 and r["timed_calls"] >= 1
        assert r["fraction_of_matmul"] == pytest.approx(r["flops"] / r["seconds"] / result["matmul_rate"])
    # the backward pass is counted as twice the forward
    fwd = {(r["case"], r["T"]): r["flops"] for r in rows if r["mode"] == "fwd"}
    for r in rows:
        if r["mode"] == "fwd+bwd":
            assert r["flops"] == pytest.approx(3 * fwd[(r["case"], r["T"])])
    decode = result["decode"]
    assert {r["case"] for r in decode} == {"rebased recurrent step", "softmax KV-cache step"}
    # the recurrent state does not grow with the context; the KV cache does, linearly
    state = {r["context"]: r["state_mb"] for r in decode if r["case"] == "rebased recurrent step"}
    cache = {r["context"]: r["state_mb"] for r in decode if r["case"] == "softmax KV-cache step"}
    assert state[64] == state[128] and cache[128] == pytest.approx(2 * cache[64])
    md = (tmp_path / "smoke.md").read_text()
    assert "| rebased chunk |" in md and "decode" in md and "matmul rate" in md
    assert (tmp_path / "smoke_kernels.png").stat().st_size > 0 and (tmp_path / "smoke_decode.png").exists()


def test_memory_probes_run_after_every_timing(tmp_path, monkeypatch):
    """The in-process memory probe changes glibc's mmap threshold: it must not run before any timed call."""
    events = []
    real_timed, real_peak = bench.timed, bench.peak_memory_mb

    def timed(*a, **k):
        events.append("time")
        return real_timed(*a, **k)

    def peak(fn, device):
        events.append("memory")
        return real_peak(fn, device)

    monkeypatch.setattr(bench, "timed", timed)
    monkeypatch.setattr(bench, "peak_memory_mb", peak)
    argv = ["--preset", "smoke", "--out", str(tmp_path), "--sections", "kernels,decode,models"]
    assert bench.main(argv + ["--cases", "SDPA,rebased chunk", "--lengths", "32,64"]) == 0
    result = json.loads((tmp_path / "smoke.json").read_text())
    measured = [r for r in result["kernels"] if "seconds" in r] + result["models"]
    assert events.count("memory") == len(measured) > 0
    assert "time" not in events[events.index("memory") :]
    if os.path.exists("/proc/self/clear_refs"):  # every timed cell got its memory number
        assert all(r["peak_mb"] is not None for r in measured)


def test_flop_counts_scale_as_the_forms_do():
    B, H, F, dv, C = 1, 8, 136, 64, 64
    for T in (1024, 4096):
        assert bench.flops_chunk(B, H, 2 * T, F, dv, C) == pytest.approx(2 * bench.flops_chunk(B, H, T, F, dv, C))
        assert bench.flops_quadratic(B, H, 2 * T, 16, dv) == pytest.approx(4 * bench.flops_quadratic(B, H, T, 16, dv))
    # one token, one head: read + update a [F, Dv+1] state = 2 * 2 * F * (Dv+1) FLOPs
    assert bench.flops_recurrent(1, 1, 1, F, dv) == 4 * F * (dv + 1)
    # causal attention counts half the square; bidirectional all of it
    assert bench.flops_quadratic(1, 1, 10, 3, 5, causal=False) == 2 * 100 * 8
    assert bench.flops_quadratic(1, 1, 10, 3, 5) == 100 * 8


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_peak_memory_sees_torch_allocations_above_the_baseline():
    def allocate():
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, freed on return
        return x.sum()

    mb = bench.peak_memory_mb(allocate, "cpu")
    assert 60 <= mb <= 96
    assert bench.peak_memory_mb(lambda: None, "cpu") < 8


def test_targets_are_ratios_of_the_same_run():
    def row(case, T, s, mode="fwd+bwd", mb=None):
        return dict(case=case, T=T, mode=mode, seconds=s, flop_floor_s=0.1, peak_mb=mb)

    rows = [
        row("rebased chunk", 2048, 0.05, mb=0.01),  # in-process peaks read low where pages were already resident
        row("rebased chunk", 4096, 0.1, mb=50.0),
        row("rebased chunk", 8192, 0.2, mb=100.0),
        row("softmax (SDPA)", 8192, 2.0),
        row("fla naive_chunk_linear_attn (rebased features)", 8192, 1.0),
    ]
    decode = [dict(case="rebased recurrent step", context=1024, seconds=1e-3),
              dict(case="rebased recurrent step", context=32768, seconds=1.05e-3)]  # fmt: skip
    t = bench.targets(rows, decode)
    assert t["sdpa_over_rebased_chunk"] == pytest.approx(10.0)
    assert t["fla_naive_chunk_over_rebased_chunk"] == pytest.approx(5.0)
    assert t["rebased_chunk_over_flop_floor"] == pytest.approx(2.0)
    assert t["memory_loglog_slope"] == pytest.approx(1.0)
    assert t["decode_32k_over_1k"] == pytest.approx(1.05)
    assert math.isfinite(t["rebased_chunk_fwd_bwd_s"])
    fresh = [dict(T=T, peak_mb=T / 50) for T in (1024, 2048, 4096)]  # fresh processes: every length counts
    assert bench.targets(rows, decode, memory_rows=fresh)["memory_loglog_slope"] == pytest.approx(1.0)
    fresh[0]["peak_mb"] = 1024 / 200
    assert bench.targets(rows, decode, memory_rows=fresh)["memory_loglog_slope"] == pytest.approx(2.0)


def test_timed_reports_a_single_call_over_budget():
    calls = []
    seconds, n = bench.timed(lambda: calls.append(1), "cpu", warmup=1, repeats=3, budget_s=-1.0)
    assert n == 1 and len(calls) == 1 and seconds >= 0
    seconds, n = bench.timed(lambda: calls.append(1), "cpu", warmup=1, repeats=3, budget_s=10.0)
    assert n == 3 and len(calls) == 5


def test_bad_arguments_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="--preset"):
        bench.main(["--preset", "nope", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--sections"):
        bench.main(["--preset", "smoke", "--sections", "kernels,speed", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--lengths"):
        bench.main(["--preset", "smoke", "--lengths", "1k", "--out", str(tmp_path)])


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_fresh_process_memory_grows_with_the_length():
    p = bench.PRESETS["smoke"]
    small, large = (bench.fresh_process_peak_mb(p, T) for T in (512, 8192))
    assert small is not None and large is not None
    assert large > 4 * small and large > 1.0  # 16x the tokens: the chunk form's memory grows with T

"""The benchmark harness: it measures what it says (memory, FLOPs, ratios) and writes its reports.

No timing assertions: timings depend on the machine; these tests check the machinery on tiny shapes.
"""

from __future__ import annotations

import json
import math
import os
import re

import pytest
import torch

from kernelized import cli
from kernelized.experiments import bench
from kernelized.experiments.bench import flops, measure, report
from kernelized.experiments.framework.presets import available_presets


def test_smoke_preset_runs_every_section_and_probes_memory_after_every_timing(tmp_path, monkeypatch):
    """Every section in one run; the in-process memory probe changes glibc's mmap threshold, so it must not run
    before any timed call."""
    events = []
    real_timed, real_peak = measure.timed, measure.peak_memory_mb
    monkeypatch.setattr(measure, "timed", lambda *a, **k: events.append("time") or real_timed(*a, **k))
    monkeypatch.setattr(measure, "peak_memory_mb", lambda fn, device: events.append("memory") or real_peak(fn, device))
    argv = ["--preset", "smoke", "--out", str(tmp_path), "--cases", "SDPA,rebased chunk,rebased polynomial"]
    assert bench.main(argv + ["--lengths", "32,64"]) == 0
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
    assert [r["T"] for r in result["memory"]] == [32, 64]
    assert {(r["model"], r["mixer"]) for r in result["models"]} >= {("mqar", "softmax"), ("lm", "rebased chunk")}
    generated = {(r["case"], r["prompt"]) for r in result["generate"]}
    assert generated == {("HF generate, KernelizedCache", 8), ("HF generate, KernelizedCache", 16),
                         ("kernelized.models.generate", 8), ("kernelized.models.generate", 16),
                         ("HF generate, no cache", 8)}  # fmt: skip
    md = (tmp_path / "smoke.md").read_text()
    assert "| rebased chunk |" in md and "decode" in md and "matmul rate" in md and "## models" in md
    assert "## generate: ms per new token" in md
    assert "one fresh process per T" in md
    assert (tmp_path / "smoke_kernels.png").stat().st_size > 0 and (tmp_path / "smoke_decode.png").exists()
    measured = [r for r in rows if "seconds" in r] + result["models"]
    assert events.count("memory") == len(measured) > 0
    assert "time" not in events[events.index("memory") :]
    if os.path.exists("/proc/self/clear_refs"):  # every timed cell got its memory number
        assert all(r["peak_mb"] is not None for r in measured)


def test_presets_load_and_set_changes_the_run(tmp_path):
    assert set(available_presets("bench")) >= {"cpu", "gpu", "smoke"}
    for name in ("cpu", "smoke"):
        assert bench.load_config(name, [])["lengths"]
    assert bench.load_config("cpu", []) == bench.defaults_of(bench.BenchConfig)  # the schema's defaults are `cpu`
    config = bench.load_config("smoke", ["repeats=3", "models.steps=2"], lengths="48")
    assert (config["repeats"], config["models"]["steps"], config["lengths"]) == (3, 2, [48])
    argv = ["--preset", "smoke", "--out", str(tmp_path), "--sections", "kernels", "--cases", "SDPA"]
    assert bench.main(argv + ["--lengths", "32", "--set", "repeats=3", "--set", "models.steps=2"]) == 0
    result = json.loads((tmp_path / "smoke.json").read_text())
    assert result["preset"]["repeats"] == 3 and result["preset"]["models"]["steps"] == 2
    assert {r["timed_calls"] for r in result["kernels"]} == {3}  # the smoke preset's own repeats are 2
    assert "--set repeats=3" in result["command"]


def test_unknown_set_key_names_the_key_and_the_valid_keys_of_its_section(tmp_path, capsys):
    assert bench.main(["--preset", "smoke", "--out", str(tmp_path), "--set", "models.stepz=2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'models.stepz'" in err and "valid keys of 'models'" in err
    assert "'steps'" in err and "'mqar_len'" in err
    assert bench.main(["--preset", "smoke", "--out", str(tmp_path), "--set", "repeats=three"]) == 2
    assert "repeats" in capsys.readouterr().err
    assert bench.main(["--preset", "smoke", "--out", str(tmp_path), "--set", "max_len.quadratic=-1"]) == 2
    assert "max_len.quadratic" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing measured, nothing written


def test_unknown_cases_fail_naming_them_and_listing_the_cases(tmp_path, capsys):
    argv = ["--preset", "smoke", "--out", str(tmp_path), "--cases", "SDPA,nosuch,rebased chunk"]
    assert bench.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --cases") and "['nosuch']" in err
    assert "'softmax (SDPA)'" in err and "'taylor polynomial'" in err


def test_bad_arguments_name_the_argument(tmp_path, capsys):
    for argv, name in (
        (["--preset", "nope"], "--preset"),
        (["--preset", "smoke", "--sections", "kernels,speed"], "--sections"),
        (["--preset", "smoke", "--lengths", "1k"], "--lengths"),
    ):
        assert bench.main(argv + ["--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and name in err
    assert cli.main(["bench", "--preset", "nope"]) == 2  # `kernelized bench` reaches the same main
    assert "available: ['cpu', 'gpu', 'smoke']" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_gpu_preset_without_cuda_is_an_error(tmp_path, capsys):
    assert bench.main(["--preset", "gpu", "--out", str(tmp_path)]) == 2
    assert "CUDA" in capsys.readouterr().err


def test_default_out_is_runs_bench_and_the_output_says_how_to_publish(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert bench.main(["--preset", "smoke", "--sections", "decode", "--set", "decode_lengths=[16]"]) == 0
    assert (tmp_path / "runs" / "bench" / "smoke.json").is_file()
    assert (tmp_path / "runs" / "bench" / "smoke.md").is_file()
    assert not (tmp_path / "docs").exists()
    out = capsys.readouterr().out
    assert "runs/bench/smoke.json" in out and "--out docs/bench" in out


def test_flop_counts_scale_as_the_forms_do():
    B, H, F, dv, C = 1, 8, 136, 64, 64
    for T in (1024, 4096):
        assert flops.flops_chunk(B, H, 2 * T, F, dv, C) == pytest.approx(2 * flops.flops_chunk(B, H, T, F, dv, C))
        assert flops.flops_quadratic(B, H, 2 * T, 16, dv) == pytest.approx(4 * flops.flops_quadratic(B, H, T, 16, dv))
    # one token, one head: read + update a [F, Dv+1] state = 2 * 2 * F * (Dv+1) FLOPs
    assert flops.flops_recurrent(1, 1, 1, F, dv) == 4 * F * (dv + 1)
    # causal attention counts half the square; bidirectional all of it
    assert flops.flops_quadratic(1, 1, 10, 3, 5, causal=False) == 2 * 100 * 8
    assert flops.flops_quadratic(1, 1, 10, 3, 5) == 100 * 8
    # a KV-cache decode step: q k^T and A v over L cached tokens
    assert flops.flops_kv_step(1, 1, 10, 4) == 2 * 10 * 2 * 4


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_peak_memory_sees_torch_allocations_above_the_baseline():
    def allocate():
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, freed on return
        return x.sum()

    mb = measure.peak_memory_mb(allocate, "cpu")
    assert 60 <= mb <= 96
    assert measure.peak_memory_mb(lambda: None, "cpu") < 8


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
    t = report.targets(rows, decode)
    assert t["sdpa_over_rebased_chunk"] == pytest.approx(10.0)
    assert t["fla_naive_chunk_over_rebased_chunk"] == pytest.approx(5.0)
    assert t["rebased_chunk_over_flop_floor"] == pytest.approx(2.0)
    assert t["memory_loglog_slope"] == pytest.approx(1.0)
    assert t["decode_32k_over_1k"] == pytest.approx(1.05)
    assert math.isfinite(t["rebased_chunk_fwd_bwd_s"])
    fresh = [dict(T=T, peak_mb=T / 50) for T in (1024, 2048, 4096)]  # fresh processes: every length counts
    assert report.targets(rows, decode, memory_rows=fresh)["memory_loglog_slope"] == pytest.approx(1.0)
    fresh[0]["peak_mb"] = 1024 / 200
    assert report.targets(rows, decode, memory_rows=fresh)["memory_loglog_slope"] == pytest.approx(2.0)


def test_timed_reports_a_single_call_over_budget():
    calls = []
    seconds, n = measure.timed(lambda: calls.append(1), "cpu", warmup=1, repeats=3, budget_s=-1.0)
    assert n == 1 and len(calls) == 1 and seconds >= 0
    seconds, n = measure.timed(lambda: calls.append(1), "cpu", warmup=1, repeats=3, budget_s=10.0)
    assert n == 3 and len(calls) == 5


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_fresh_process_memory_grows_with_the_length():
    p = bench.load_config("smoke", [])
    small, large = (measure.fresh_process_peak_mb(p, T) for T in (512, 8192))
    assert small is not None and large is not None
    assert large > 4 * small and large > 1.0  # 16x the tokens: the chunk form's memory grows with T


def test_the_common_experiment_options(tmp_path, capsys):
    """--kernels, --seeds, --dry-run and --report-only as every experiment takes them; --workers and --launcher
    only with the values that keep the timings side by side in one process."""
    out = tmp_path / "b"
    assert bench.main(["--preset", "smoke", "--out", str(out), "--kernels", "rebased,softmax", "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert "'rebased chunk'" in listed and "'softmax (SDPA)'" in listed and "taylor" not in listed and not out.exists()
    for argv, message in ((["--workers", "2"], "--workers and --launcher"), (["--launcher", "ray"], "side by side"),
                          (["--seeds", "0,1"], "--seeds: the bench draws one set of inputs"),
                          (["--kernels", "nope"], r"--kernels: no bench case for \['nope'\]"),
                          (["--report-only"], "--report-only: .* does not exist")):  # fmt: skip
        assert bench.main(["--preset", "smoke", "--out", str(out), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and re.search(message, err), err
    argv = ["--preset", "smoke", "--out", str(out), "--sections", "decode", "--seeds", "3"]
    assert bench.main(argv) == 0
    result = json.loads((out / "smoke.json").read_text())
    assert result["preset"]["seed"] == 3
    (out / "smoke.md").unlink()
    assert bench.main(["--preset", "smoke", "--out", str(out), "--report-only"]) == 0
    assert (out / "smoke.md").read_text() == report.markdown(result)


def test_the_cost_of_float32_monomials_for_bf16_inputs_is_a_bench_case():
    from kernelized.experiments.bench import load_config
    from kernelized.experiments.bench.cases import build_cases

    cases = {c.name: c for c in build_cases(load_config("smoke", []))}
    fp32, bf16 = cases["rebased features (fp32 in)"], cases["rebased features (bf16 in, fp32 monomials)"]
    fn, (x,) = bf16.make(8)
    assert x.dtype == torch.bfloat16 and fn(x).dtype == torch.float32  # the degree-2 features are float32
    fn, (x,) = fp32.make(8)
    assert x.dtype == torch.float32 and fn(x).dtype == torch.float32

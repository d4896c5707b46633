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

from kernelized import cli, kernels
from kernelized.experiments import bench
from kernelized.experiments.bench import cases, flops, measure, report
from kernelized.experiments.framework.presets import available_presets


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """``--threads 1`` (tiny models on a loaded 2-core machine: 2 threads make a step ~40x slower) is undone."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_smoke_preset_runs_every_section_and_probes_memory_after_every_timing(tmp_path, monkeypatch):
    """Every section in one run; the in-process memory probe changes glibc's mmap threshold, so it must not run
    before any timed call."""
    monkeypatch.setattr(cases, "model_mixers", lambda: ["softmax", "rebased"])  # every mixer: the models tests
    events = []
    real_timed, real_peak = measure.timed, measure.peak_memory_mb
    monkeypatch.setattr(measure, "timed", lambda *a, **k: events.append("time") or real_timed(*a, **k))
    monkeypatch.setattr(measure, "peak_memory_mb", lambda fn, device: events.append("memory") or real_peak(fn, device))
    argv = ["--preset", "smoke", "--out", str(tmp_path), "--cases", "SDPA,rebased chunk,rebased polynomial"]
    assert bench.main(argv + ["--lengths", "32,64", "--threads", "1"]) == 0
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
    assert {(r["model"], r["mixer"]) for r in result["models"]} == {(m, x) for m in ("mqar", "lra", "lm")
                                                                    for x in ("softmax", "rebased")}  # fmt: skip
    enc = result["encoder"]  # smoke: elu, gmm-rks, rebased at B 2, T 32, 2 heads of 4; the op's PyTorch path for elu
    assert {(r["kernel"], r["mode"]) for r in enc} == {(k, m) for k in ("elu", "gmm-rks", "rebased")
                                                       for m in ("forward", "forward+backward")}  # fmt: skip
    for r in enc:
        floor = 4 * 2 * 2 * 32 * r["F"] * (4 + 1) / result["matmul_rate"]
        assert r["floor_s"] == pytest.approx(floor * (3 if r["mode"] == "forward+backward" else 1))
        assert r["features_s"] > 0 and r["op_s"] > 0
        moved = (
            4
            * 2
            * 32
            * 2
            * ((2 * r["F"] + 8) + ((2 * r["F"] + 8) + (2 * r["F"] + 16) if r["mode"] != "forward" else 0))
        )
        assert r["memory_floor_s"] == pytest.approx(moved / r["copy_bandwidth"])
        assert (r["op_reference_s"] is not None) == (r["kernel"] == "elu")
    assert {r["kernel"]: r["F"] for r in enc} == {"elu": 4, "gmm-rks": 2 * 4 * 2 + 1, "rebased": 10}
    generated = {(r["case"], r["prompt"]) for r in result["generate"]}
    assert generated == {("HF generate, KernelizedCache", 8), ("HF generate, KernelizedCache", 16),
                         ("kernelized.models.generate", 8), ("kernelized.models.generate", 16),
                         ("HF generate, no cache", 8)}  # fmt: skip
    md = (tmp_path / "smoke.md").read_text()
    assert "| rebased chunk |" in md and "decode" in md and "matmul rate" in md and "## models" in md
    assert "## generate: ms per new token" in md and "## encoder: feature maps and the bidirectional op" in md
    assert "one fresh process per T" in md
    assert (tmp_path / "smoke_kernels.png").stat().st_size > 0 and (tmp_path / "smoke_decode.png").exists()
    measured = [r for r in rows if "seconds" in r] + result["models"]
    assert events.count("memory") == len(measured) > 0
    assert "time" not in events[events.index("memory") :]
    if os.path.exists("/proc/self/clear_refs"):  # every timed cell got its memory number
        assert all(r["peak_mb"] is not None for r in measured)


@pytest.fixture(scope="module")
def smoke_models(tmp_path_factory):
    """One run of the smoke preset's models section: its result, its markdown and its output folder."""
    out, threads = tmp_path_factory.mktemp("models"), torch.get_num_threads()
    try:
        assert bench.main(["--preset", "smoke", "--sections", "models", "--out", str(out), "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    return json.loads((out / "smoke.json").read_text()), (out / "smoke.md").read_text(), out


def test_models_section_trains_each_experiments_model_with_every_mixer_at_its_own_and_longer_lengths(smoke_models):
    result, md, out = smoke_models
    rows = result["models"]
    # the smoke overrides give each experiment's model T = 16; length_factors [1, 2] add T = 32
    own = {"mqar": 16, "lra": 16, "lm": 16}
    mixers = ["softmax", *kernels.available()]
    assert len(mixers) > 10 and [r["mixer"] for r in rows if r["model"] == "lra" and r["T"] == 16] == mixers
    expected = {(m, x, t * f) for m, t in own.items() for x in mixers for f in (1, 2)}
    assert {(r["model"], r["mixer"], r["T"]) for r in rows} == expected and len(rows) == len(expected)
    for r in rows:
        assert "error" not in r and "skipped" not in r, r
        assert r["batch"] == max(1, 32 // r["T"]) and r["params"] > 0 and r["step_s"] > 0
        assert r["tokens_per_s"] == pytest.approx(r["batch"] * r["T"] / r["step_s"]) and r["tokens_per_s"] > 0
        assert r["form"] == (None if r["mixer"] == "softmax" else cases.MODEL_MODE)
        if os.path.exists("/proc/self/clear_refs"):
            assert r["peak_mb"] is not None
    # learned positions (MQAR, LM) grow with T; the LRA classifier's sinusoidal ones do not
    params = {(r["model"], r["mixer"], r["T"]): r["params"] for r in rows}
    assert params[("mqar", "softmax", 32)] > params[("mqar", "softmax", 16)]
    assert params[("lra", "softmax", 32)] == params[("lra", "softmax", 16)]
    assert (out / "smoke_models.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for model in own:
        assert f"### {model}: tokens/s" in md and f"### {model}: peak memory of a training step (MiB)" in md
    assert "| T=16 (batch 2) | T=32 (batch 1) |" in md


def test_models_ratio_is_tokens_per_second_over_softmax_at_the_same_model_and_length(smoke_models):
    result, md, _ = smoke_models
    rows = result["models"]
    soft = {(r["model"], r["T"]): r["tokens_per_s"] for r in rows if r["mixer"] == "softmax"}
    assert len(soft) == 6
    for r in rows:
        assert r["vs_softmax"] == pytest.approx(r["tokens_per_s"] / soft[(r["model"], r["T"])])
    r = next(r for r in rows if r["model"] == "lm" and r["mixer"] == "rebased" and r["T"] == 32)
    assert f"{r['tokens_per_s']:.0f} ({r['vs_softmax']:.2f}x)" in md.split("### lm: tokens/s")[1]


def test_a_mixer_over_budget_or_failing_stops_growing_T_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cases, "model_mixers", lambda: ["softmax", "nosuch", "rebased"])
    argv = ["--preset", "smoke", "--sections", "models", "--out", str(tmp_path), "--threads", "1"]
    assert bench.main(argv + ["--set", "models.budget_s=1e-9", "--set", "models.length_factors=[1,2,4]"]) == 0
    assert "note: models mqar, nosuch, T=16: ValueError" in capsys.readouterr().err
    result = json.loads((tmp_path / "smoke.json").read_text())
    for model in ("mqar", "lra", "lm"):
        rows = {(r["mixer"], r["T"]): r for r in result["models"] if r["model"] == model}
        assert set(rows) == {(x, t) for x in ("softmax", "nosuch", "rebased") for t in (16, 32, 64)}
        for mixer in ("softmax", "rebased"):  # every step is over a 1 ns budget: measured once, then stopped
            assert rows[(mixer, 16)]["timed_calls"] == 1 and rows[(mixer, 16)]["tokens_per_s"] > 0
            for t in (32, 64):
                assert "tokens_per_s" not in rows[(mixer, t)] and "> budget 1e-09 s" in rows[(mixer, t)]["skipped"]
        assert "'nosuch'" in rows[("nosuch", 16)]["error"] and "tokens_per_s" not in rows[("nosuch", 16)]
        assert rows[("nosuch", 32)]["skipped"] == rows[("nosuch", 64)]["skipped"] == "failed at T=16"
    md = (tmp_path / "smoke.md").read_text()
    assert "| nosuch | - | failed | skipped | skipped |" in md and "- lra, nosuch, T=16: ValueError" in md
    assert "| rebased | " in md and "| skipped | skipped |" in md


def test_models_presets_and_overrides_are_checked_before_any_timing(tmp_path, capsys):
    for setting, names in (("models.lm.preset=nope", ("models.lm", "'nope'", "ptb-cpu")),
                           ("models.mqar.set=[model.d_modle=3]", ("models.mqar", "'model.d_modle'", "d_model")),
                           ("models.budget_s=0", ("models.budget_s",))):  # fmt: skip
        argv = ["--preset", "smoke", "--sections", "models", "--out", str(tmp_path / "o"), "--set", setting]
        assert bench.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and all(n in err for n in names), err
    assert not (tmp_path / "o").exists()


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
    assert "'steps'" in err and "'length_factors'" in err
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

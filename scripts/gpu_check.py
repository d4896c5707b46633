"""`make gpu-check`: the GPU checks in one script of at most ~8 minutes on a lent H100/H200.

    make gpu-wheels                       # here (package registries reachable): fla-core into .whl/ for the GPU
    # on the GPU machine (device tool: carry [".whl"]), with its own CUDA PyTorch, not this project's .venv:
    OUT=/some/dir make gpu-check          # = python3 scripts/gpu_check.py --out $OUT

Steps, each with its own time limit, every one run even if an earlier one failed:

1. the environment: torch, CUDA, the device, Triton, fla (``env`` in the JSON);
2. the CUDA tests, ``tests/gpu/test_cuda.py``: every kernel in every form against float64 on the CPU, the Triton
   kernels against the PyTorch path on the GPU (fp32 and bf16, outputs, states, gradients, padding);
3. ``kernelized bench --preset gpu``: forward and forward+backward at T = 1k-16k in bf16 against fla's Triton
   kernels and SDPA, the decode step, and the MQAR / LM training steps' tokens/s.

Writes into ``--out`` (at most 8 files, as the device tool returns): ``gpu_check.json`` and ``gpu_check.md``
(summary, test counts and failures, each step's time and exit code), ``tests.xml`` (JUnit), ``log.txt`` (every
step's output), ``bench_gpu.md`` and ``bench_gpu.json``. Exit code 0 when every step passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV_PROBE = """
import json, torch
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
if torch.cuda.is_available():
    info["device"] = torch.cuda.get_device_name(0)
    info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
for name in ("triton", "fla"):
    try:
        info[name] = __import__(name).__version__
    except Exception as e:
        info[name] = f"missing ({type(e).__name__})"
print(json.dumps(info))
"""


def install_wheels(env: dict) -> str:
    """Wheels carried in ``.whl/`` go to a private site folder on PYTHONPATH (no index, no dependencies)."""
    wheels = sorted((ROOT / ".whl").glob("*.whl"))
    if not wheels:
        return "no .whl folder: fla is used only if the machine has it"
    site = Path("/tmp/kernelized-site")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--upgrade",
           "--target", str(site), *map(str, wheels)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    env["PYTHONPATH"] = f"{site}{os.pathsep}{env['PYTHONPATH']}"
    return f"installed {[w.name for w in wheels]}" if proc.returncode == 0 else f"pip failed: {proc.stderr[-500:]}"


def step(name: str, cmd: list[str], env: dict, timeout: int, log) -> dict:
    """Run one step, its output appended to the log; returns name, exit code (124 on timeout), seconds."""
    log.write(f"\n===== {name}: {' '.join(cmd)} (limit {timeout} s)\n")
    log.flush()
    start = time.perf_counter()
    try:
        rc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        rc = 124
    seconds = round(time.perf_counter() - start, 1)
    log.write(f"===== {name}: exit {rc} after {seconds} s\n")
    return {"name": name, "rc": rc, "seconds": seconds}


def test_counts(xml_path: Path) -> dict:
    """Passed / failed / errors / skipped / xfailed counts and the failing test ids, from the JUnit file."""
    if not xml_path.exists():
        return {"error": "no JUnit file (the test step did not finish)"}
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "xfailed": 0, "failures": []}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        tags = {child.tag: child for child in case}
        name = f"{case.get('classname')}::{case.get('name')}"
        if "failure" in tags or "error" in tags:
            counts["failed" if "failure" in tags else "errors"] += 1
            element = tags["failure"] if "failure" in tags else tags["error"]  # (an Element without children is falsy)
            message = element.get("message", "")
            counts["failures"].append(f"{name}: {message[:300]}")
        elif "skipped" in tags:
            counts["xfailed" if tags["skipped"].get("type") == "pytest.xfail" else "skipped"] += 1
        else:
            counts["passed"] += 1
    return counts


def markdown(report: dict) -> str:
    env, tests = report["env"], report["tests"]
    lines = ["# GPU check", "", f"Device: {env.get('device', 'none')} (capability {env.get('capability', '-')}); "
             f"torch {env.get('torch')}, CUDA {env.get('cuda')}, Triton {env.get('triton')}, fla {env.get('fla')}.",
             f"Wheels: {report['wheels']}.", "", "| step | exit | seconds |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {s['name']} | {s['rc']} | {s['seconds']} |" for s in report["steps"]]
    lines += ["", "Tests: " + ", ".join(f"{k} {v}" for k, v in tests.items() if k != "failures"), ""]
    lines += [f"- FAILED {f}" for f in tests.get("failures", [])]
    lines += ["", "Benchmark tables: `bench_gpu.md`." if report["bench"] else "No benchmark output (see log.txt)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "gpu-check"), help="output folder (default $OUT)")
    p.add_argument("--test-timeout", type=int, default=180)
    p.add_argument("--bench-timeout", type=int, default=270)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env["PYTHONUNBUFFERED"] = "1"
    report = {"wheels": install_wheels(env), "steps": []}
    probe = subprocess.run([sys.executable, "-c", ENV_PROBE], env=env, capture_output=True, text=True)
    report["env"] = json.loads(probe.stdout) if probe.returncode == 0 else {"error": probe.stderr[-500:]}
    bench_dir = Path("/tmp/kernelized-bench")
    with open(out / "log.txt", "w") as log:
        pytest = [sys.executable, "-m", "pytest", "tests/gpu", "-q", "-rfE", "-p", "no:cacheprovider",
                  f"--junitxml={out / 'tests.xml'}"]  # fmt: skip
        report["steps"].append(step("CUDA tests", pytest, env, args.test_timeout, log))
        bench = [sys.executable, "-m", "kernelized", "bench", "--preset", "gpu", "--out", str(bench_dir)]
        report["steps"].append(step("bench gpu", bench, env, args.bench_timeout, log))
    for suffix in ("md", "json"):
        if (bench_dir / f"gpu.{suffix}").exists():
            shutil.copyfile(bench_dir / f"gpu.{suffix}", out / f"bench_gpu.{suffix}")
    report["bench"] = (out / "bench_gpu.md").exists()
    report["tests"] = test_counts(out / "tests.xml")
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if all(s["rc"] == 0 for s in report["steps"]) else 1


if __name__ == "__main__":
    sys.exit(main())

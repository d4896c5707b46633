"""scripts/gpu_check.py (`make gpu-check`): without a GPU it still writes its summary, and it reads JUnit right."""

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_junit_counts_pass_fail_skip_and_xfail(tmp_path):
    xml = tmp_path / "t.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.gpu.test_cuda" name="a"/>'
        '<testcase classname="tests.gpu.test_cuda" name="b"><failure message="assert 0.9 &lt; 0.04"/></testcase>'
        '<testcase classname="tests.gpu.test_cuda" name="c"><skipped type="pytest.skip" message="needs CUDA"/>'
        '</testcase><testcase classname="tests.gpu.test_cuda" name="d"><skipped type="pytest.xfail" message="x"/>'
        "</testcase></testsuite></testsuites>"
    )
    counts = _module().test_counts(xml)
    assert {k: counts[k] for k in ("passed", "failed", "skipped", "xfailed")} == {
        "passed": 1, "failed": 1, "skipped": 1, "xfailed": 1
    }  # fmt: skip
    assert counts["failures"] == ["tests.gpu.test_cuda::b: assert 0.9 < 0.04"]


def test_without_a_gpu_every_step_runs_and_the_summary_says_what_happened(tmp_path, monkeypatch):
    module = _module()
    monkeypatch.setattr(sys, "executable", sys.executable)  # the interpreter running this suite (CPU torch)
    assert module.main(["--out", str(tmp_path), "--test-timeout", "120", "--bench-timeout", "120"]) == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["name"] for s in report["steps"]] == ["CUDA tests", "bench gpu"]
    assert report["steps"][0]["rc"] == 0 and report["steps"][1]["rc"] == 2  # tests skip; the GPU bench refuses
    assert report["tests"]["skipped"] > 100 and report["tests"]["failed"] == 0
    assert report["env"]["cuda_available"] is False and not report["bench"]
    assert "needs CUDA" in (tmp_path / "log.txt").read_text()
    assert "| bench gpu | 2 |" in (tmp_path / "gpu_check.md").read_text()

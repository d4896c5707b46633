"""A plain (non-editable) install has the presets: they ship inside the package, read with importlib.resources.

Before: presets were found as ``parents[3] / "configs"``, which only an editable install of a repository has.
The test installs the project from a copy of its sources into a fresh venv (no dependencies installed: the
venv sees this environment's packages, torch included, through a .pth file) and runs the MQAR demo preset
with a tiny budget from another directory.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _copy_sources(dest: Path) -> Path:
    """src/, pyproject.toml and README.md, so the build never writes into the working tree."""
    dest.mkdir()
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    return dest


def test_a_plain_install_runs_a_packaged_preset_from_another_directory(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                        text=True).strip())  # fmt: skip
    (site / "_outer_env.pth").write_text(sysconfig.get_path("purelib") + "\n")  # torch, numpy, pip, setuptools
    source = _copy_sources(tmp_path / "source")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", str(source)],
        check=True,
        timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.check_output(
        [python, "-c", "import kernelized; print(kernelized.__file__)"], text=True, cwd=elsewhere
    )
    assert Path(where.strip()).is_relative_to(site)  # the installed copy, not the repository's src/
    budget = ["task.num_train=32", "task.num_test=16", "train.epochs=1", "grid.seq_len=[32]", "grid.seed=[0]"]
    budget += ["grid.kernel=[based]", "workers=1"]
    cmd = [python, "-m", "kernelized", "mqar", "--preset", "demo", "--out", "out", "--no-progress"]
    for item in budget:
        cmd += ["--set", item]
    result = subprocess.run(cmd, cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "1 of 1 runs of this config finished" in (elsewhere / "out" / "report.md").read_text()
    assert (elsewhere / "out" / "figure.png").exists() and not (elsewhere / "configs").exists()

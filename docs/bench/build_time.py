"""How long the compiled CPU kernels take to build from nothing: ``kernelized.cpu``'s parallel build (one compiler
process per source, then one link) against one compiler call for all sources, each into a fresh cache.

    .venv/bin/python docs/bench/build_time.py > docs/bench/build_time.txt
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from kernelized import cpu


def main() -> None:
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    here = Path(cpu.__file__).parent
    with tempfile.TemporaryDirectory() as cache:
        os.environ["KERNELIZED_CACHE"] = cache
        t0 = time.perf_counter()
        cpu._build(compiler)
        parallel = time.perf_counter() - t0
        t0 = time.perf_counter()
        sources = [str(here / name) for name in cpu.SOURCES]
        subprocess.run([compiler, *cpu.FLAGS, *sources, "-o", str(Path(cache) / "one_call.so")], check=True)
        one_call = time.perf_counter() - t0
    print(f"parallel build: {parallel:.1f} s; one compiler call: {one_call:.1f} s ({os.cpu_count()} cores, {compiler})")


if __name__ == "__main__":
    main()

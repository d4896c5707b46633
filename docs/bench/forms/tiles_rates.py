"""Build and run ``tiles_rates.cpp`` (one thread; the register tiles of ``src/kernelized/cpu/tiles.h`` with the
library's compiler flags) on a CPU with AVX-512.

    .venv/bin/python docs/bench/forms/tiles_rates.py > docs/bench/forms/tiles_rates.txt
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from kernelized import cpu


def main() -> None:
    here = Path(__file__).parent
    source_dir = Path(cpu.__file__).parent
    compiler = shutil.which("g++") or shutil.which("c++")
    flags = [f for f in cpu.FLAGS if f not in ("-shared", "-fPIC", "-fopenmp")]
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "tiles_rates"
        subprocess.run([compiler, *flags, f"-I{source_dir}", str(here / "tiles_rates.cpp"), "-o", str(exe)], check=True)
        out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    print(out, end="")
    print(f"(one thread; {' '.join(flags)}; python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()

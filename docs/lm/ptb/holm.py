"""Holm-adjusted p-values of the paired t-tests in ptb/report.md (the LM report prints unadjusted ones), per metric.

    .venv/bin/python docs/lm/ptb/holm.py [metric]     # default test_ppl
"""

import sys
from pathlib import Path

from kernelized.eval.stats import holm

metric = sys.argv[1] if len(sys.argv) > 1 else "test_ppl"
rows = [line.split("|") for line in (Path(__file__).parent / "report.md").read_text().splitlines()
        if line.startswith(f"| {metric} |")]  # fmt: skip
for row, adjusted in zip(rows, holm([float(r[6]) for r in rows])):
    print(f"{row[2].strip():>8} vs {row[3].strip():<8} diff {row[5].strip():<28} p {row[6].strip():<9} Holm {adjusted:.3f}")

"""Metrics and analyses: statistics across seeds, attention maps, kernel error, AR-hit perplexity.

Import submodules directly (``kernelized.eval.stats``, ``.attention``, ``.kernel_error``, ``.perplexity``).
"""

from kernelized.eval.ar_hit import ar_hit_mask as ar_hit_mask

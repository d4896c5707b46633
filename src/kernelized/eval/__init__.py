"""Metrics and analyses: statistics across seeds, attention maps, kernel error, AR-hit perplexity. Import submodules directly."""

from kernelized.eval.ar_hit import ar_hit_mask as ar_hit_mask

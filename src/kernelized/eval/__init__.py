"""Metrics and analyses: statistics across seeds, attention maps, kernel error, AR-hit perplexity. Import submodules directly."""

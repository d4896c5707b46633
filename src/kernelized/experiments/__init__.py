"""One module per experiment (mqar, lra, lm, bench, ...), each with main(argv) for the CLI."""

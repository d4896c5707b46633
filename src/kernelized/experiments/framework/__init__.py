"""The experiment framework every command stands on, one module per job:

- :mod:`.presets`   presets and ``--set`` overrides (YAML, packaged configs, dotted keys, comma lists)
- :mod:`.schema`    typed configs: dataclasses per experiment, nested validation, type checks
- :mod:`.grid`      grid expansion and run identity (readable grid values + a hash of the whole config)
- :mod:`.sweep`     the sweep runner: skip finished runs, keep going past failures, results.csv
- :mod:`.launchers` where runs execute: local processes or Ray tasks
- :mod:`.reduce`    the papers' reduction (best lr, mean ± CI over seeds) and paired comparisons
- :mod:`.tables`    markdown tables, status sections, atomic figures
- :mod:`.cli`       the options every command takes, ``error: ...`` and exit 2 for user mistakes

An experiment module then reads, top to bottom: its config dataclasses, ``run_one(config, run_dir) -> dict``,
its report, and a ``main`` that goes preset -> runs -> sweep -> report.
"""

from kernelized.experiments.framework.grid import Run, config_hash, expand_grid, flatten, narrow
from kernelized.experiments.framework.presets import (
    available_presets,
    get_key,
    load_preset,
    load_yaml_text,
    parse_list,
    parse_overrides,
    read_yaml,
    set_key,
)
from kernelized.experiments.framework.reduce import comparisons, pairwise_comparisons, reduce_runs
from kernelized.experiments.framework.schema import ExperimentConfig, check_types, defaults_of, train_defaults
from kernelized.experiments.framework.sweep import collect, failed, finished, other_runs, run_sweep
from kernelized.experiments.framework.tables import (
    markdown_table,
    status_section,
    with_ci_column,
    write_figure,
    write_markdown_table,
)

__all__ = [
    "ExperimentConfig",
    "Run",
    "available_presets",
    "check_types",
    "collect",
    "comparisons",
    "config_hash",
    "defaults_of",
    "expand_grid",
    "failed",
    "finished",
    "flatten",
    "get_key",
    "load_preset",
    "load_yaml_text",
    "markdown_table",
    "narrow",
    "other_runs",
    "pairwise_comparisons",
    "parse_list",
    "parse_overrides",
    "read_yaml",
    "reduce_runs",
    "run_sweep",
    "set_key",
    "status_section",
    "train_defaults",
    "with_ci_column",
    "write_figure",
    "write_markdown_table",
]

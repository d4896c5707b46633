"""`kernelized <command> ...`: one entry point, one module per command.

Each command module exposes ``main(argv: list[str]) -> int``; modules are imported lazily so that
`kernelized --help` stays fast and a command's optional dependencies load only when it runs.
"""

from __future__ import annotations

import importlib
import sys

from kernelized._checks import command

COMMANDS: dict[str, tuple[str, str]] = {
    "mqar": (
        "kernelized.experiments.mqar",
        "multi-query associative recall sweeps (presets: demo, paper, ablation)",
    ),
    "analyze": (
        "kernelized.experiments.analyze",
        "attention maps, IoU with softmax, ReBased gamma/beta of a trained run",
    ),
    "lra": ("kernelized.experiments.lra", "Long Range Arena tasks with any kernel"),
    "lm": ("kernelized.experiments.lm", "language modelling, generation, AR-hit perplexity"),
    "glue": ("kernelized.experiments.glue", "masked-LM pretraining + GLUE / Rotten Tomatoes fine-tuning, any kernel"),
    "export": ("kernelized.experiments.export", "an `lm` run as a Hugging Face folder (safetensors, tokenizer)"),
    "lm-eval": ("kernelized.experiments.lm_harness", "lm-evaluation-harness tasks on an exported model (eval extra)"),
    "bench": ("kernelized.experiments.bench", "speed and memory benchmarks"),
    "kernel-error": (
        "kernelized.experiments.kernel_error",
        "random-feature estimator error against the number of features",
    ),
    "sparsity": (
        "kernelized.experiments.sparsity",
        "RKS vs PRF kernels on sparse queries and keys (convergence, gradient noise)",
    ),
    "data": ("kernelized.data.cli", "write generated datasets (listops, pathfinder, mqar) to disk"),
}


def _usage() -> str:
    lines = ["usage: kernelized <command> [options]", "", "commands:"]
    lines += [f"  {name:<13} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`kernelized <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; expected one of {sorted(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return command(module.main)(rest)  # a user error in any command: one `error: ...` line, exit 2


if __name__ == "__main__":
    sys.exit(main())

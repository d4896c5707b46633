"""`kernelized lm-eval MODEL_DIR --tasks ...`: EleutherAI's lm-evaluation-harness on an exported model (the `eval`
extra: ``pip install -e ".[eval]"``), through its Hugging Face model type.

    kernelized export runs/lm/tiny/kernel=rebased_seed=0-<hash> hf/tiny-rebased
    kernelized data fetch ptb
    kernelized lm-eval hf/tiny-rebased --tasks ptb_last_word,ptb_last_word_gen --limit 200
    kernelized lm-eval hf/tiny-rebased --tasks my_task --include-path my_tasks/    # your own YAML tasks

The harness loads the folder with ``AutoModelForCausalLM``; this command imports kernelized first, so the
``kernelized`` model type is registered (the plain ``lm_eval`` CLI does not know it; no remote code is involved).
Built-in tasks, written into the data cache (``$KERNELIZED_DATA/lm_eval/``) from the Penn Treebank test split:

- ``ptb_last_word``: ``loglikelihood`` of each test sentence's last word given the words before it (sentences of
  at least 5 words whose last word is not ``<unk>``): the harness's perplexity (``exp`` of minus the mean
  log-likelihood of the last word) and accuracy (the last word is the greedy continuation);
- ``ptb_last_word_gen``: ``generate_until`` a newline, greedy, at most 16 tokens; exact match of the first
  generated word with the last word.

Any task YAML of the harness works from ``--include-path`` (a file that does not parse is one error line naming it).
Results: the harness's table on stdout and, with ``--out``, its JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kernelized._checks import command
from kernelized.data.cache import cache_path
from kernelized.train.checkpoint import write_text_atomic

BUILTIN = ("ptb_last_word", "ptb_last_word_gen")

_DATA = """dataset_path: json
dataset_kwargs:
  data_files: {{test: {data}}}
test_split: test
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{' ' + target}}}}"
"""  # what both built-in tasks read: the jsonl of (context, last word)
_LOGLIKELIHOOD = (
    """task: ptb_last_word
output_type: loglikelihood
"""
    + _DATA
    + """metric_list:
  - {{metric: perplexity, aggregation: perplexity, higher_is_better: false}}
  - {{metric: acc, aggregation: mean, higher_is_better: true}}
"""
)
_GENERATE = (
    """task: ptb_last_word_gen
output_type: generate_until
"""
    + _DATA
    + """generation_kwargs: {{until: ["\\n"], max_gen_toks: 16, do_sample: false}}
process_results: !function kernelized_ptb.first_word_match
metric_list:
  - {{metric: exact_match, aggregation: mean, higher_is_better: true}}
"""
)
_UTILS = '''def first_word_match(doc, results):
    """1 when the first generated word is the sentence's last word (offline: no `evaluate` metric download)."""
    words = results[0].split()
    return {"exact_match": float(bool(words) and words[0] == doc["target"])}
'''


def last_word_docs(sentences: list[str], min_words: int = 5) -> list[dict]:
    """``{"context", "target"}`` of each sentence with at least ``min_words`` words and a last word not <unk>."""
    docs = []
    for sentence in sentences:
        words = sentence.split()
        if len(words) >= min_words and words[-1] != "<unk>":
            docs.append({"context": " ".join(words[:-1]), "target": words[-1]})
    return docs


def write_builtin_tasks(folder: Path | None = None) -> Path:
    """The two PTB tasks (YAML, their jsonl and the helper module) in ``folder`` (default: the data cache)."""
    from kernelized.data import penn_treebank
    from kernelized.data.fetch import verified_folder

    folder = Path(folder) if folder is not None else cache_path("lm_eval")
    folder.mkdir(parents=True, exist_ok=True)
    docs = last_word_docs(penn_treebank.read_splits(verified_folder("ptb"))["test"])
    data = folder / "ptb_last_word.jsonl"
    write_text_atomic("".join(json.dumps(d) + "\n" for d in docs), data)
    write_text_atomic(_LOGLIKELIHOOD.format(data=json.dumps(str(data))), folder / "ptb_last_word.yaml")
    write_text_atomic(_GENERATE.format(data=json.dumps(str(data))), folder / "ptb_last_word_gen.yaml")
    write_text_atomic(_UTILS, folder / "kernelized_ptb.py")
    return folder


def check_task_files(folder: Path) -> None:
    """Every YAML under ``folder`` parses as the harness reads it (one error naming the first that does not)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    if not folder.is_dir():
        raise FileNotFoundError(f"--include-path {folder} is not a folder of lm-eval task YAML files")
    for path in sorted(folder.rglob("*.yaml")):
        try:
            load_yaml(path)
        except Exception as e:  # yaml.YAMLError, a missing !function module, a non-mapping document, ...
            message = str(e).replace("\n", " ")
            raise ValueError(f"lm-eval task file {path} does not parse: {type(e).__name__}: {message}") from None


def evaluate(model_dir: str | Path, tasks: list[str], include_path: str | Path | None = None,
             limit: int | None = None, batch_size: int = 8, device: str = "cpu") -> dict:  # fmt: skip
    """The harness's result dict for ``tasks`` on the exported model in ``model_dir``."""
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ValueError("lm-eval is not installed: pip install -e '.[eval]'") from None
    import kernelized  # noqa: F401  (registers the model type with transformers)

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"MODEL_DIR {model_dir} has no config.json: make one with `kernelized export`")
    paths = [str(write_builtin_tasks())] if set(tasks) & set(BUILTIN) else []
    if include_path is not None:
        check_task_files(Path(include_path))
        paths.append(str(include_path))
    manager = TaskManager(include_path=paths or None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ValueError(f"--tasks: {unknown} not found (built in: {list(BUILTIN)}; add --include-path for yours)")
    return lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(model_dir), "dtype": "float32", "backend": "causal"},
        tasks=tasks, task_manager=manager, limit=limit, batch_size=batch_size, device=device,
        bootstrap_iters=0, log_samples=False,
    )  # fmt: skip


@command
def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kernelized lm-eval", description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a folder written by `kernelized export`")
    parser.add_argument("--tasks", required=True, help=f"comma-separated task names (built in: {', '.join(BUILTIN)})")
    parser.add_argument("--include-path", default=None, help="a folder of your own lm-eval task YAML files")
    parser.add_argument("--limit", type=int, default=None, help="at most this many documents per task")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="write the harness's results JSON here")
    args = parser.parse_args(argv)
    from kernelized.experiments.framework.presets import parse_list

    result = evaluate(args.model_dir, parse_list(args.tasks, "--tasks"), args.include_path, args.limit,
                      args.batch_size, args.device)  # fmt: skip
    from lm_eval.utils import make_table

    print(make_table(result))
    if args.out:
        write_text_atomic(json.dumps(result["results"], indent=1, default=str), Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

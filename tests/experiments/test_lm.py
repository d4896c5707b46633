import csv
import json

import pytest
import torch
import yaml

from kernelized.experiments import lm
from kernelized.experiments.framework import available_presets, load_preset
from kernelized.train import Trainer, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def write_preset(tmp_path, **changes) -> str:
    """A very small preset: 2 layers (BaseConv, ReBased), width 16, windows of 32 bytes, a few steps."""
    preset = {
        "tokenizer": "byte",
        "seq_len": 32,
        "corpus": {"source": "stdlib", "train_tokens": 6000, "val_tokens": 1024, "val_fraction": 0.2},
        "model": {
            "d_model": 16,
            "n_layers": 2,
            "pattern": [
                {"mixer": "baseconv", "kernel_size": 3},
                {"mixer": "kernel", "kernel": "rebased", "num_heads": 2, "feature_dim": 4, "mode": "parallel"},
            ],
            "mlp": "swiglu",
            "positions": "learned",
        },
        "train": {"max_steps": 6, "batch_size": 8, "lr": 1e-2, "eval_every": 3, "checkpoint_every": 2, "log_every": 1},
        "generate": {"prompt": "def ", "max_new_tokens": 12},
    }
    for key, value in changes.items():
        section, leaf = key.split("__")
        preset[section][leaf] = value
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(preset))
    return str(path)


def test_compare_mode_writes_table_sample_and_exact_decoding(tmp_path, capsys):
    preset = write_preset(tmp_path)
    out = tmp_path / "runs"
    argv = ["--preset", preset, "--kernels", "rebased,softmax", "--out", str(out), "--no-progress"]
    assert lm.main(argv) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["kernel"] for r in rows] == ["rebased", "softmax"]
    for r in rows:
        ppl, hit, other = float(r["ppl"]), float(r["ar_hit_ppl"]), float(r["other_ppl"])
        assert 1 < hit and 1 < other and min(hit, other) <= ppl <= max(hit, other)
        assert float(r["decode_max_abs_diff"]) < 1e-4  # prefill + recurrent decode = full forward
        assert 0 < float(r["ar_hit_fraction"]) < 1
    # the kernel state does not grow while decoding; the softmax KV cache does
    assert int(rows[0]["decode_state_growth_per_token"]) == 0 < int(rows[1]["decode_state_growth_per_token"])
    assert "| kernel |" in (out / "report.md").read_text() and (out / "ar_hit.png").exists()
    sample = (run_dir(out) / "sample.txt").read_text()
    assert sample.startswith("def ")
    _, model = lm.load_trained(run_dir(out, "softmax"))
    assert {b["mixer"]["mixer"] for b in model.cfg.blocks} == {"baseconv", "softmax"}
    assert yaml.safe_load((run_dir(out, "softmax") / "config.yaml").read_text())["kernel"] == "softmax"
    # AR hits split by the bigram's count in the training tokens: the shares add up to all AR hits
    ev = json.loads((run_dir(out) / "eval.json").read_text())
    shares = [ev[f"ar_hit_share_{b}"] for b in lm.BUCKETS]
    assert abs(sum(shares) - ev["ar_hit_fraction"]) < 1e-9 and all(ev[f"ar_hit_ppl_{b}"] > 1 for b in lm.BUCKETS)
    assert "AR hits by the bigram's count in the training tokens" in (out / "report.md").read_text()
    # better than the untrained model (uniform over 257 bytes: perplexity 257)
    assert json.loads((run_dir(out) / "eval.json").read_text())["ppl"] < 0.8 * 257
    # a finished run is not redone: same numbers, no new training
    before = (out / "results.csv").read_text()
    assert lm.main(argv) == 0
    assert (out / "results.csv").read_text() == before


def test_killed_run_resumes_exactly(tmp_path, monkeypatch):
    preset = write_preset(tmp_path)
    argv = ["--preset", preset, "--no-progress"]
    assert lm.main(argv + ["--out", str(tmp_path / "straight")]) == 0

    real_step, calls = Trainer._train_step, [0]

    def dying_step(self, indices):
        calls[0] += 1
        if calls[0] == 6:  # killed after the checkpoint of step 4, in step 5 (which it never finishes)
            raise KeyboardInterrupt
        return real_step(self, indices)

    monkeypatch.setattr(Trainer, "_train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        lm.main(argv + ["--out", str(tmp_path / "killed")])
    monkeypatch.setattr(Trainer, "_train_step", real_step)
    assert lm.main(argv + ["--out", str(tmp_path / "killed")]) == 0
    straight, killed = run_dir(tmp_path / "straight"), run_dir(tmp_path / "killed")
    assert straight.name == killed.name  # a run without --kernels is named by its pattern's kernel
    a = load_checkpoint(straight / "checkpoint.pt")["model"]
    b = load_checkpoint(killed / "checkpoint.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ea = json.loads((straight / "eval.json").read_text())
    eb = json.loads((killed / "eval.json").read_text())
    assert ea["ppl"] == eb["ppl"] and ea["ar_hit_ppl"] == eb["ar_hit_ppl"] and ea["kernel"] == "rebased"
    # killed after training, before its evaluation was recorded: the weights come back from the checkpoint
    (killed / "result.json").unlink()
    (killed / "eval.json").unlink()
    assert lm.main(argv + ["--out", str(tmp_path / "killed")]) == 0
    again = json.loads((killed / "eval.json").read_text())
    assert again["ppl"] == ea["ppl"] and again["decode_max_abs_diff"] == ea["decode_max_abs_diff"]


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    def err(argv):
        assert lm.main(argv + ["--out", str(tmp_path / "x"), "--no-progress"]) == 2
        return capsys.readouterr().err

    too_long = write_preset(tmp_path, model__max_len=16)
    assert "seq_len=32 is longer than the learned positions allow (model.max_len=16)" in err(["--preset", too_long])
    (tmp_path / "empty").mkdir()
    empty = write_preset(tmp_path, corpus__source=str(tmp_path / "empty"))
    assert "gave no train text" in err(["--preset", empty])
    missing_tok = write_preset(tmp_path)
    assert "could not be found" in err(["--preset", missing_tok, "--set", f"tokenizer={tmp_path}/no/tok"])
    assert "kernel must be one of" in err(["--preset", missing_tok, "--kernels", "rebased,nope"])
    assert "unknown lm preset 'no-such-preset'" in err(["--preset", "no-such-preset"])
    assert "key=value" in err(["--preset", missing_tok, "--set", "train.max_steps"])
    assert "unknown key 'corpus.sorce'" in err(["--preset", missing_tok, "--set", "corpus.sorce=x"])
    assert "valid keys of 'train' are" in err(["--preset", missing_tok, "--set", "train.stepz=3"])
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: {d_model: [\n")
    message = err(["--preset", str(bad_yaml)])
    assert message.startswith("error: malformed YAML in") and "Traceback" not in message


def test_presets_build_and_count_parameters(capsys):
    assert {"tiny", "rebased", "based", "hybrid", "rebased-150m"} <= set(available_presets("lm"))
    assert lm.main(["--preset", "rebased-150m", "--count-params"]) == 0
    n = int(capsys.readouterr().out.split(": ")[1].split(" ")[0].replace(",", ""))
    assert 140e6 < n < 160e6  # the ReBased paper's ~150M scale

    def model_config(name):
        return lm.model_config(lm.resolve(load_preset("lm", name, defaults=lm.DEFAULTS)), 257)

    for name in ("tiny", "rebased", "based", "hybrid"):
        assert all(b["mlp"] == "swiglu" for b in model_config(name).blocks)
    hybrid = {b["mixer"]["mixer"] for b in model_config("hybrid").blocks}
    assert hybrid == {"baseconv", "kernel", "sliding_window"}


def test_bpe_tokenizer_and_hub_corpus_end_to_end(tmp_path):
    """A `tokenizers` BPE saved here and a local jsonl folder read through the datasets (hub) loader."""
    tokenizers = pytest.importorskip("tokenizers")
    pytest.importorskip("datasets")
    from tokenizers import models, pre_tokenizers, trainers

    rng = torch.Generator().manual_seed(0)
    words = ["the", "cat", "sat", "on", "mat", "dog", "ran", "to", "a", "log"]
    stories = [" ".join(words[i] for i in torch.randint(0, 10, (40,), generator=rng).tolist()) for _ in range(60)]
    data = tmp_path / "stories"
    data.mkdir()
    (data / "train.jsonl").write_text("\n".join(json.dumps({"text": s}) for s in stories[:50]))
    (data / "validation.jsonl").write_text("\n".join(json.dumps({"text": s}) for s in stories[50:]))
    tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(stories, trainers.BpeTrainer(vocab_size=40, special_tokens=["<unk>", "</s>"]))
    tok.save(str(tmp_path / "tokenizer.json"))
    preset = write_preset(tmp_path, corpus__source=f"hf:{data}", model__max_len=32)
    sets = ["--set", f"tokenizer={tmp_path / 'tokenizer.json'}", "--set", "seq_len=16", "--set", "generate.prompt=the"]
    assert lm.main(["--preset", preset, "--out", str(tmp_path / "run"), "--no-progress", *sets]) == 0
    row = json.loads((run_dir(tmp_path / "run") / "eval.json").read_text())
    _, model = lm.load_trained(run_dir(tmp_path / "run"))
    assert model.cfg.vocab_size == tok.get_vocab_size()
    assert row["ppl"] < tok.get_vocab_size()  # better than uniform over the BPE vocabulary
    sample = (run_dir(tmp_path / "run") / "sample.txt").read_text()
    assert sample.startswith("the") and set(sample) <= set("".join(words) + " ")  # decoded BPE pieces


def test_seeds_give_confidence_intervals_and_paired_comparisons(tmp_path):
    preset = write_preset(tmp_path)
    out = tmp_path / "runs"
    argv = ["--preset", preset, "--kernels", "rebased,taylor", "--seeds", "0,1", "--out", str(out), "--no-progress"]
    assert lm.main(argv + ["--set", "train.max_steps=2", "--set", "train.eval_every=2"]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["kernel"], r["seed"]) for r in rows] == [
        ("rebased", "0"),
        ("rebased", "1"),
        ("taylor", "0"),
        ("taylor", "1"),
    ]
    assert rows[0]["ppl"] != rows[1]["ppl"]  # another seed: another initialisation and data order
    report = (out / "report.md").read_text()
    assert "mean ± 95% CI over seeds" in report and "| ar_hit_ppl | rebased | taylor | 2 |" in report
    records = [{"config": {"kernel": r["kernel"], "seed": int(r["seed"])}, "status": r["status"],
                "summary": {"ppl": float(r["ppl"])}} for r in rows]  # fmt: skip
    groups, pairs = lm.per_kernel(records, ["rebased", "taylor"])
    mean = (float(rows[0]["ppl"]) + float(rows[1]["ppl"])) / 2
    assert groups[0]["kernel"] == "rebased" and groups[0]["seeds"] == 2 and groups[0]["ppl"].startswith(f"{mean:.3f} ±")
    assert "--seeds expects comma-separated integers" in _err(["--preset", preset, "--seeds", "a,b", "--out", str(out)])


def _err(argv):
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        assert lm.main(argv) == 2
    return buf.getvalue()


def run_dir(out, kernel="rebased", seed=0):
    (path,) = out.glob(f"kernel={kernel}_seed={seed}-*")
    return path

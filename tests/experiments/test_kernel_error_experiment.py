"""`kernelized kernel-error`: presets and --set, skipped (kernel, M) cells, user errors as `error:` and exit 2.

Tiny runs (3 draws, 4 pairs, two small Ms): they check the command's machinery, not the estimators (those are
tested in tests/eval/test_kernel_error.py).
"""

from __future__ import annotations

import csv

import pytest

from kernelized import cli
from kernelized.eval.kernel_error import DEFAULT_SPECS
from kernelized.experiments import kernel_error
from kernelized.experiments.framework.presets import load_preset
from kernelized.experiments.framework.schema import defaults_of

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "--set",
    "draws=3",
    "--set",
    "pairs=4",
    "--set",
    "head_dim=4",
    "--set",
    "variance_eigenvalues=[]",
    "--no-progress",
]


def _rows(out) -> list[dict]:
    with open(out / "kernel_error.csv") as f:
        return list(csv.DictReader(f))


def test_default_preset_holds_the_documented_defaults():
    config = load_preset("kernel-error", "default", defaults=defaults_of(kernel_error.KernelErrorConfig))
    assert config.pop("grid") == {"kernel": list(DEFAULT_SPECS)}  # one run per kernel
    assert config == defaults_of(kernel_error.KernelErrorConfig)
    assert config["num_features"] == [16, 32, 64, 128, 256]
    assert (config["head_dim"], config["num_heads"], config["pairs"], config["draws"]) == (16, 2, 64, 200)
    assert (config["input_scale"], config["seed"], config["standardize"]) == (0.5, 0, True)


def test_preset_and_set_change_the_output(tmp_path, capsys):
    argv = ["--kernels", "rff,gmm-prf", "--num-features", "8,16", *TINY]
    assert kernel_error.main(["--out", str(tmp_path / "a"), *argv]) == 0
    rows = _rows(tmp_path / "a")
    assert [(r["kernel"], int(r["num_features"])) for r in rows] == [("rff", 8), ("rff", 16), ("gmm-prf", 8),
                                                                       ("gmm-prf", 16)]  # fmt: skip
    assert {r["draws"] for r in rows} == {"3"} and all(float(r["mse"]) > 0 for r in rows)
    md = (tmp_path / "a" / "kernel_error.md").read_text()
    assert "4 pairs x 2 heads, head dim d = 4" in md and "3 independent draws" in md and "--set draws=3" in md
    assert "| gmm-prf | 16 |" in md and "Skipped cells" not in md
    assert (tmp_path / "a" / "kernel_error.png").read_bytes()[:4] == b"\x89PNG"
    assert "log-log slope" in capsys.readouterr().out
    assert kernel_error.main(["--out", str(tmp_path / "b"), *argv, "--set", "seed=1"]) == 0
    assert [r["mse"] for r in _rows(tmp_path / "b")] != [r["mse"] for r in rows]  # another seed, other draws
    preset = tmp_path / "mine.yaml"  # a preset file: its fields, the rest defaults
    preset.write_text(
        "kernel: performer\nnum_features: [4, 8]\ndraws: 3\npairs: 4\nstandardize: false\nvariance_eigenvalues: []\n"
    )
    assert kernel_error.main(["--out", str(tmp_path / "c"), "--preset", str(preset), "--no-progress"]) == 0
    assert [(r["kernel"], r["num_features"]) for r in _rows(tmp_path / "c")] == [("performer", "4"), ("performer", "8")]
    assert "GMM spectra set" not in (tmp_path / "c" / "kernel_error.md").read_text()


def test_a_kernel_that_cannot_take_an_m_is_skipped_with_a_note(tmp_path, capsys):
    # FastFood needs whole blocks: M a multiple of the padded head dim (8 here), so M=4 cannot be built
    argv = ["--out", str(tmp_path), "--kernels", "rff,fastfood-rks", "--num-features", "4,8", *TINY, "--set",
            "head_dim=8"]  # fmt: skip
    assert kernel_error.main(argv) == 0
    err = capsys.readouterr().err
    assert "note: skipped fastfood-rks at M=4: " in err and "multiple of the padded head dim 8" in err
    assert "rff at M" not in err
    rows = _rows(tmp_path)
    assert [(r["kernel"], int(r["num_features"])) for r in rows] == [("rff", 4), ("rff", 8), ("fastfood-rks", 8)]
    md = (tmp_path / "kernel_error.md").read_text()
    assert "## Skipped cells" in md and "- fastfood-rks at M=4: num_features must be a multiple" in md
    assert "| fastfood-rks | 8 |" in md and (tmp_path / "kernel_error.png").is_file()


def test_bad_input_exits_2_with_an_error_line(tmp_path, capsys, monkeypatch):
    out = ["--out", str(tmp_path / "out"), "--no-progress"]
    for argv, expected in (
        (["--set", "draws=1"], "draws"),
        (["--kernels", "rff,rebased"], "got 'rebased'"),
        (["--num-features", "8,0"], "num_features"),
        (["--num-features", "8,x"], "--num-features"),
        (["--set", "drawz=3"], "'drawz'"),
        (["--set", "pairs=many"], "pairs"),
        (["--preset", "nope"], "--preset"),
        (["--kernels", "fastfood-rks", "--num-features", "3", *TINY], "no (kernel, M) cell was measured"),
    ):
        assert kernel_error.main(out + argv) == 2, argv
        err = capsys.readouterr().err
        assert err.splitlines()[-1].startswith("error: ") and expected in err, (argv, err)
    assert not (tmp_path / "out" / "kernel_error.md").exists()  # no report
    assert cli.main(["kernel-error", "--set", "draws=1"]) == 2  # `kernelized kernel-error` is the same command
    monkeypatch.chdir(tmp_path)  # without --out: runs/kernel-error
    assert kernel_error.main(["--kernels", "rff", "--num-features", "4,8", *TINY]) == 0
    assert (tmp_path / "runs" / "kernel-error" / "default" / "kernel_error.md").is_file()


def test_runs_are_kept_resumed_and_seeds_give_intervals(tmp_path, capsys):
    """A sweep of the framework: one run per (kernel, seed); a rerun computes nothing; --report-only rebuilds."""
    argv = ["--out", str(tmp_path), "--kernels", "rff,performer", "--num-features", "8,16", "--seeds", "0,1", *TINY]
    assert kernel_error.main(argv) == 0
    runs = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert runs == ["kernel=performer_seed=0", "kernel=performer_seed=1", "kernel=rff_seed=0", "kernel=rff_seed=1"]
    rows = _rows(tmp_path)
    assert len(rows) == 8 and {r["seed"] for r in rows} == {"0", "1"}
    md = (tmp_path / "kernel_error.md").read_text()
    assert "± (95% CI over seeds)" in md and "seeds 0, 1" in md
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/result.json")}
    assert kernel_error.main(argv) == 0  # finished runs are not measured again
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/result.json")} == stamps

    def listed():  # the sweep's results.csv: one row per run it was given
        with open(tmp_path / "runs" / "results.csv") as f:
            return sorted(r["run_id"].rsplit("-", 1)[0] for r in csv.DictReader(f))

    narrowed = [a if a != "rff,performer" else "rff" for a in argv]
    assert kernel_error.main(narrowed) == 0 and listed() == runs[2:]  # a narrowed sweep lists its own runs
    (tmp_path / "kernel_error.csv").unlink()
    assert kernel_error.main([*argv, "--report-only"]) == 0
    assert _rows(tmp_path) == rows and listed() == runs  # --report-only of the whole grid lists every run again
    assert kernel_error.main([*argv, "--set", "draws=4", "--seeds", "0"]) == 0  # other settings: new runs
    md = (tmp_path / "kernel_error.md").read_text()
    assert "4 run folder(s) of other settings in this folder were ignored" in md and "seed 0," in md


def test_the_variance_section_follows_the_closed_form_and_its_grid(tmp_path):
    argv = ["--out", str(tmp_path), "--kernels", "rff", "--num-features", "8", "--set", "draws=3", "--set", "pairs=4",
            "--set", "head_dim=4", "--set", "variance_eigenvalues=[0.5,4.0]", "--set", "variance_norms=[1.0]",
            "--set", "variance_num_features=[8,32]", "--set", "variance_draws=400", "--no-progress"]  # fmt: skip
    assert kernel_error.main(argv) == 0
    with open(tmp_path / "kernel_variance.csv") as f:
        rows = [{k: (v if k == "kernel" else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]
    assert [(r["kernel"], r["eigenvalue"], r["num_features"]) for r in rows] == [
        ("gmm-rks", 0.5, 8), ("gmm-rks", 4.0, 8), ("gmm-rks", 1.0, 32),
        ("gmm-prf", 0.5, 8), ("gmm-prf", 4.0, 8), ("gmm-prf", 1.0, 32),
    ]  # fmt: skip
    for r in rows:  # where PRF's log-normal tails are mild (relative MSE < 1) the draws agree with the formula
        if r["rel_mse_theory"] < 1:
            assert abs(r["mse_measured"] - r["mse_theory"]) < 5 * r["mse_se"], r
    assert sum(r["rel_mse_theory"] < 1 for r in rows) == 5  # all but PRF at eigenvalue 4
    for name in ("gmm-rks", "gmm-prf"):  # the error grows with the eigenvalues
        low, high = (r for r in rows if r["kernel"] == name and r["num_features"] == 8)
        assert high["mse_theory"] > low["mse_theory"] and high["rel_mse_theory"] > low["rel_mse_theory"]
    md = (tmp_path / "kernel_error.md").read_text()
    assert "## Variance against the spectrum" in md and "| gmm-prf | 4.0000 | 1.0000 | 8 |" in md
    assert (tmp_path / "kernel_variance.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="variance_norms"):
        kernel_error.check_values({**kernel_error.DEFAULTS, "variance_norms": [-1.0]}, "test")

"""`kernelized export`: an LM run becomes a Hugging Face folder that `AutoModelForCausalLM`, `AutoTokenizer` and
`pipeline` load after a plain `import kernelized` (no remote code), with the run's logits and byte ids."""

import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from kernelized.data.tokenizers import ByteTokenizer, to_transformers  # noqa: E402
from kernelized.experiments import export, lm  # noqa: E402
from tests.experiments.test_lm import run_dir, write_preset  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lm")
    preset = write_preset(tmp)
    assert lm.main(["--preset", preset, "--out", str(tmp / "run"), "--no-progress"]) == 0
    return run_dir(tmp / "run")


def test_export_loads_back_with_the_runs_logits_and_generates_through_a_pipeline(trained, tmp_path):
    out = export.export(trained, tmp_path / "hf")
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= {
        p.name for p in out.iterdir()
    }
    _, native = lm.load_trained(trained)
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ids = tok("def f(x):", return_tensors="pt")["input_ids"]
    assert ids[0].tolist() == list(b"def f(x):")  # the byte ids the run trained on
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, native(ids), rtol=1e-5, atol=1e-5)
    assert model.generation_config.eos_token_id == 256 and model.generation_config.top_k == 40
    pipe = transformers.pipeline("text-generation", model=str(out))
    text = pipe("def ", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert text.startswith("def ") and len(text) > 4


def test_import_kernelized_is_enough_for_the_auto_classes(trained, tmp_path):
    out = export.export(trained, tmp_path / "hf")
    code = ("import sys, kernelized; assert 'transformers' not in sys.modules; "
            "from transformers import AutoModelForCausalLM as A; "
            f"print(type(A.from_pretrained({str(out)!r})).__name__)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "KernelizedForCausalLM"


def test_byte_tokenizer_keeps_its_ids_in_transformers():
    tok, ours = to_transformers(ByteTokenizer()), ByteTokenizer()
    text = "héllo wörld\n\tdef f(x): € 🙂"
    assert tok(text)["input_ids"] == ours.encode(text) and tok.decode(ours.encode(text)) == text
    assert tok.eos_token_id == 256 and len(tok) == ours.vocab_size


def test_bad_export_input_is_one_error_line(trained, tmp_path, capsys):
    assert export.main([str(tmp_path / "none"), str(tmp_path / "o")]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.yaml").write_text("seed: 0\n")
    assert export.main([str(tmp_path / "empty"), str(tmp_path / "o")]) == 2
    assert "has no checkpoint.pt" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    assert export.main([str(trained), str(tmp_path / "taken")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert export.main([str(trained), str(tmp_path / "taken"), "--overwrite"]) == 0

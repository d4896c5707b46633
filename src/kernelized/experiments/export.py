"""`kernelized export RUN_DIR OUT_DIR`: a `kernelized lm` run as a Hugging Face model folder.

    kernelized export runs/lm/tiny/kernel=rebased_seed=0-1a2b3c4d hf/tiny-rebased
    python -c "import kernelized, transformers as t; print(t.pipeline('text-generation', model='hf/tiny-rebased')('a'))"

The folder holds ``config.json`` (``model_type: kernelized``), ``model.safetensors`` (the run's last checkpoint),
the tokenizer's files (``tokenizer.json``, ``tokenizer_config.json``, ...; the byte tokenizer as a byte-level BPE
with the same ids) and ``generation_config.json`` (the run's ``generate`` settings: sampling temperature, top-k,
the end-of-document token). Loading needs no remote code: ``import kernelized`` registers the model type with
``AutoConfig`` / ``AutoModelForCausalLM``. The folder is written next to OUT_DIR and renamed into place, so a
killed export leaves no half folder; an existing OUT_DIR is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from kernelized._checks import command


def export(run_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write the Hugging Face folder of the LM run ``run_dir`` to ``out_dir``; returns ``out_dir``."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"RUN_DIR {run_dir} is not a run folder (no config.yaml): pass a `kernelized lm` run")
    if not (run_dir / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"RUN_DIR {run_dir} has no checkpoint.pt: train it first (kernelized lm ...)")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ValueError(f"OUT_DIR {out_dir} exists and is not empty (pass --overwrite to replace it)")
    from transformers import GenerationConfig

    from kernelized.data.tokenizers import load_tokenizer, to_transformers
    from kernelized.experiments.lm import load_trained
    from kernelized.models.hf import KernelizedForCausalLM

    config, model = load_trained(run_dir)
    tok = load_tokenizer(config["tokenizer"])
    hf = KernelizedForCausalLM.from_native(model)
    gen = config.get("generate") or {}
    temperature = float(gen.get("temperature", 1.0))
    hf.generation_config = GenerationConfig(
        do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
        top_k=gen.get("top_k"), max_new_tokens=gen.get("max_new_tokens", 64), eos_token_id=tok.eos_id,
        pad_token_id=tok.eos_id,
    )  # fmt: skip
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hf.save_pretrained(tmp)
    to_transformers(tok).save_pretrained(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


@command
def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kernelized export", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a `kernelized lm` run folder (with checkpoint.pt)")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the Hugging Face folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    args = parser.parse_args(argv)
    out = export(args.run_dir, args.out_dir, args.overwrite)
    print(f"wrote {out}: config.json, model.safetensors, tokenizer files, generation_config.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

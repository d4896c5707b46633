"""`kernelized lm` under torchrun: 2 CPU processes (gloo) end with the weights of 1 process, same global batch.

Slow (two process start-ups); the fast, generic 2-process equality test of the Trainer is tests/train.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kernelized.train import load_checkpoint

_spec = importlib.util.spec_from_file_location("_lm_test_helpers", Path(__file__).with_name("test_lm.py"))
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)
write_preset = _helpers.write_preset


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tmp_path):
    preset = write_preset(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = ["-m", "kernelized", "lm", "--preset", preset, "--no-progress", "--out"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    subprocess.run(launch + cmd + [str(tmp_path / "two")], check=True, env=env, timeout=300)
    subprocess.run([sys.executable] + cmd + [str(tmp_path / "one")], check=True, env=env, timeout=300)
    (one_dir,) = (tmp_path / "one").glob("kernel=rebased_seed=0-*")
    (two_dir,) = (tmp_path / "two").glob("kernel=rebased_seed=0-*")
    assert one_dir.name == two_dir.name
    one = load_checkpoint(one_dir / "checkpoint.pt")
    two = load_checkpoint(two_dir / "checkpoint.pt")
    assert two["world_size"] == 2 and one["world_size"] == 1 and one["step"] == two["step"] == 6
    for k, v in one["model"].items():
        if isinstance(v, torch.Tensor):
            torch.testing.assert_close(two["model"][k], v, rtol=1e-5, atol=1e-6)


def _losses(run_dir: Path) -> list[float]:
    import json

    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [x["loss"] for x in lines if x.get("event") == "train"]


@pytest.mark.slow
def test_torchrun_loss_matches_one_process_for_20_steps(tmp_path):
    """What README claims: the training loss of 2 processes equals 1 process's to 1e-5 over the first 20 steps."""
    preset = write_preset(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sets = ["--set", "train.max_steps=20", "--set", "train.log_every=1", "--set", "train.eval_every=20"]
    cmd = ["-m", "kernelized", "lm", "--preset", preset, "--no-progress", *sets, "--out"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    subprocess.run(launch + cmd + [str(tmp_path / "two")], check=True, env=env, timeout=300)
    subprocess.run([sys.executable] + cmd + [str(tmp_path / "one")], check=True, env=env, timeout=300)
    (one_dir,) = (tmp_path / "one").glob("kernel=rebased_seed=0-*")
    (two_dir,) = (tmp_path / "two").glob("kernel=rebased_seed=0-*")
    one, two = _losses(one_dir), _losses(two_dir)
    assert len(one) == len(two) == 20
    torch.testing.assert_close(torch.tensor(two), torch.tensor(one), rtol=1e-5, atol=1e-5)

"""Trainer: learning, early stop, accumulation, exact resume (in-process and after SIGKILL), files."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from train_tiny import (
    VOCAB,
    max_weight_diff,
    read_metrics,
    shift_data,
    tiny_model,
    weights_equal,
    without_times,
)

from kernelized.train import TrainConfig, Trainer, load_checkpoint
from kernelized.train.optim import build_optimizer

HERE = Path(__file__).parent


def config(**overrides) -> TrainConfig:
    base = dict(epochs=3, batch_size=16, lr=3e-2, progress=False, log_every=2)
    base.update(overrides)
    return TrainConfig(**base)


def test_learns_and_early_stops(tmp_path):
    cfg = config(epochs=10, lr=1e-2, early_stop_metric="accuracy", early_stop_threshold=0.99)
    summary = Trainer(tiny_model(), cfg, shift_data(256, 0), shift_data(64, 1), run_dir=tmp_path).fit()
    assert summary["status"] == "early_stopped"
    assert summary["best"]["accuracy"] >= 0.99
    assert summary["steps"] < summary["total_steps"] == 10 * 16
    evals = [r for r in read_metrics(tmp_path) if r["event"] == "eval"]
    # evaluated once per epoch, stopped at the first evaluation that reached the threshold
    assert [r["epoch"] for r in evals] == [float(e) for e in range(1, len(evals) + 1)]
    assert all(r["accuracy"] < 0.99 for r in evals[:-1]) and evals[-1]["accuracy"] >= 0.99
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == summary["steps"]


def test_summary_best_is_best_over_evaluations(tmp_path):
    cfg = config(epochs=4, lr=3e-3, eval_every=3, schedule="constant")
    summary = Trainer(tiny_model(), cfg, shift_data(96, 0), shift_data(32, 1), run_dir=tmp_path).fit()
    evals = [r for r in read_metrics(tmp_path) if r["event"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6, 9, 12, 15, 18, 21, 24]  # every 3 steps; 24 is also the last
    top = max(evals, key=lambda r: r["accuracy"])
    assert summary["best"]["accuracy"] == top["accuracy"]
    assert summary["best_step"]["accuracy"] == top["step"]
    low = min(evals, key=lambda r: r["loss"])
    assert summary["best"]["loss"] == low["loss"] and summary["best_epoch"]["loss"] == low["epoch"]
    assert summary["final"] == {"accuracy": evals[-1]["accuracy"], "loss": evals[-1]["loss"]}
    assert summary["tokens_per_s"] > 0 and summary["num_params"] == sum(p.numel() for p in tiny_model().parameters())


def test_one_step_equals_manual_adamw_on_the_whole_batch():
    data = shift_data(24, 0)
    cfg = config(max_steps=1, batch_size=24, micro_batch_size=5, schedule="constant", grad_clip=None, shuffle=False)
    trained = tiny_model()
    Trainer(trained, cfg, data).fit()

    manual = tiny_model()
    opt = build_optimizer(manual, cfg)
    tokens, labels = data.tensors
    logits = manual(tokens)
    F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100).backward()
    opt.step()
    assert max_weight_diff(trained, manual) < 1e-6


@pytest.mark.parametrize("micro", [4, 5])
def test_accumulation_equals_one_big_batch(micro):
    data = shift_data(100, 0)  # the last batch of each epoch has 4 examples
    runs = []
    for micro_batch_size in (None, micro):
        model = tiny_model()
        Trainer(model, config(epochs=2, micro_batch_size=micro_batch_size), data).fit()
        runs.append(model)
    assert max_weight_diff(*runs) < 1e-5
    assert not weights_equal(runs[0], tiny_model())  # it trained


class Interrupt(Exception):
    pass


def interrupting_loss(after_calls: int):
    """The default loss, but raise on call number ``after_calls``: a run dying mid-way."""
    from kernelized.train import default_loss

    calls = [0]

    def loss_fn(model, batch):
        calls[0] += 1
        if calls[0] == after_calls:
            raise Interrupt
        return default_loss(model, batch)

    return loss_fn


@pytest.mark.parametrize(
    "settings, interrupt_at",
    [
        (dict(checkpoint_every=4, micro_batch_size=4, log_every=1), 4 * 6 + 2),  # mid step 7, last ckpt at 4
        (dict(eval_every=5, log_every=3, dropout=0.2), 13),  # dropout: the RNG must be restored too
        (dict(epochs=4, early_stop_metric="accuracy", early_stop_threshold=0.9, lr=1e-2), 20),
    ],
)
def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, settings, interrupt_at):
    settings = dict(settings)
    dropout = settings.pop("dropout", 0.0)
    cfg = config(**settings)
    train, val = shift_data(112, 0), shift_data(32, 1)  # 7 steps per epoch

    reference = tiny_model(dropout=dropout)
    ref_summary = Trainer(reference, cfg, train, val, run_dir=tmp_path / "ref").fit()

    run_dir = tmp_path / "run"
    with pytest.raises(Interrupt):
        Trainer(tiny_model(dropout=dropout), cfg, train, val, run_dir, loss_fn=interrupting_loss(interrupt_at)).fit()
    ckpt_step = load_checkpoint(run_dir / "checkpoint.pt")["step"]
    assert 0 < ckpt_step < ref_summary["steps"]
    if settings.get("log_every") == 1:  # lines past the checkpoint exist and must be dropped on resume
        assert max(r["step"] for r in read_metrics(run_dir)) > ckpt_step

    resumed = tiny_model(seed=123, dropout=dropout)  # different init: the checkpoint must overwrite it
    summary = Trainer(resumed, cfg, train, val, run_dir=run_dir).fit()
    assert weights_equal(resumed, reference)
    assert without_times(summary) == without_times(ref_summary)
    assert [without_times(r) for r in read_metrics(run_dir)] == [
        without_times(r) for r in read_metrics(tmp_path / "ref")
    ]


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    """A real process killed with SIGKILL between checkpoints, then the same run again (here in-process)."""
    from train_tiny_script import run

    script = HERE / "train_tiny_script.py"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    run_dir = tmp_path / "run"
    killed = subprocess.run([sys.executable, str(script), str(run_dir), "30"], env=env, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]  # SIGKILL at its 30th loss call
    assert not (run_dir / "summary.json").exists()
    assert 0 < load_checkpoint(run_dir / "checkpoint.pt")["step"] < 15  # 2 loss calls per step
    summary = run(str(run_dir))
    reference = run(str(tmp_path / "ref"))

    a, b = load_checkpoint(tmp_path / "ref" / "checkpoint.pt"), load_checkpoint(run_dir / "checkpoint.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert without_times(summary) == without_times(reference)
    assert [without_times(r) for r in read_metrics(run_dir)] == [
        without_times(r) for r in read_metrics(tmp_path / "ref")
    ]


def test_finished_run_returns_its_summary_and_does_nothing(tmp_path):
    cfg = config(epochs=1)
    first = Trainer(tiny_model(), cfg, shift_data(32, 0), shift_data(16, 1), run_dir=tmp_path).fit()
    before = (tmp_path / "metrics.jsonl").read_text()
    model = tiny_model(seed=5)
    again = Trainer(model, cfg, shift_data(32, 0), run_dir=tmp_path, loss_fn=interrupting_loss(1)).fit()
    assert again == json.loads(json.dumps(first))
    assert (tmp_path / "metrics.jsonl").read_text() == before
    assert weights_equal(model, tiny_model(seed=5))
    trainer = Trainer(model, cfg, shift_data(32, 0), shift_data(16, 1), run_dir=tmp_path)
    assert trainer.load_weights()  # the finished run's final weights, to evaluate elsewhere
    assert trainer.evaluate() == first["final"]


def test_resume_with_a_changed_config_is_refused(tmp_path):
    cfg = config(checkpoint_every=2)
    with pytest.raises(Interrupt):
        Trainer(tiny_model(), cfg, shift_data(64, 0), run_dir=tmp_path, loss_fn=interrupting_loss(4)).fit()
    with pytest.raises(ValueError, match="lr"):
        Trainer(tiny_model(), config(checkpoint_every=2, lr=1.0), shift_data(64, 0), run_dir=tmp_path).fit()
    # progress and device may change
    Trainer(tiny_model(), config(checkpoint_every=2, progress=True), shift_data(64, 0), run_dir=tmp_path).fit()


class DictDataset(Dataset):
    """The same examples as a TensorDataset, but one dict per item (the default_collate path)."""

    def __init__(self, data):
        self.tokens, self.labels = data.tensors

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, i):
        return {"tokens": self.tokens[i], "labels": self.labels[i]}


def test_dict_datasets_give_the_same_run_as_tensor_datasets():
    data = shift_data(40, 0)
    a, b = tiny_model(), tiny_model()
    sa = Trainer(a, config(epochs=2, micro_batch_size=8), data, data).fit()
    sb = Trainer(b, config(epochs=2, micro_batch_size=8), DictDataset(data), DictDataset(data)).fit()
    assert weights_equal(a, b) and sa["final"] == sb["final"]


def test_default_eval_counts_only_labelled_positions():
    data = shift_data(20, 3)
    model = tiny_model()
    metrics = Trainer(model, config(eval_batch_size=7), data, data).evaluate()
    tokens, labels = data.tensors
    with torch.no_grad():
        logits = model(tokens)
    mask = labels != -100
    assert metrics["accuracy"] == pytest.approx((logits.argmax(-1) == labels)[mask].float().mean().item(), abs=1e-9)
    expected = F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100).item()
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5)


def test_custom_loss_logs_and_eval_fn_reach_the_metrics(tmp_path):
    from kernelized.train import default_loss

    def loss_fn(model, batch):
        loss, _ = default_loss(model, batch)
        return loss, {"twice_loss": 2 * loss.item()}

    def eval_fn(model, batch):
        return {"examples": (len(batch[0]), 1), "one": (len(batch[0]), len(batch[0]))}

    cfg = config(epochs=1, log_every=1, eval_batch_size=4)
    summary = Trainer(tiny_model(), cfg, shift_data(32, 0), shift_data(10, 1), tmp_path, loss_fn, eval_fn).fit()
    assert summary["final"] == {"examples": 10 / 3, "one": 1.0}  # eval batches of 4, 4, 2 -> (10, 3)
    train_lines = [r for r in read_metrics(tmp_path) if r["event"] == "train"]
    assert all(r["twice_loss"] == pytest.approx(2 * r["loss"]) for r in train_lines)


def test_bf16_autocast_runs_on_cpu():
    seen = []

    def loss_fn(model, batch):
        logits = model(batch[0])
        seen.append(logits.dtype)
        return F.cross_entropy(logits.float().reshape(-1, VOCAB), batch[1].reshape(-1), ignore_index=-100), {}

    summary = Trainer(tiny_model(), config(epochs=1, precision="bf16"), shift_data(32, 0), loss_fn=loss_fn).fit()
    assert seen and all(d == torch.bfloat16 for d in seen)
    assert math.isfinite(summary["train_loss"])


def test_a_non_finite_loss_stops_the_run_as_diverged(tmp_path):
    def loss_fn(model, batch):
        logits = model(batch[0])
        return logits.sum() * float("nan"), {}

    summary = Trainer(tiny_model(), config(epochs=2), shift_data(64, 0), shift_data(8, 1), tmp_path, loss_fn).fit()
    assert summary["status"] == "diverged" and summary["steps"] == 1


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="early_stop_metric"):
        Trainer(tiny_model(), config(early_stop_metric="accuracy", early_stop_threshold=0.9), shift_data(8, 0))
    with pytest.raises(ValueError, match="not an eval metric"):
        cfg = config(early_stop_metric="acc", early_stop_threshold=0.9)
        Trainer(tiny_model(), cfg, shift_data(16, 0), shift_data(8, 0)).fit()
    with pytest.raises(ValueError, match="train_data is empty"):
        Trainer(tiny_model(), config(), shift_data(0, 0))
    with pytest.raises(ValueError, match="model"):
        Trainer("not a model", config(), shift_data(8, 0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_run_learns_and_reports_peak_memory(tmp_path):
    cfg = config(epochs=6, lr=1e-2, device="auto", precision="bf16")
    summary = Trainer(tiny_model(), cfg, shift_data(256, 0), shift_data(64, 1), run_dir=tmp_path).fit()
    assert summary["device"].startswith("cuda") and summary["peak_memory_mb"] > 0
    assert summary["best"]["accuracy"] > 0.9


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_a_corrupt_checkpoint_names_its_path_and_how_to_start_over(tmp_path, damage):
    """Before: OSError: [Errno 22] or UnpicklingError, without the file's path."""
    from kernelized.train.checkpoint import CheckpointError, save_atomic

    path = tmp_path / "run" / "checkpoint.pt"
    save_atomic({"model": {"w": torch.zeros(1000)}, "step": 3}, path)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not a checkpoint" * 10, "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} is corrupt or truncated .*delete it to start"):
        load_checkpoint(path)
    assert issubclass(CheckpointError, ValueError)  # a CLI prints it as one error line (exit 2)

"""Schedules, weight-decay groups, config validation, atomic files, data order."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from kernelized import kernels
from kernelized.train import TrainConfig, epoch_order, learning_rate, parameter_groups, save_atomic
from kernelized.train.checkpoint import load_checkpoint


def lr(step, total=100, **kw):
    return learning_rate(step, TrainConfig(**kw), total)


def test_rsqrt_is_lras_constant_linear_warmup_rsqrt_decay():
    # LRA ListOps: base 0.05, warmup 1000 -> peak 0.05 / sqrt(1000) = 1.58e-3 at step 1000
    kw = dict(lr=0.05, warmup_steps=1000, schedule="rsqrt")
    assert lr(999, **kw) == pytest.approx(1.5811388e-3)
    assert lr(0, **kw) == pytest.approx(0.05 * (1 / 1000) / math.sqrt(1000))
    assert lr(499, **kw) == pytest.approx(0.05 * 0.5 / math.sqrt(1000))
    assert lr(3999, **kw) == pytest.approx(0.05 / math.sqrt(4000))
    assert lr(3999, **kw) == pytest.approx(lr(999, **kw) / 2)  # rsqrt: 4x the steps, half the rate


def test_cosine_linear_constant_with_warmup():
    kw = dict(lr=1.0, warmup_steps=10)
    for schedule in ("cosine", "linear", "constant"):
        assert [lr(s, schedule=schedule, **kw) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lr(10, schedule="cosine", **kw) == pytest.approx(1.0)
    assert lr(55, schedule="cosine", **kw) == pytest.approx(0.5)  # halfway through the 90 decay steps
    assert lr(55, schedule="linear", **kw) == pytest.approx(0.5)
    assert lr(99, schedule="cosine", **kw) == pytest.approx(0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert lr(99, schedule="constant", **kw) == 1.0
    assert lr(55, schedule="cosine", min_lr_ratio=0.1, **kw) == pytest.approx(0.55)
    values = [lr(s, schedule="cosine", **kw) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))


class WithFeatureMap(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.fm = kernels.build("rebased", head_dim=4, num_heads=2)
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.embed.weight  # tied


def test_weight_decay_only_on_matrices_outside_feature_maps():
    model = WithFeatureMap()
    names = {id(p): n for n, p in model.named_parameters()}
    groups = parameter_groups(model, 0.1)
    decayed = {names[id(p)] for p in groups[0]["params"]}
    plain = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert decayed == {"embed.weight", "proj.weight"}  # the tied head counted once
    assert {"proj.bias", "norm.weight", "norm.bias"} <= plain
    fm_params = {"fm." + n for n, _ in model.fm.named_parameters()}
    assert fm_params and fm_params <= plain
    with_fm = {names[id(p)] for p in parameter_groups(model, 0.1, decay_feature_maps=True)[0]["params"]}
    assert with_fm == {"embed.weight", "proj.weight"} | {n for n in fm_params if model.get_parameter(n).dim() >= 2}
    total = sum(len(g["params"]) for g in groups)
    assert total == len(list(model.parameters()))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(schedule="step"), "schedule"),
        (dict(precision="fp16"), "precision"),
        (dict(batch_size=0), "batch_size"),
        (dict(micro_batch_size=-1), "micro_batch_size"),
        (dict(lr=0), "lr"),
        (dict(betas=(0.9,)), "betas"),
        (dict(early_stop_metric="accuracy"), "early_stop_threshold"),
        (dict(device="tpu"), "device"),
        (dict(min_lr_ratio=2.0), "min_lr_ratio"),
        (dict(seed=-1), "seed"),
        (dict(seed=1.5), "seed"),
    ],
)
def test_bad_config_values_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TrainConfig(**kwargs)


def test_from_dict_refuses_unknown_keys_and_lists_valid_ones():
    assert TrainConfig.from_dict({"lr": 0.1, "betas": [0.9, 0.98]}).betas == (0.9, 0.98)
    with pytest.raises(ValueError, match=r"learning_rate.*valid keys.*'lr'"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_save_atomic_never_leaves_a_half_written_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_atomic({"step": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom while writing")

    with pytest.raises(RuntimeError, match="boom"):
        save_atomic({"step": 2, "bad": Unpicklable()}, path)
    assert load_checkpoint(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left behind


def test_epoch_order_is_a_seeded_permutation_per_epoch():
    a = epoch_order(50, seed=3, epoch=0)
    assert sorted(a.tolist()) == list(range(50))
    assert np.array_equal(a, epoch_order(50, seed=3, epoch=0))
    assert not np.array_equal(a, epoch_order(50, seed=3, epoch=1))
    assert not np.array_equal(a, epoch_order(50, seed=4, epoch=0))
    assert np.array_equal(epoch_order(5, 0, 0, shuffle=False), np.arange(5))


def test_optimizer_steps_use_the_scheduled_rate():
    from train_tiny import shift_data, tiny_model

    from kernelized.train import Trainer

    cfg = TrainConfig(max_steps=5, batch_size=8, lr=0.1, warmup_steps=2, schedule="linear", progress=False)
    trainer = Trainer(tiny_model(), cfg, shift_data(16, 0))
    seen = []
    original = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    torch.optim.AdamW.step = spy
    try:
        trainer.fit()
    finally:
        torch.optim.AdamW.step = original
    assert seen == pytest.approx([learning_rate(s, cfg, 5) for s in range(5)])
    assert seen == pytest.approx([0.05, 0.1, 0.1, 0.1 * 2 / 3, 0.1 / 3])

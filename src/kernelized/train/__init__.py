"""Training: Trainer, schedules, atomic checkpoints, exact resume, data-parallel launch.

>>> from kernelized.train import Trainer, TrainConfig
>>> summary = Trainer(model, TrainConfig(epochs=2), train_data, eval_data, run_dir="runs/x").fit()
"""

from kernelized.train import distributed
from kernelized.train.checkpoint import load_checkpoint, save_atomic, write_json_atomic
from kernelized.train.config import SCHEDULES, TrainConfig
from kernelized.train.optim import build_optimizer, learning_rate, parameter_groups
from kernelized.train.trainer import (
    Trainer,
    default_eval,
    default_loss,
    epoch_order,
    metric_mode,
    split_batch,
)

__all__ = [
    "SCHEDULES",
    "TrainConfig",
    "Trainer",
    "build_optimizer",
    "default_eval",
    "default_loss",
    "distributed",
    "epoch_order",
    "learning_rate",
    "load_checkpoint",
    "metric_mode",
    "parameter_groups",
    "save_atomic",
    "split_batch",
    "write_json_atomic",
]

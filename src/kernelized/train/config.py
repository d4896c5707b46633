"""TrainConfig: every knob of a training run, validated on construction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from kernelized._checks import check_choice, check_positive_int

SCHEDULES = ("cosine", "rsqrt", "constant", "linear")
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    """Settings of one training run (see :class:`kernelized.train.Trainer`).

    Steps and batches:
        epochs: passes over ``train_data``; ignored when ``max_steps`` is set.
        max_steps: optimizer steps to train for, cycling over epochs as needed (LRA counts steps);
            when set it replaces ``epochs`` as the length of the run and of the schedule.
        batch_size: examples per optimizer step (the global batch, over all processes).
        micro_batch_size: examples per forward/backward (per process); the gradients of the micro-batches
            are accumulated so that one step equals one step on the whole batch. None = whole batch.
        eval_batch_size: examples per evaluation forward; None = micro_batch_size or batch_size.
        drop_last: drop the last, smaller batch of each epoch.
        shuffle: draw a fresh permutation of the training set every epoch from (seed, epoch).

    Optimizer (AdamW) and schedule:
        lr: peak learning rate; for ``schedule="rsqrt"`` it is LRA's ``constant`` (peak = lr / sqrt(warmup)).
        weight_decay, betas, eps: AdamW's; decay applies to tensors with >= 2 dims only (matrices and
            embeddings), never to biases or norm weights (nanoGPT's rule).
        decay_feature_maps: also decay the >= 2-dim parameters of kernel feature maps (modules that are
            :class:`kernelized.kernels.FeatureMap`, e.g. learned spectral frequencies). Off by default:
            decay would pull learned frequencies towards 0, i.e. widen the kernel, which no paper asks for.
        schedule: "cosine" (to ``min_lr_ratio * lr``), "linear" (to ``min_lr_ratio * lr``), "constant" or
            "rsqrt" (LRA: ``lr * min(1, t/warmup) / sqrt(max(t, warmup))``); see :func:`learning_rate`.
        warmup_steps: linear warmup in optimizer steps (part of the rsqrt formula itself).
        min_lr_ratio: the final learning rate of "cosine" and "linear" as a fraction of ``lr``.
        grad_clip: max global gradient norm; None or 0 = no clipping.

    Evaluation, early stop, logging, checkpoints:
        eval_every: None = after every epoch; an int = every that many optimizer steps. The last step is
            always evaluated.
        early_stop_metric, early_stop_threshold, early_stop_mode: stop once an evaluation has
            ``metric >= threshold`` ("max") or ``metric <= threshold`` ("min"); MQAR: accuracy >= 0.99.
        log_every: optimizer steps between "train" lines in metrics.jsonl.
        checkpoint_every: optimizer steps between checkpoints; a checkpoint is also written after every
            evaluation and at the end. None = only those.

    Hardware:
        device: "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:1", ...
        precision: "fp32" or "bf16" (autocast to bfloat16 around forward passes; works on CPU too).
        seed: seeds torch/numpy/random at the start and the data order of every epoch.
        progress: show a tqdm bar (rank 0 only).
    """

    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    micro_batch_size: int | None = None
    eval_batch_size: int | None = None
    drop_last: bool = False
    shuffle: bool = True
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    decay_feature_maps: bool = False
    schedule: str = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    eval_every: int | None = None
    early_stop_metric: str | None = None
    early_stop_threshold: float | None = None
    early_stop_mode: str = "max"
    log_every: int = 10
    checkpoint_every: int | None = None
    device: str = "auto"
    precision: str = "fp32"
    seed: int = 0
    progress: bool = True
    extra: dict = field(default_factory=dict)  # free-form notes saved with the run, never read by the Trainer

    def __post_init__(self):
        check_positive_int("epochs", self.epochs)
        if self.max_steps is not None:
            check_positive_int("max_steps", self.max_steps)
        check_positive_int("batch_size", self.batch_size)
        for name in ("micro_batch_size", "eval_batch_size", "eval_every", "checkpoint_every"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        check_positive_int("log_every", self.log_every)
        check_positive_int("warmup_steps", self.warmup_steps, minimum=0)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("early_stop_mode", self.early_stop_mode, ("max", "min"))
        check_positive_int("seed", self.seed, minimum=0)
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if not (0.0 <= self.min_lr_ratio <= 1.0):
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.grad_clip is not None and self.grad_clip < 0:
            raise ValueError(f"grad_clip must be None or >= 0, got {self.grad_clip!r}")
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        if (self.early_stop_metric is None) != (self.early_stop_threshold is None):
            raise ValueError(
                "early_stop_metric and early_stop_threshold must be given together, got "
                f"early_stop_metric={self.early_stop_metric!r}, early_stop_threshold={self.early_stop_threshold!r}"
            )
        if not isinstance(self.device, str) or not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from a plain dict (a preset's ``train:`` section); unknown keys raise ValueError."""
        if not isinstance(values, dict):
            raise ValueError(f"train config must be a mapping, got {type(values).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"unknown train config key(s) {unknown}; valid keys are {names}")
        return cls(**values)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

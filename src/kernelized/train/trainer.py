"""The Trainer: one loop for every experiment, with exact resume and data parallelism.

>>> trainer = Trainer(model, TrainConfig(epochs=4, batch_size=64), train_data, eval_data, run_dir="runs/x")
>>> summary = trainer.fit()   # resumes from runs/x/checkpoint.pt; a finished run returns its summary.json

Data order. Epoch ``e`` visits the training set in the permutation drawn from ``(seed, e)``, in global
batches of ``batch_size`` examples; step ``s`` is batch ``s % steps_per_epoch`` of epoch
``s // steps_per_epoch``. The step number alone therefore says where a resumed run picks up.

Exact resume. The checkpoint holds the model, the optimizer, the step, the best metrics, the early-stop
state, the logging accumulators, the length of metrics.jsonl and every process's RNG states; the learning
rate is a pure function of the step (:func:`kernelized.train.optim.learning_rate`). A run killed at any
point and started again with the same command redoes the steps since its last checkpoint bit for bit and
ends with the same weights and metrics as a run never interrupted; metrics.jsonl lines written after the
checkpoint are dropped on resume.

Loss scaling. ``loss_fn`` returns the mean loss over its micro-batch; each micro-batch's loss is weighted by
its share of the global batch, so accumulation (and sharding over processes) equals one step on the whole
batch whenever the loss is a mean over examples -- or over tokens when every example carries the same number
of labelled tokens (MQAR, LM with full labels). Token-mean losses over ragged labels are then weighted
per example, not per token.

Data parallel. Under torchrun each process takes a contiguous slice of every global batch, gradients are
summed across processes (:func:`distributed.all_reduce_gradients`), evaluation sums and counts are summed,
and only rank 0 writes files or shows progress.

Files in ``run_dir``: ``metrics.jsonl`` (one JSON object per event: ``{"event": "train", step, epoch, lr,
loss, grad_norm, elapsed, ...logs}`` every ``log_every`` steps and ``{"event": "eval", step, epoch, lr,
train_loss, elapsed, <metric>: value, ...}`` after each evaluation), ``checkpoint.pt`` and, once finished,
``summary.json`` (see :meth:`Trainer.fit`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset, default_collate
from tqdm import tqdm

from kernelized.train import distributed
from kernelized.train.checkpoint import (
    load_checkpoint,
    rng_state,
    save_atomic,
    seed_everything,
    set_rng_state,
    write_json_atomic,
)
from kernelized.train.config import TrainConfig
from kernelized.train.memory import keep_freed_memory, peak_rss_mb, reset_peak_rss
from kernelized.train.optim import build_optimizer, learning_rate

LossFn = Callable[[nn.Module, object], tuple[torch.Tensor, dict]]
EvalFn = Callable[[nn.Module, object], dict[str, tuple]]

# Config fields that may change between a run and its resume without breaking exactness.
RESUMABLE_CHANGES = ("progress", "device", "extra")


# -- batches ---------------------------------------------------------------------------------------
def split_batch(batch) -> tuple[tuple, dict, torch.Tensor]:
    """A batch -> (model args, model kwargs, labels).

    Tuples/lists: the last element is the labels, the others are positional inputs (``(tokens, labels)``,
    ``(x1, x2, labels)``). Dicts: ``labels`` is the labels, the other entries are keyword inputs.
    """
    if isinstance(batch, dict):
        if "labels" not in batch:
            raise ValueError(f"a dict batch needs a 'labels' entry, got keys {sorted(batch)}")
        return (), {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return tuple(batch[:-1]), {}, batch[-1]
    raise ValueError(f"a batch must be (inputs..., labels) or a dict with 'labels', got {type(batch).__name__}")


def _logits_and_labels(model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
    args, kwargs, labels = split_batch(batch)
    out = model(*args, **kwargs)
    logits = out[0] if isinstance(out, (tuple, list)) else out
    if logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"model output must be logits [..., V] matching labels {tuple(labels.shape)}, got {tuple(logits.shape)}"
        )
    return logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1)


def default_loss(model: nn.Module, batch) -> tuple[torch.Tensor, dict]:
    """Mean cross-entropy of ``model(inputs)`` logits ``[B, T, V]`` (or ``[B, C]``) over labels != -100."""
    logits, labels = _logits_and_labels(model, batch)
    if not (labels != -100).any():
        return logits.sum() * 0.0, {}  # nothing labelled in this micro-batch: zero loss, zero gradient
    return F.cross_entropy(logits, labels, ignore_index=-100), {}


def default_eval(model: nn.Module, batch) -> dict[str, tuple]:
    """``{"loss": (sum of cross-entropy, count), "accuracy": (correct, count)}`` over labels != -100."""
    logits, labels = _logits_and_labels(model, batch)
    mask = labels != -100
    loss_sum = F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
    correct = ((logits.argmax(-1) == labels) & mask).sum()
    count = mask.sum()
    return {"loss": (loss_sum, count), "accuracy": (correct, count)}


def metric_mode(name: str) -> str:
    """ "min" for losses and perplexities (names containing 'loss', 'ppl', 'perplexity', 'error'), else "max"."""
    lowered = name.lower()
    return "min" if any(s in lowered for s in ("loss", "ppl", "perplexity", "error")) else "max"


def epoch_order(num_examples: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The order in which epoch ``epoch`` visits the examples: a permutation drawn from (seed, epoch)."""
    if not shuffle:
        return np.arange(num_examples)
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def fetch(dataset: Dataset, indices: np.ndarray):
    """The examples ``indices`` of a map-style dataset as one batch (fast path for TensorDataset)."""
    if isinstance(dataset, TensorDataset):
        index = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t[index] for t in dataset.tensors)
    return default_collate([dataset[int(i)] for i in indices])


def to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _num_tokens(batch) -> int:
    """Tokens in a batch: the elements of its first integer tensor of rank >= 2 (0 when there is none)."""
    items = list(batch.values()) if isinstance(batch, dict) else batch if isinstance(batch, (tuple, list)) else [batch]
    for x in items:
        if isinstance(x, torch.Tensor) and x.dim() >= 2 and not x.is_floating_point() and x.dtype != torch.bool:
            return x.numel()
    return 0


def resolve_device(device: str) -> torch.device:
    """ "auto" -> this process's GPU when CUDA is present, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{distributed.local_rank()}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available")
    return torch.device(device)


def _check_dataset(name: str, data) -> None:
    if data is None:
        return
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        kind = type(data).__name__
        raise ValueError(f"{name} must be a map-style Dataset (with __len__ and __getitem__), got {kind}")
    if len(data) == 0:
        raise ValueError(f"{name} is empty")


class Trainer:
    """Train ``model`` on ``train_data`` by ``cfg``; see the module docstring for the guarantees.

    Args:
        model: any nn.Module; with the default loss it maps the batch inputs to logits ``[B, T, V]`` or ``[B, C]``.
        cfg: a :class:`TrainConfig` (default settings when None).
        train_data, eval_data: map-style datasets, e.g. ``TensorDataset(inputs [N, T], labels [N, T])``.
        run_dir: where metrics, checkpoints and the summary go; None = nothing written, no resume.
        loss_fn: ``loss_fn(model, batch) -> (mean loss, {name: float})``; default: cross-entropy.
        eval_fn: ``eval_fn(model, batch) -> {name: (sum, count)}``, aggregated as sum / count over the whole
            eval set (and all processes); default: loss and accuracy over labels != -100.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig | None = None,
        train_data: Dataset | None = None,
        eval_data: Dataset | None = None,
        run_dir: str | Path | None = None,
        loss_fn: LossFn | None = None,
        eval_fn: EvalFn | None = None,
    ):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        keep_freed_memory()  # large tensors reuse freed pages instead of faulting fresh ones in every step
        self.cfg = cfg if cfg is not None else TrainConfig()
        if not isinstance(self.cfg, TrainConfig):
            raise ValueError(f"cfg must be a TrainConfig, got {type(self.cfg).__name__}")
        if train_data is None:
            raise ValueError("train_data is required")
        _check_dataset("train_data", train_data)
        _check_dataset("eval_data", eval_data)
        if self.cfg.early_stop_metric is not None and eval_data is None:
            raise ValueError(f"early_stop_metric={self.cfg.early_stop_metric!r} needs eval_data, got None")
        if self.cfg.drop_last and len(train_data) < self.cfg.batch_size:
            raise ValueError(
                f"drop_last=True needs at least batch_size={self.cfg.batch_size} examples, got {len(train_data)}"
            )
        self.model = model
        self.train_data, self.eval_data = train_data, eval_data
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.loss_fn = loss_fn or default_loss
        self.eval_fn = eval_fn or default_eval
        n, bs = len(train_data), self.cfg.batch_size
        self.steps_per_epoch = n // bs if self.cfg.drop_last else math.ceil(n / bs)
        self.total_steps = self.cfg.max_steps or self.cfg.epochs * self.steps_per_epoch
        self.device: torch.device | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    # -- paths -------------------------------------------------------------------------------------
    def _path(self, name: str) -> Path | None:
        return self.run_dir / name if self.run_dir is not None else None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- setup and state ---------------------------------------------------------------------------
    def setup(self) -> None:
        """Join the process group (torchrun), pick the device, move the model, build the optimizer. Idempotent."""
        if self.optimizer is not None:
            return
        distributed.init_from_env()
        self.rank, self.world_size = distributed.get_rank(), distributed.get_world_size()
        self.device = resolve_device(self.cfg.device)
        self.model.to(self.device)
        self.optimizer = build_optimizer(self.model, self.cfg)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.autocast_dtype = torch.bfloat16 if self.cfg.precision == "bf16" else None
        # progress counters; all saved in the checkpoint
        self.step = 0
        self.status = "running"  # -> "finished" | "early_stopped" | "diverged"
        self.best: dict[str, dict] = {}  # name -> {"value", "step", "epoch"}
        self.last_eval: dict[str, float] = {}
        self.log_acc = {"steps": 0, "loss": 0.0, "logs": {}}  # since the last "train" line
        self.eval_acc = {"steps": 0, "loss": 0.0}  # since the last evaluation
        self.counters = {"examples": 0, "tokens": 0, "train_time": 0.0, "elapsed": 0.0, "last_loss": None}

    def _state(self) -> dict:
        return {
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "batch_in_epoch": self.step % self.steps_per_epoch,
            "status": self.status,
            "best": self.best,
            "last_eval": self.last_eval,
            "log_acc": self.log_acc,
            "eval_acc": self.eval_acc,
            "counters": {**self.counters, "elapsed": self._elapsed()},
        }

    def _elapsed(self) -> float:
        return self.counters["elapsed"] + time.perf_counter() - self._session_start

    def save_checkpoint(self) -> None:
        """Write run_dir/checkpoint.pt atomically (every process must call it: RNG states are gathered)."""
        rngs = distributed.gather_objects(rng_state())
        if self.run_dir is None or not self.is_main:
            return
        metrics = self._path("metrics.jsonl")
        ckpt = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "config": self.cfg.to_dict(),
            "world_size": self.world_size,
            "rng": rngs,
            "metrics_bytes": metrics.stat().st_size if metrics.exists() else 0,
            **self._state(),
        }
        save_atomic(ckpt, self._path("checkpoint.pt"))

    def _resume(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        now, then = self.cfg.to_dict(), ckpt["config"]
        changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and now.get(k) != then.get(k))
        if changed:
            diffs = ", ".join(f"{k}: {then.get(k)!r} -> {now.get(k)!r}" for k in changed)
            raise ValueError(f"cannot resume {path}: the config differs from the checkpoint's ({diffs})")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.step, self.status = ckpt["step"], ckpt["status"]
        self.best, self.last_eval = ckpt["best"], ckpt["last_eval"]
        self.log_acc, self.eval_acc, self.counters = ckpt["log_acc"], ckpt["eval_acc"], ckpt["counters"]
        rngs = ckpt["rng"]
        set_rng_state(rngs[min(self.rank, len(rngs) - 1)])
        metrics = self._path("metrics.jsonl")
        if self.is_main and metrics.exists():
            with open(metrics, "r+b") as f:  # drop the lines written after the checkpoint
                f.truncate(ckpt["metrics_bytes"])

    def load_weights(self) -> bool:
        """Load the model weights of run_dir/checkpoint.pt (the last step of a finished run); False if none.

        ``fit()`` on a finished run returns its summary without touching the model; call this first to
        evaluate that run's final model on other data (``trainer.evaluate(test_data)``).
        """
        path = self._path("checkpoint.pt")
        if path is None or not path.exists():
            return False
        self.setup()
        self.model.load_state_dict(load_checkpoint(path)["model"])
        return True

    def _log(self, record: dict) -> None:
        if self.run_dir is None or not self.is_main:
            return
        with open(self._path("metrics.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train to the end (or early stop), resuming from run_dir/checkpoint.pt when present.

        Returns the summary (also run_dir/summary.json): ``status`` ("finished", "early_stopped",
        "diverged"), ``steps``, ``epochs`` (float), ``best`` ({metric: best value over evaluations}),
        ``best_epoch`` and ``best_step`` (where each best was reached), ``final`` (the last evaluation),
        ``train_loss`` (mean over the last ``log_every`` steps), ``wall_time_s``, ``train_time_s``,
        ``steps_per_s``, ``examples_per_s``, ``tokens_per_s`` (None when inputs are not token ids),
        ``peak_memory_mb`` (CUDA) and ``peak_rss_mb`` (peak resident memory since this fit() started, on Linux;
        the process's lifetime peak elsewhere), ``num_params``,
        ``device``, ``world_size``.
        A run whose summary.json exists returns it and does nothing.
        """
        summary_path = self._path("summary.json")
        if summary_path is not None and summary_path.exists():
            return json.loads(summary_path.read_text())
        self.setup()
        self._session_start = time.perf_counter()
        reset_peak_rss()  # the summary's peak_rss_mb is this session's peak, not earlier runs' in the same process
        if self.run_dir is not None and self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path = self._path("checkpoint.pt")
        if ckpt_path is not None and ckpt_path.exists():
            self._resume(ckpt_path)
        else:
            seed_everything(self.cfg.seed + self.rank)
            distributed.broadcast_module(self.model)
            metrics = self._path("metrics.jsonl")
            if metrics is not None and self.is_main and metrics.exists():
                metrics.unlink()  # left by a run killed before its first checkpoint
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not (self.cfg.progress and self.is_main),
            desc=self.run_dir.name if self.run_dir is not None else "train",
            dynamic_ncols=True,
            file=sys.stderr,
        )
        order, order_epoch = None, None
        while self.step < self.total_steps and self.status == "running":
            epoch, batch = divmod(self.step, self.steps_per_epoch)
            if order_epoch != epoch:
                order = epoch_order(len(self.train_data), self.cfg.seed, epoch, self.cfg.shuffle)
                order_epoch = epoch
            bs = self.cfg.batch_size
            indices = order[batch * bs : (batch + 1) * bs]
            self._train_step(indices)
            bar.update(1)
            shown = {"loss": self.counters["last_loss"], **self.last_eval}
            bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()})
            self._after_step()
        bar.close()
        return self._finish()

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast_dtype is not None)

    def _train_step(self, indices: np.ndarray) -> None:
        """One optimizer step on the global batch ``indices`` (this process's slice, in micro-batches)."""
        t0 = time.perf_counter()
        self.model.train()
        shard = np.array_split(indices, self.world_size)[self.rank]
        micro = self.cfg.micro_batch_size or max(len(shard), 1)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)  # no host sync per micro-batch
        examples = tokens = 0
        logs: dict[str, float] = {}
        for start in range(0, len(shard), micro):
            mb = shard[start : start + micro]
            batch = to_device(fetch(self.train_data, mb), self.device)
            with self._autocast():
                loss, mb_logs = self.loss_fn(self.model, batch)
            weight = len(mb) / len(indices)
            (loss * weight).backward()
            loss_sum += loss.detach().double() * weight
            examples, tokens = examples + len(mb), tokens + _num_tokens(batch)
            for k, v in (mb_logs or {}).items():
                logs[k] = logs.get(k, 0.0) + float(v) * weight
        distributed.all_reduce_gradients(self.params)
        totals = torch.tensor([loss_sum.item(), examples, tokens], dtype=torch.float64, device=self.device)
        distributed.all_reduce_sum(totals)  # on the device: nccl reduces CUDA tensors only
        totals = totals.cpu()
        if self.world_size > 1:
            gathered = distributed.gather_objects(logs)
            logs = {k: sum(g.get(k, 0.0) for g in gathered) for k in sorted(set().union(*gathered))}
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm).item()
        lr = learning_rate(self.step, self.cfg, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

        loss = totals[0].item()
        self.step += 1
        self.counters["examples"] += int(totals[1].item())
        self.counters["tokens"] += int(totals[2].item())
        self.counters["train_time"] += time.perf_counter() - t0
        self.counters["last_loss"] = loss
        self._lr, self._grad_norm = lr, grad_norm
        self.log_acc["steps"] += 1
        self.log_acc["loss"] += loss
        self.log_acc["grad_norm"] = grad_norm
        for k, v in logs.items():
            self.log_acc["logs"][k] = self.log_acc["logs"].get(k, 0.0) + v
        self.eval_acc["steps"] += 1
        self.eval_acc["loss"] += loss
        if not math.isfinite(loss):
            self.status = "diverged"

    def _epoch_float(self) -> float:
        return round(self.step / self.steps_per_epoch, 4)

    def _after_step(self) -> None:
        """Evaluate, log and checkpoint as the config asks, after optimizer step ``self.step``."""
        cfg, step = self.cfg, self.step
        end_of_epoch = step % self.steps_per_epoch == 0
        every = cfg.eval_every
        want_eval = (every is None and end_of_epoch) or (every is not None and step % every == 0)
        want_eval = want_eval or step == self.total_steps
        eval_record = None
        if self.eval_data is not None and want_eval and self.status != "diverged":
            eval_record = self._evaluate_and_track()  # may set status = "early_stopped"
        last = step == self.total_steps or self.status != "running"
        if step % cfg.log_every == 0 or last:
            acc = self.log_acc
            n = max(acc["steps"], 1)
            record = {"event": "train", "step": step, "epoch": self._epoch_float(), "lr": self._lr}
            record.update(loss=acc["loss"] / n, grad_norm=acc.get("grad_norm"), elapsed=round(self._elapsed(), 3))
            record.update({k: v / n for k, v in acc["logs"].items()})
            self._log(record)
            self.log_acc = {"steps": 0, "loss": 0.0, "logs": {}}
            self.counters["train_loss"] = record["loss"]
        if eval_record is not None:
            self._log(eval_record)
        periodic = cfg.checkpoint_every is not None and step % cfg.checkpoint_every == 0
        if eval_record is not None or end_of_epoch or periodic or last:
            self.save_checkpoint()

    def _evaluate_and_track(self) -> dict:
        """Evaluate, update the best metrics and the early-stop state; returns the "eval" record to log."""
        metrics = self.evaluate()
        n = max(self.eval_acc["steps"], 1)
        record = {"event": "eval", "step": self.step, "epoch": self._epoch_float(), "lr": self._lr}
        record.update(train_loss=self.eval_acc["loss"] / n, elapsed=round(self._elapsed(), 3), **metrics)
        self.eval_acc = {"steps": 0, "loss": 0.0}
        self.last_eval = metrics
        for name, value in metrics.items():
            old = self.best.get(name)
            if old is None or (math.isnan(old["value"]) and not math.isnan(value)):
                better = True
            elif metric_mode(name) == "max":
                better = value > old["value"]
            else:
                better = value < old["value"]
            if better:  # ties keep the earlier evaluation
                self.best[name] = {"value": value, "step": self.step, "epoch": self._epoch_float()}
        name, threshold = self.cfg.early_stop_metric, self.cfg.early_stop_threshold
        if name is not None:
            if name not in metrics:
                raise ValueError(f"early_stop_metric {name!r} is not an eval metric; the metrics are {sorted(metrics)}")
            value = metrics[name]
            if (value >= threshold) if self.cfg.early_stop_mode == "max" else (value <= threshold):
                self.status = "early_stopped"
        return record

    @torch.no_grad()
    def evaluate(self, data: Dataset | None = None) -> dict[str, float]:
        """Aggregate ``eval_fn`` over ``data`` (default: eval_data) and all processes: {name: sum / count}."""
        self.setup()
        data = data if data is not None else self.eval_data
        if data is None:
            raise ValueError("evaluate needs data: pass it or give the Trainer eval_data")
        was_training = self.model.training
        self.model.eval()
        shard = np.array_split(np.arange(len(data)), self.world_size)[self.rank]
        size = self.cfg.eval_batch_size or self.cfg.micro_batch_size or self.cfg.batch_size
        sums: dict[str, list[float]] = {}
        for start in range(0, len(shard), size):
            batch = to_device(fetch(data, shard[start : start + size]), self.device)
            with self._autocast():
                out = self.eval_fn(self.model, batch)
            for k, (s, c) in out.items():
                acc = sums.setdefault(k, [0.0, 0.0])
                acc[0] += float(s)
                acc[1] += float(c)
        if self.world_size > 1:
            gathered = distributed.gather_objects(sums)
            sums = {}
            for part in gathered:
                for k, (s, c) in part.items():
                    acc = sums.setdefault(k, [0.0, 0.0])
                    acc[0] += s
                    acc[1] += c
        self.model.train(was_training)
        return {k: (s / c if c > 0 else float("nan")) for k, (s, c) in sorted(sums.items())}

    def _finish(self) -> dict:
        if self.status == "running":
            self.status = "finished"
        c = self.counters
        peak = torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None
        rss = peak_rss_mb()
        train_time = max(c["train_time"], 1e-9)
        summary = {
            "status": self.status,
            "steps": self.step,
            "epochs": self._epoch_float(),
            "total_steps": self.total_steps,
            "best": {k: v["value"] for k, v in self.best.items()},
            "best_epoch": {k: v["epoch"] for k, v in self.best.items()},
            "best_step": {k: v["step"] for k, v in self.best.items()},
            "final": self.last_eval,
            "train_loss": c.get("train_loss"),
            "wall_time_s": round(self._elapsed(), 3),
            "train_time_s": round(c["train_time"], 3),
            "steps_per_s": self.step / train_time if c["train_time"] > 0 else None,
            "examples_per_s": c["examples"] / train_time,
            "tokens_per_s": c["tokens"] / train_time if c["tokens"] else None,
            "peak_memory_mb": peak,
            "peak_rss_mb": rss,
            "num_params": sum(p.numel() for p in self.params),
            "device": str(self.device),
            "world_size": self.world_size,
        }
        if self.run_dir is not None and self.is_main:
            write_json_atomic(summary, self._path("summary.json"))
        distributed.barrier()  # every process returns after the summary exists
        return summary

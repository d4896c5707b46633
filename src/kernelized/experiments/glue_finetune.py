"""Fine-tuning for ``kernelized glue``: one run per (task, kernel, learning rate, seed), from a pretraining run.

The run reads its pretraining run's tokenizer and encoder (``pretrain_dir``; its id ``pretrain_run`` is part of
this run's identity, so a changed pretraining config means new fine-tuning runs), encodes the task's examples as
``[CLS] a [SEP] (b [SEP])`` with segment ids 0 / 1, puts a classification head (or STS-B's one-output regression
head) on the [CLS] state and trains everything with the framework's trainer (cross-entropy, or mean squared
error for regression). The final model is scored on every dev split (and rotten-tomatoes' test split) with the
task's official metrics (:mod:`kernelized.eval.glue_metrics`); ``score`` is the task's GLUE number (the mean of
its metrics; MNLI: of its matched and mismatched accuracies). ``finetune.init: scratch`` trains the same model
from a random initialisation (the control that says what pretraining bought).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from kernelized.data import glue
from kernelized.data.wordpiece import WordPiece
from kernelized.eval import glue_metrics
from kernelized.experiments.glue_pretrain import load_pretrained
from kernelized.models.classifier import EncoderClassifier
from kernelized.train import TrainConfig, Trainer
from kernelized.train.trainer import fetch


def encode(tok: WordPiece, task: glue.Task, examples: list, max_len: int) -> TensorDataset:
    """``(tokens, segments, labels)``: the pieces after [CLS] (the classifier prepends its own [CLS]), right-padded;
    labels int64 (classes) or float32 (regression)."""
    ids, segments = tok.encode_batch([(a, b) for a, b, _ in examples], max_len)
    labels = torch.tensor([y for _, _, y in examples], dtype=torch.float32 if task.is_regression else torch.long)
    return TensorDataset(ids[:, 1:].contiguous(), segments[:, 1:].contiguous(), labels)


def _outputs(model: EncoderClassifier, batch) -> tuple[torch.Tensor, torch.Tensor]:
    tokens, segments, labels = batch
    return model(tokens, segments=segments).float(), labels


def classification_loss(model, batch):
    logits, labels = _outputs(model, batch)
    return F.cross_entropy(logits, labels), {}


def regression_loss(model, batch):
    out, labels = _outputs(model, batch)
    return F.mse_loss(out[:, 0], labels), {}


def classification_eval(model, batch) -> dict[str, tuple]:
    logits, labels = _outputs(model, batch)
    n = torch.tensor(labels.numel())
    return {
        "loss": (F.cross_entropy(logits, labels, reduction="sum"), n),
        "accuracy": ((logits.argmax(-1) == labels).sum(), n),
    }


def regression_eval(model, batch) -> dict[str, tuple]:
    out, labels = _outputs(model, batch)
    return {"mse": (F.mse_loss(out[:, 0], labels, reduction="sum"), torch.tensor(labels.numel()))}


@torch.no_grad()
def predict(model: EncoderClassifier, data: TensorDataset, batch_size: int, regression: bool) -> np.ndarray:
    """Predicted class ids (or scores) for every example, in order."""
    model.eval()
    out = []
    for start in range(0, len(data), batch_size):
        logits, _ = _outputs(model, fetch(data, np.arange(start, min(start + batch_size, len(data)))))
        out.append(logits[:, 0] if regression else logits.argmax(-1))
    return torch.cat(out).numpy()


def score_splits(model, task: glue.Task, splits: dict[str, TensorDataset], batch_size: int) -> dict:
    """``{split: {metric: value}}`` for every split but train, and ``score``: the task's GLUE number (dev)."""
    scores = {}
    for name, data in splits.items():
        if name == "train":
            continue
        predictions = predict(model, data, batch_size, task.is_regression)
        targets = data.tensors[-1].numpy()
        scores[name] = {m: glue_metrics.metric(m, predictions, targets) for m in task.metrics}
    dev = [glue_metrics.task_score(scores[s]) for s in task.dev_splits]
    test = glue_metrics.task_score(scores["test"]) if "test" in scores else None
    return {"scores": scores, "score": float(np.mean(dev)), "test_score": test}


def load_splits(config: dict, tok: WordPiece) -> dict[str, TensorDataset]:
    task, data, max_len = glue.get_task(config["task"]), config["finetune"]["data"], config["finetune"]["max_len"]
    out = {}
    for split in glue.splits_of(task.name):
        examples = glue.load_examples(task.name, split, data.get("path"), data["source"], data["split_seed"])
        out[split] = encode(tok, task, examples, max_len)
    limit = data.get("train_examples")
    if limit is not None and limit < len(out["train"]):
        out["train"] = TensorDataset(*(t[:limit] for t in out["train"].tensors))
    return out


def build_classifier(config: dict, pretrain_dir: Path) -> tuple[EncoderClassifier, WordPiece]:
    """The classifier on the pretrained encoder (``finetune.init: pretrained``) or a fresh one (``scratch``)."""
    _, tok, encoder_cfg, encoder_state = load_pretrained(pretrain_dir)
    task, f = glue.get_task(config["task"]), config["finetune"]
    if f["max_len"] > encoder_cfg.max_len:
        raise ValueError(
            f"finetune.max_len ({f['max_len']}) must be <= the pretrained model's max_len ({encoder_cfg.max_len})"
        )
    torch.manual_seed(config["seed"])
    model = EncoderClassifier(
        encoder_cfg,
        task.num_labels,
        pooling="cls",
        head_hidden=f.get("head_hidden"),
        pad_id=tok.pad_id,
        cls_id=tok.cls_id,
    )
    if f["init"] == "pretrained":
        model.encoder.load_state_dict(encoder_state)
    return model, tok


def run_finetune(config: dict, run_dir: Path) -> dict:
    """Fine-tune one (task, kernel, lr, seed) and score it (resumable); returns the summary with the scores."""
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    task = glue.get_task(config["task"])
    model, tok = build_classifier(config, Path(config["pretrain_dir"]))
    splits = load_splits(config, tok)
    train_cfg = TrainConfig.from_dict({**config["finetune"]["train"], "seed": config["seed"]})
    losses = (regression_loss, regression_eval) if task.is_regression else (classification_loss, classification_eval)
    dev = splits[task.dev_splits[0]]
    trainer = Trainer(
        model, train_cfg, splits["train"], dev, run_dir=Path(run_dir) / "train", loss_fn=losses[0], eval_fn=losses[1]
    )
    summary = trainer.fit()
    trainer.load_weights()
    batch = train_cfg.eval_batch_size or train_cfg.batch_size
    scores = score_splits(trainer.model, task, splits, batch)
    majority = None if task.is_regression else float(np.bincount(dev.tensors[-1].numpy()).max() / len(dev))
    return {
        **summary,
        "task": task.name,
        "kernel": config["kernel"],
        "seed": config["seed"],
        **scores,
        "dev_majority": majority,
        "num_train": len(splits["train"]),
    }

"""A tiny task and model for the trainer tests: predict (token + 1) mod V at every position."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

VOCAB = 16


def shift_data(num_examples: int, seed: int, length: int = 8) -> TensorDataset:
    """tokens [N, T] -> labels [N, T] = (tokens + 1) mod V; a few labels are -100 (ignored)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (num_examples, length), generator=g)
    labels = (tokens + 1) % VOCAB
    labels[:, 0] = -100
    return TensorDataset(tokens, labels)


class TinyModel(nn.Module):
    """Embedding -> LayerNorm -> Linear: logits [B, T, V]; optional dropout to exercise the RNG."""

    def __init__(self, dim: int = 16, dropout: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, VOCAB)
        self.spare = nn.Linear(4, 4)  # never used in forward: no gradient, so AdamW must leave it alone

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.norm(self.embed(tokens))))


def tiny_model(seed: int = 0, **kwargs) -> TinyModel:
    torch.manual_seed(seed)
    return TinyModel(**kwargs)


def weights_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def max_weight_diff(a: nn.Module, b: nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)


def read_metrics(run_dir) -> list[dict]:
    import json
    from pathlib import Path

    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


TIME_KEYS = ("elapsed", "wall_time_s", "train_time_s", "steps_per_s", "examples_per_s", "tokens_per_s", "peak_rss_mb")


def without_times(record: dict) -> dict:
    """A metrics line or summary without the wall-clock fields, which legitimately differ between runs."""
    return {k: v for k, v in record.items() if k not in TIME_KEYS}


def ddp_config():
    from kernelized.train import TrainConfig

    # 97 examples: 6 full batches of 16, then 1 example, so one process gets an empty slice
    return TrainConfig(epochs=2, batch_size=16, micro_batch_size=3, lr=1e-2, progress=False, log_every=1)


def ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """One process of a torchrun-like launch: the env vars torchrun would set, then the same code as 1 process."""
    import os
    from pathlib import Path

    from kernelized.train import Trainer, default_loss, distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank))
    os.environ.update(WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    out = Path(out_dir)
    train, val = shift_data(97, 0), shift_data(30, 1)
    model = tiny_model(seed=rank)  # different starting weights: the Trainer must broadcast rank 0's
    Trainer(model, ddp_config(), train, val, run_dir=out / "ddp").fit()
    torch.save(model.state_dict(), out / f"rank{rank}.pt")

    # exact resume with 2 processes and dropout: each process's RNG state must come back
    cfg = ddp_config()
    cfg.checkpoint_every = 3
    whole = tiny_model(dropout=0.1)
    Trainer(whole, cfg, train, val, run_dir=out / "whole").fit()
    calls = [0]

    def dying_loss(model, batch):
        calls[0] += 1
        if calls[0] == 14:  # the 5th step of 3 micro-batches: after the checkpoint at step 3
            raise KeyboardInterrupt
        return default_loss(model, batch)

    try:
        Trainer(tiny_model(dropout=0.1), cfg, train, val, run_dir=out / "resumed", loss_fn=dying_loss).fit()
    except KeyboardInterrupt:
        pass
    resumed = tiny_model(seed=7, dropout=0.1)
    Trainer(resumed, cfg, train, val, run_dir=out / "resumed").fit()
    torch.save({"whole": whole.state_dict(), "resumed": resumed.state_dict()}, out / f"resume{rank}.pt")
    distributed.cleanup()

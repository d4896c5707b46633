"""Train the tiny task in its own process: ``python train_tiny_script.py RUN_DIR KILL_AT``.

KILL_AT > 0: the process sends itself SIGKILL at that call of the loss function (no cleanup, no atexit),
like a run killed by the OS or a user. The resume tests run it, then run it again with KILL_AT = 0.
"""

import os
import signal
import sys

import torch
from train_tiny import shift_data, tiny_model

from kernelized.train import TrainConfig, Trainer, default_loss


def run(run_dir: str, kill_at: int = 0) -> dict:
    """Train the tiny task in ``run_dir``; SIGKILL this process at loss call ``kill_at`` (0 = never)."""
    calls = [0]

    def loss_fn(model, batch):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return default_loss(model, batch)

    cfg = TrainConfig(epochs=3, batch_size=16, micro_batch_size=8, lr=1e-2, checkpoint_every=5, eval_every=4)
    cfg.progress, cfg.log_every = False, 1
    return Trainer(tiny_model(dropout=0.1), cfg, shift_data(112, 0), shift_data(32, 1), run_dir, loss_fn).fit()


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(sys.argv[1], int(sys.argv[2]))

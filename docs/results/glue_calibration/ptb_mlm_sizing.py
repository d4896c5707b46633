"""Sizing the GLUE `cpu` tier: masked-LM pretraining on PTB (8k WordPiece, 128-token windows) for one softmax and
one ReBased encoder, d_model 128, 2 layers, 4 heads, batch 32, lr 1e-3, 600 steps, 1 thread each run.

    .venv/bin/python docs/results/glue_calibration/ptb_mlm_sizing.py    # prints steps/s, masked accuracy, perplexity
"""

import math
import time

import torch

from kernelized.data import mlm, penn_treebank, wordpiece
from kernelized.data.fetch import verified_folder
from kernelized.models.backbone import LanguageModel
from kernelized.models.classifier import encoder_config
from kernelized.train import TrainConfig, Trainer

torch.set_num_threads(1)
splits = penn_treebank.read_splits(verified_folder("ptb"))
tok = wordpiece.train_wordpiece(splits["train"], 8000)
kw = {"mask_id": wordpiece.MASK_ID, "vocab_size": tok.vocab_size, "special_ids": range(5), "first_random_id": 5}


def windows(lines):
    return mlm.pack_windows([tok.tokens(s) for s in lines], 128, wordpiece.CLS_ID, wordpiece.SEP_ID, wordpiece.PAD_ID)


train = mlm.masked_dataset(windows(splits["train"]), 0, **kw)
val = mlm.masked_dataset(windows(splits["valid"])[:256], 1, **kw)
print(f"{len(train)} training windows of 128, {len(val)} validation windows")
for mixer in ({"mixer": "softmax", "num_heads": 4}, {"mixer": "kernel", "kernel": "rebased", "num_heads": 4}):
    torch.manual_seed(0)
    model = LanguageModel(encoder_config(tok.vocab_size, 128, 2, mixer, max_len=128))
    config = TrainConfig(max_steps=600, batch_size=32, lr=1e-3, eval_every=600, progress=False, device="cpu")
    start = time.perf_counter()
    summary = Trainer(model, config, train, val, run_dir=f"/tmp/ptb_mlm_{mixer.get('kernel', 'softmax')}").fit()
    took = time.perf_counter() - start
    final = summary["final"]
    print(
        f"{mixer.get('kernel', 'softmax')}: {600 / took:.2f} steps/s ({took:.0f} s), masked accuracy "
        f"{final['accuracy']:.3f}, perplexity {math.exp(final['loss']):.0f}"
    )

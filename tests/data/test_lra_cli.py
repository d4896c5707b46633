"""`kernelized data mqar`: the files hold exactly what kernelized.data.mqar generates."""

from __future__ import annotations

import numpy as np

from kernelized.data import cli, mqar


def test_mqar_cli_writes_the_generator_output(tmp_path):
    args = ["mqar", "--out", str(tmp_path), "--num-examples", "12", "--num-test", "5", "--seed", "3"]
    args += ["--vocab-size", "64", "--seq-len", "32", "--num-kv-pairs", "4"]
    assert cli.main(args) == 0
    train, test = mqar.mqar_datasets(mqar.MQARConfig(vocab_size=64, seq_len=32, num_kv_pairs=4), 12, 5, seed=3)
    for name, ds in (("train", train), ("test", test)):
        with np.load(tmp_path / f"{name}.npz") as z:
            assert np.array_equal(z["inputs"], ds.tensors[0].numpy())
            assert np.array_equal(z["labels"], ds.tensors[1].numpy())

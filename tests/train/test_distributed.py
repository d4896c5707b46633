"""Two CPU processes (gloo) train to the same weights as one process with the same global batch."""

from __future__ import annotations

import json
import socket

import torch
import torch.multiprocessing as mp
from train_tiny import ddp_config, ddp_worker, read_metrics, shift_data, tiny_model, without_times

from kernelized.train import Trainer, distributed, load_checkpoint


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
    mp.start_processes(ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    assert not distributed.is_distributed()

    single = tiny_model(seed=0)
    summary = Trainer(single, ddp_config(), shift_data(97, 0), shift_data(30, 1), run_dir=tmp_path / "one").fit()

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])  # the processes stay in lockstep
    expected = single.state_dict()
    assert max((ranks[0][k] - expected[k]).abs().max().item() for k in expected) < 1e-6
    start = tiny_model(seed=0).state_dict()
    assert not all(torch.equal(expected[k], start[k]) for k in expected)  # it trained
    assert torch.equal(ranks[0]["spare.weight"], start["spare.weight"])  # no gradient anywhere: not decayed

    ddp_lines, one_lines = read_metrics(tmp_path / "ddp"), read_metrics(tmp_path / "one")
    assert [r["step"] for r in ddp_lines] == [r["step"] for r in one_lines]  # only rank 0 wrote, once
    for a, b in zip(ddp_lines, one_lines):
        for key in ("loss", "accuracy", "train_loss"):
            if key in b:
                assert abs(a[key] - b[key]) < 1e-5, (key, a, b)
    assert len(load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["rng"]) == 2  # each process's RNG, for resume
    for rank in range(2):
        both = torch.load(tmp_path / f"resume{rank}.pt")
        assert all(torch.equal(both["whole"][k], both["resumed"][k]) for k in both["whole"])
    resumed_lines, whole_lines = read_metrics(tmp_path / "resumed"), read_metrics(tmp_path / "whole")
    assert [without_times(r) for r in resumed_lines] == [without_times(r) for r in whole_lines]
    ddp_summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert ddp_summary["world_size"] == 2 and ddp_summary["steps"] == summary["steps"] == 14
    assert abs(ddp_summary["final"]["accuracy"] - summary["final"]["accuracy"]) < 1e-9


def test_without_torchrun_everything_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env() is False
    assert (distributed.get_rank(), distributed.get_world_size(), distributed.is_main_process()) == (0, 1, True)
    t = torch.ones(3)
    assert torch.equal(distributed.all_reduce_sum(t), torch.ones(3))
    assert distributed.gather_objects({"a": 1}) == [{"a": 1}]

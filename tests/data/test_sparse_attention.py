"""The sparse-attention task: density controls the sparsity only, the teacher is softmax attention."""

import math

import pytest
import torch

from kernelized.data.sparse_attention import SparseAttentionTask


def test_density_sets_the_share_of_nonzeros_and_not_the_scale():
    g = torch.Generator().manual_seed(0)
    for density in (0.05, 0.3, 1.0):
        x = SparseAttentionTask(density=density).inputs(64, g)
        assert abs(float((x != 0).float().mean()) - density) < 0.01
        assert abs(float(x.square().mean()) - 1.0) < 0.1  # E x_i^2 = 1 at every density


def test_the_teacher_is_multi_head_softmax_attention():
    task = SparseAttentionTask(d_model=8, num_heads=2, seq_len=5, density=0.5, sharpness=1.5)
    x = task.inputs(3, torch.Generator().manual_seed(1))
    y = task.targets(x)
    wq, wk, wv = task.teacher()
    for b in range(3):
        for h in range(2):
            sl = slice(4 * h, 4 * h + 4)
            q, k, v = (x[b] @ wq)[:, sl], (x[b] @ wk)[:, sl], (x[b] @ wv)[:, sl]
            weights = torch.softmax(1.5 * q @ k.T / math.sqrt(4), dim=-1)
            torch.testing.assert_close(y[b, :, sl], weights @ v)
    flat = SparseAttentionTask(d_model=8, num_heads=2, seq_len=5, sharpness=0.0)
    torch.testing.assert_close(flat.targets(x), (x @ wv).mean(1, keepdim=True).expand(-1, 5, -1))  # uniform


def test_bad_settings_are_named():
    for kwargs, match in (({"density": 0.0}, "density must lie in"), ({"d_model": 10, "num_heads": 4}, "multiple"),
                          ({"sharpness": -1.0}, "sharpness")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            SparseAttentionTask(**kwargs)

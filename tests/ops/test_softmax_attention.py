"""softmax_attention against the textbook formula, with causal and padding masks."""

from __future__ import annotations

import pytest
import torch

from kernelized import ops
from tests.conftest import assert_close


def _naive(q, k, v, causal, mask):
    logits = torch.einsum("bthd,bshd->bhts", q, k) / q.shape[-1] ** 0.5
    T = q.shape[1]
    allowed = torch.ones(1, 1, T, T, dtype=torch.bool)
    if causal:
        allowed = allowed & torch.ones(T, T, dtype=torch.bool).tril()
    if mask is not None:
        allowed = allowed & ~mask[:, None, None, :]
    w = torch.softmax(logits.masked_fill(~allowed, float("-inf")), -1).nan_to_num(0.0)
    return torch.einsum("bhts,bshd->bthd", w, v)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("padded", [False, True])
def test_matches_naive(causal, padded):
    q, k, v = (torch.randn(2, 17, 3, 8, dtype=torch.float64) for _ in range(3))
    mask = None
    if padded:
        mask = torch.zeros(2, 17, dtype=torch.bool)
        mask[0, :4] = True  # left padding: the first causal rows see no key at all -> zero output, not NaN
        mask[1, 12:] = True
    out = ops.softmax_attention(q, k, v, causal=causal, key_padding_mask=mask)
    assert_close("softmax", _naive(q, k, v, causal, mask), out, ratio=1e-12)

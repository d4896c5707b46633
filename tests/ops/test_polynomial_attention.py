"""polynomial_attention equals linear attention on the polynomial feature maps, without building them."""

from __future__ import annotations

import pytest
import torch

from kernelized import kernels, ops
from tests.conftest import assert_close


@pytest.mark.parametrize(
    "name,options", [("rebased", {}), ("taylor", {}), ("polynomial", {"degree": 3}), ("polynomial", {"degree": 4})]
)
@pytest.mark.parametrize("causal", [True, False])
def test_equals_feature_form(name, options, causal, nan_poison):
    H, d = 2, 5
    fm = kernels.build(name, head_dim=d, num_heads=H, **options).double()
    q, k = torch.randn(2, 33, H, d, dtype=torch.float64), torch.randn(2, 33, H, d, dtype=torch.float64)
    v = torch.randn(2, 33, H, 4, dtype=torch.float64)
    mask = torch.zeros(2, 33, dtype=torch.bool)
    mask[1, 30:] = True
    ref, _ = ops.linear_attention(fm.query(q), fm.key(k), v, mode="parallel", causal=causal, key_padding_mask=mask)
    form = fm.polynomial_form
    out = ops.polynomial_attention(
        fm.project_query(q),
        fm.project_key(k),
        v,
        terms=form.terms,
        scale=form.scale,
        causal=causal,
        key_padding_mask=mask,
        block_size=8,
    )
    assert_close(name, ref, out, ratio=1e-11)


def test_gradcheck_based_terms():
    q, k, v = (torch.randn(1, 5, 2, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    f = lambda q, k, v: ops.polynomial_attention(q, k, v, terms={0: 1.0, 1: 1.0, 2: 0.5}, block_size=2)  # noqa: E731
    assert torch.autograd.gradcheck(f, (q, k, v))


def test_bad_input():
    q = torch.randn(1, 4, 2, 3)
    with pytest.raises(ValueError, match="degree must be a non-negative integer"):
        ops.polynomial_attention(q, q, q, degree=-1)
    with pytest.raises(ValueError, match="terms must map non-negative integer powers"):
        ops.polynomial_attention(q, q, q, terms={1.5: 1.0})
    with pytest.raises(ValueError, match="k must have 4 dimensions"):
        ops.polynomial_attention(q, q[0], q)

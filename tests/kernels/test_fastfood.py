"""FastFood: the fast product equals its dense matrix S H G Pi H B; padding; the classic draw's N(0, I) rows."""

import math

import pytest
import scipy.linalg
import torch

from kernelized import kernels
from kernelized.kernels.random_features import hadamard_transform

pytestmark = pytest.mark.usefixtures("one_thread")


def test_hadamard_transform_is_the_sylvester_matrix():
    for n in (1, 2, 8, 32):
        x = torch.randn(3, n, dtype=torch.float64)
        H = torch.tensor(scipy.linalg.hadamard(n), dtype=torch.float64)
        torch.testing.assert_close(hadamard_transform(x), x @ H.T)
    with pytest.raises(ValueError, match="power-of-two"):
        hadamard_transform(torch.randn(2, 6))


def _dense(S, G, perm, B):
    """``D**-1/2 diag(S) H diag(G) Pi H diag(B)`` with ``(Pi y)_j = y_perm(j)``, one ``[D, D]`` matrix."""
    D = S.shape[-1]
    H = torch.tensor(scipy.linalg.hadamard(D), dtype=S.dtype)
    P = torch.zeros(D, D, dtype=S.dtype)
    P[torch.arange(D), perm] = 1
    return D**-0.5 * torch.diag(S) @ H @ torch.diag(G) @ P @ H @ torch.diag(B)


@pytest.mark.parametrize("learn", [True, False])
@pytest.mark.parametrize("head_dim", [8, 6])
def test_fast_product_equals_dense_matrix(learn, head_dim):
    heads, blocks = 2, 3
    fm = kernels.build("fastfood-rks", head_dim=head_dim, num_heads=heads, num_features=8 * blocks, learn=learn)
    fm = fm.double()
    assert fm.padded_dim == 8
    noise = fm.current_noise()
    x = torch.randn(5, heads, head_dim, dtype=torch.float64)
    u = fm.project(x, noise)  # [5, H, blocks * 8]
    for h in range(heads):
        for b in range(blocks):
            if learn:
                S, G, B = fm.S[h], fm.G[h], fm.B[h]
            else:
                S, G, B = noise["S"][h, b], noise["G"][h, b], noise["B"][h, b]
            V = _dense(S.detach(), G.detach(), noise["perm"][h, b], B.detach())[:, :head_dim]  # padded columns unused
            torch.testing.assert_close(u[:, h, 8 * b : 8 * (b + 1)], x[:, h] @ V.T)
            torch.testing.assert_close(fm.frequencies(noise)[h, 8 * b : 8 * (b + 1)], V)


def test_classic_draw_rows_have_chi_norms_and_a_gaussian_kernel():
    """learn=False: rows of V are N(0, I_D), so the row norms follow chi_D: mean sqrt(2) Gamma((D+1)/2) / Gamma(D/2)."""
    D = 16
    fm = kernels.build("fastfood-rks", head_dim=D, num_heads=1, num_features=D * 256, learn=False).double()
    norms = fm.frequencies(fm.current_noise()).norm(dim=-1).flatten()
    expected = math.sqrt(2) * math.exp(math.lgamma((D + 1) / 2) - math.lgamma(D / 2))
    se = norms.std() / math.sqrt(norms.numel() / D)  # rows within a block share B, G, Pi: count blocks, not rows
    assert abs(norms.mean() - expected) < 5 * se


def test_learned_fastfood_kernel_is_deterministic_and_bad_input():
    fm = kernels.build("fastfood-prf", head_dim=8, num_heads=2)  # the published code cannot construct this one
    q, k = torch.randn(3, 2, 8), torch.randn(3, 2, 8)
    torch.testing.assert_close(fm.kernel(q, k), fm.kernel(q, k), rtol=0, atol=0)
    with pytest.raises(ValueError, match="multiple of the padded head dim 8"):
        kernels.build("fastfood-rks", head_dim=6, num_features=12)
    with pytest.raises(ValueError, match="init must be one of"):
        kernels.build("fastfood-rks", head_dim=8, init="xavier")
    with pytest.raises(ValueError, match="kernel_samples must be an integer >= 1"):
        kernels.build("fastfood-rks", head_dim=8, kernel_samples=0)

"""Deterministic feature maps against the kernels they claim: <phi_q(q), phi_k(k)> == kernel(q, k)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from kernelized import kernels

H, D = 3, 6
FLAGS = list(itertools.product([False, True], repeat=3))  # (use_gamma, use_beta, normalize)


def _perturb(fm: torch.nn.Module) -> torch.nn.Module:
    """Move learnable parameters off their identity initialisation, so the identity is tested in general."""
    with torch.no_grad():
        for p in fm.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return fm.double()


def _pairs():
    q = torch.randn(2, 5, 1, H, D, dtype=torch.float64)  # all query/key pairs by broadcasting
    k = torch.randn(2, 1, 7, H, D, dtype=torch.float64)
    return q, k


def _identity_error(fm) -> float:
    q, k = _pairs()
    feat = (fm.query(q) * fm.key(k)).sum(-1)
    closed = fm.kernel(q, k)
    assert closed.shape == (2, 5, 7, H)
    return (feat - closed).abs().max().item() / closed.abs().max().clamp_min(1e-12).item()


@pytest.mark.parametrize("name", ["elu", "relu", "taylor", "rebased"])
def test_kernel_identity(name):
    fm = _perturb(kernels.build(name, head_dim=D, num_heads=H))
    assert _identity_error(fm) < 1e-12


@pytest.mark.parametrize(
    "flags,scope",
    [(f, scope) for f in FLAGS for scope in (["head", "all"] if f[2] else [None])],
    ids=lambda x: "gamma{}-beta{}-norm{}".format(*map(int, x)) if isinstance(x, tuple) else str(x),
)
def test_rebased_every_ablation_is_its_kernel(flags, scope):
    use_gamma, use_beta, normalize = flags
    fm = kernels.build(
        "rebased",
        head_dim=D,
        num_heads=H,
        use_gamma=use_gamma,
        use_beta=use_beta,
        normalize=normalize,
        norm_scope=scope,
    )
    assert _identity_error(_perturb(fm)) < 1e-12


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_polynomial_degrees(degree):
    fm = _perturb(kernels.build("polynomial", head_dim=D, num_heads=H, degree=degree))
    assert _identity_error(fm) < 1e-11


def test_feature_counts_for_d16():
    assert kernels.build("taylor", head_dim=16).feature_dim == 153
    assert kernels.build("rebased", head_dim=16).feature_dim == 136
    assert kernels.build("polynomial", head_dim=16, degree=3).feature_dim == 816
    assert kernels.build("polynomial", head_dim=16, degree=4).feature_dim == 3876
    assert kernels.build("elu", head_dim=16).feature_dim == 16
    x = torch.randn(2, 3, 1, 16)
    assert kernels.build("taylor", head_dim=16).query(x).shape == (2, 3, 1, 153)


def test_taylor_is_based_closed_form():
    fm = kernels.build("taylor", head_dim=16)
    q, k = torch.randn(100, 1, 16, dtype=torch.float64), torch.randn(100, 1, 16, dtype=torch.float64)
    s = (q * k).sum(-1) / 4.0
    torch.testing.assert_close(fm.kernel(q, k), 1 + s + s**2 / 2)


def test_rebased_gamma_norm_variant_is_layer_norm_with_weight():
    """(gamma * norm(x))^2, the variant the authors' code cannot express, is F.layer_norm with a weight only."""
    fm = kernels.build("rebased", head_dim=D, num_heads=H, use_gamma=True, use_beta=False).double()
    with torch.no_grad():
        fm.gamma_q.uniform_(0.5, 2.0)
    x = torch.randn(4, H, D, dtype=torch.float64)
    ref = torch.stack([F.layer_norm(x[:, h], (D,), weight=fm.gamma_q[h], eps=1e-5) for h in range(H)], 1)
    torch.testing.assert_close(fm.project_query(x), ref)


def test_rebased_scope_all_normalises_across_heads():
    fm = kernels.build("rebased", head_dim=D, num_heads=H, use_gamma=False, use_beta=False, norm_scope="all").double()
    x = torch.randn(4, H, D, dtype=torch.float64)
    ref = F.layer_norm(x.reshape(4, H * D), (H * D,), eps=1e-5).reshape(4, H, D)
    torch.testing.assert_close(fm.project_query(x), ref)


def test_rebased_reaches_zero_but_based_never_below_half():
    """The property that motivates ReBased: it can give a pair zero weight; Based's 1 + s + s^2/2 >= 0.5."""
    rebased = kernels.build("rebased", head_dim=4, num_heads=1).double()
    q = torch.tensor([[1.0, -1.0, 0.0, 0.0]], dtype=torch.float64)  # zero-mean, so LayerNorm keeps the direction
    k = torch.tensor([[0.0, 0.0, 1.0, -1.0]], dtype=torch.float64)  # and orthogonal after normalisation
    assert rebased.kernel(q, k).abs().item() < 1e-12
    assert (rebased.query(q) * rebased.key(k)).sum(-1).abs().item() < 1e-12
    assert rebased.kernel(q, q).item() > 0.5

    taylor = kernels.build("taylor", head_dim=4).double()
    qs, ks = torch.randn(20000, 4, dtype=torch.float64) * 3, torch.randn(20000, 4, dtype=torch.float64) * 3
    values = taylor.kernel(qs, ks)
    assert values.min().item() >= 0.5 - 1e-12
    s = torch.linspace(-6, 6, 1201, dtype=torch.float64)
    based = 1 + s + s**2 / 2
    assert based.min().item() == pytest.approx(0.5) and s[based.argmin()].item() == pytest.approx(-1.0)


def test_gradients_reach_gamma_and_beta_of_both_roles():
    fm = kernels.build("rebased", head_dim=D, num_heads=H)
    q, k = torch.randn(3, H, D), torch.randn(3, H, D)
    (fm.query(q) * fm.key(k)).sum().backward()
    for name, p in fm.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_registry_and_bad_input():
    names = kernels.available()
    assert {"elu", "relu", "taylor", "rebased", "polynomial"} <= set(names)
    with pytest.raises(ValueError, match="kernel must be one of .*rebased"):
        kernels.build("rebasd", head_dim=16)
    with pytest.raises(ValueError, match="unknown options \\['gama'\\]"):
        kernels.build("rebased", head_dim=16, gama=True)
    with pytest.raises(ValueError, match="norm_scope applies only with normalize=True"):
        kernels.build("rebased", head_dim=16, normalize=False, norm_scope="all")
    with pytest.raises(ValueError, match="norm_scope must be one of"):
        kernels.build("rebased", head_dim=16, norm_scope="batch")
    with pytest.raises(ValueError, match="head_dim must be an integer >= 1, got 0"):
        kernels.build("elu", head_dim=0)
    with pytest.raises(ValueError, match="degree must be an integer >= 1"):
        kernels.build("polynomial", head_dim=16, degree=0)
    fm = kernels.build("rebased", head_dim=16, num_heads=4)
    with pytest.raises(ValueError, match="must have 4 heads on axis -2"):
        fm.query(torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match="must end in the head dimension 16"):
        fm.key(torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="floating-point"):
        fm.query(torch.ones(2, 4, 16, dtype=torch.long))

"""The shared random-feature machinery: draw policy, shared draws, determinism, the PRF stabiliser, bad input."""

import math

import pytest
import torch

from kernelized import kernels, ops
from kernelized.kernels.random_features import orthogonal_gaussian, pow2cast

H, D = 2, 4
RANDOM = ["rff", "performer", "gmm-rks", "gmm-prf", "fastfood-rks", "fastfood-prf", "generative-rks", "generative-prf"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _noise(fm):
    return {n: getattr(fm, "noise_" + n).clone() for n in fm._noise_names}


def _same(a, b):
    return all(torch.equal(a[n], b[n]) for n in a)


def test_every_spectral_kernel_is_registered_and_random():
    assert set(RANDOM) <= set(kernels.available())
    for name in RANDOM:
        fm = kernels.build(name, head_dim=D, num_heads=H)
        assert fm.is_random and fm.per_head


@pytest.mark.parametrize("name", RANDOM)
def test_draw_policy_step_n_fixed_and_continuing(name):
    fm = kernels.build(name, head_dim=D, num_heads=H, redraw="step")
    fm.train()
    before = _noise(fm)
    fm.on_forward()
    after = _noise(fm)
    assert not _same(before, after), "redraw='step' draws at every training forward"
    fm.on_forward(continuing=True)
    assert _same(after, _noise(fm)), "a forward that continues a sequence never draws"
    fm.eval()
    fm.on_forward()
    assert _same(after, _noise(fm)), "evaluation with the fixed draw leaves the training draw alone"

    fm = kernels.build(name, head_dim=D, num_heads=H, redraw=3)
    changed = []
    for _ in range(7):
        last = _noise(fm)
        fm.on_forward()
        changed.append(not _same(last, _noise(fm)))
    assert changed == [False, False, False, True, False, False, True]

    fm = kernels.build(name, head_dim=D, num_heads=H, redraw="fixed")
    last = _noise(fm)
    for _ in range(3):
        fm.on_forward()
    assert _same(last, _noise(fm))
    fm.resample(torch.Generator().manual_seed(5))
    assert not _same(last, _noise(fm))


@pytest.mark.parametrize("name", RANDOM)
def test_fixed_evaluation_is_deterministic_and_stochastic_evaluation_is_not(name):
    x = torch.randn(3, H, D)
    torch.manual_seed(0)
    a = kernels.build(name, head_dim=D, num_heads=H, seed=7)
    torch.manual_seed(0)
    b = kernels.build(name, head_dim=D, num_heads=H, seed=7)
    a.eval()
    ref = a.query(x)
    b.train()
    for _ in range(3):  # training forwards redraw; evaluation must not notice (generators: features would also
        b.on_forward()  # move BatchNorm's running statistics, which are model state like the weights)
    b.eval()
    b.on_forward()
    torch.testing.assert_close(b.query(x), ref, rtol=0, atol=0)
    b.eval_draw = "stochastic"
    b.on_forward()
    assert not torch.equal(b.query(x), ref)
    # the draws travel with the state dict (a checkpoint reproduces evaluation and training exactly)
    torch.manual_seed(1)
    c = kernels.build(name, head_dim=D, num_heads=H, seed=8)
    c.load_state_dict(b.state_dict())
    for m in (b, c):
        m.train()
    torch.testing.assert_close(c.key(x), b.key(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["rff", "gmm-rks", "fastfood-rks", "generative-rks"])
def test_queries_and_keys_share_one_draw(name):
    """RKS: <phi_q(x), phi_k(x)> = sum_m a_m^2 (cos^2 + sin^2) + s^2 exactly, only if both use the same frequencies."""
    fm = kernels.build(name, head_dim=D, num_heads=H).double()
    fm.train()
    fm.on_forward()
    x = 3 * torch.randn(5, H, D, dtype=torch.float64)
    total = fm.weights(fm.current_noise()).sum(-1) + fm.smoothing**2
    torch.testing.assert_close((fm.query(x) * fm.key(x)).sum(-1), total.expand(5, H))


def test_resample_with_a_generator_is_reproducible_and_orthogonal_rows():
    a, b = (kernels.build("performer", head_dim=8, num_heads=H) for _ in range(2))
    a.resample(torch.Generator().manual_seed(3))
    b.resample(torch.Generator().manual_seed(3))
    assert torch.equal(a.noise_eps, b.noise_eps)
    w = orthogonal_gaussian(1, 16, 8, torch.Generator().manual_seed(0), dtype=torch.float64)[0]
    gram = w[:8] @ w[:8].T  # one block: orthogonal rows
    torch.testing.assert_close(gram - torch.diag(torch.diag(gram)), torch.zeros(8, 8, dtype=torch.float64))


@pytest.mark.parametrize("name,options", [("performer", {}), ("gmm-prf", {"hyperbolic": True}), ("fastfood-prf", {})])
def test_stabiliser_leaves_normalised_attention_unchanged_and_prevents_overflow(name, options):
    torch.manual_seed(0)
    fm = kernels.build(name, head_dim=D, num_heads=H, **options).double()
    q, k, v = (torch.randn(1, 9, H, n, dtype=torch.float64) for n in (D, D, 3))
    q, k = 3 * q, 3 * k

    def attend(m, eps=0.0):
        o, _ = ops.linear_attention(m.query(q), m.key(k), v, causal=True, mode="parallel", eps=eps)
        return o

    for blow_up in (False, True):
        if blow_up:  # a spectrum so wide that the key constant b_h > 0 for some head
            with torch.no_grad():
                if name == "gmm-prf":
                    fm.log_var.fill_(2 * math.log(8.0))
                elif name == "fastfood-prf":
                    fm.S.mul_(64.0)
                else:
                    fm.noise_eps.mul_(8.0)
            assert fm.key_shift(fm.current_noise()).max() > 0
        fm.stabilize = True
        stab = attend(fm)
        fm.stabilize = False
        torch.testing.assert_close(stab, attend(fm), rtol=1e-10, atol=1e-12)  # exact at eps = 0
    # float32: without the stabiliser exp overflows; with it every feature and output is finite, keys <= e^60
    fm = fm.float()
    q, k, v = q.float(), k.float(), v.float()
    fm.stabilize = False
    assert not torch.isfinite(attend(fm, eps=1e-6)).all()
    fm.stabilize = True
    key_feat = fm.key(k)
    assert torch.isfinite(key_feat).all() and key_feat.max() <= math.exp(60.0)
    assert torch.isfinite(fm.query(q)).all() and fm.query(q).max() <= 1.0
    assert torch.isfinite(attend(fm, eps=1e-6)).all()


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="num_features must be an integer >= 1, got 0"):
        kernels.build("rff", head_dim=D, num_features=0)
    with pytest.raises(ValueError, match="num_features must be an integer >= 1, got -4"):
        kernels.build("gmm-prf", head_dim=D, num_features=-4)
    with pytest.raises(ValueError, match="num_components must be an integer >= 1, got 0"):
        kernels.build("gmm-rks", head_dim=D, num_components=0)
    with pytest.raises(ValueError, match="num_features must be a multiple of num_components=3"):
        kernels.build("gmm-rks", head_dim=D, num_features=8, num_components=3)
    with pytest.raises(ValueError, match="covariance must be one of"):
        kernels.build("gmm-prf", head_dim=D, covariance="spherical")
    with pytest.raises(ValueError, match="redraw must be 'step', 'fixed' or an integer >= 1"):
        kernels.build("performer", head_dim=D, redraw="sometimes")
    with pytest.raises(ValueError, match="eval_draw must be one of"):
        kernels.build("performer", head_dim=D, eval_draw="random")
    with pytest.raises(ValueError, match="noise_dims must be a non-empty list"):
        kernels.build("generative-rks", head_dim=D, noise_dims=[])
    with pytest.raises(ValueError, match="num_features must be >= 2 with batch_norm"):
        kernels.build("generative-prf", head_dim=D, num_features=1)
    with pytest.raises(ValueError, match="unknown options"):
        kernels.build("gmm-rks", head_dim=D, C=2)
    fm = kernels.build("gmm-prf", head_dim=D, num_heads=H)
    with pytest.raises(ValueError, match="must end in the head dimension 4"):
        fm.query(torch.randn(3, H, 5))
    with pytest.raises(ValueError, match="must have 2 heads on axis -2"):
        fm.key(torch.randn(3, 3, D))
    with pytest.raises(ValueError, match="must end in the head dimension 4"):
        fm.kernel(torch.randn(3, H, D), torch.randn(3, H, 3))
    assert pow2cast(1) == 1 and pow2cast(3) == 4 and pow2cast(5) == 4


def test_redraw_schedule_resumes_from_a_checkpoint():
    a = kernels.build("gmm-prf", head_dim=D, num_heads=H, redraw=3)
    for _ in range(2):
        a.on_forward()
    b = kernels.build("gmm-prf", head_dim=D, num_heads=H, redraw=3, seed=1)
    b.load_state_dict(a.state_dict())
    assert b.num_forwards == 2
    last = _noise(b)
    b.on_forward()  # forward number 2: no draw yet
    assert _same(last, _noise(b))
    b.on_forward()  # forward number 3: draws
    assert not _same(last, _noise(b))


@pytest.mark.parametrize("name", ["performer", "gmm-rks"])
def test_half_precision_inputs_get_float32_features(name):
    fm = kernels.build(name, head_dim=8, num_heads=H)
    x = 4 * torch.randn(6, H, 8)
    ref = fm.query(x.bfloat16().float())  # the same inputs, features in float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fm.query(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.bfloat16().float(), rtol=0, atol=0)

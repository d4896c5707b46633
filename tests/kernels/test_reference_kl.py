"""reference="kl": the KL-Transformer code's choices (one draw for all heads, its sizes, no stabiliser, and its
Performer whose frequencies stay zero), each against the behaviour it must reproduce."""

import pytest
import torch

from kernelized import kernels
from kernelized.kernels.reference_kl import COVERED
from kernelized.layers.attention import KernelAttention

pytestmark = pytest.mark.usefixtures("one_thread")


def _attention(kernel, **options):
    torch.manual_seed(0)
    return KernelAttention(64, num_heads=4, kernel=kernel, causal=False, kernel_options=options).double().eval()


def test_kl_performer_weights_do_not_depend_on_the_query():
    x = torch.randn(2, 9, 64, dtype=torch.float64)
    kl = _attention("performer", reference="kl")
    w = kl.attention_weights(x)  # [B, H, T, T]
    # every query row is the same distribution (up to the normaliser's eps = 1e-6, the only place q enters)
    torch.testing.assert_close(w, w[:, :, :1].expand_as(w), atol=1e-5, rtol=0)
    assert float(w.std(-1).min()) > 0  # ... over keys, not uniform: it follows exp(-|k~|^2 / 2)
    ours = _attention("performer").attention_weights(x)
    assert float((ours - ours[:, :, :1]).abs().max()) > 1e-2  # the correct Performer's rows differ
    fm = kl.feature_map
    assert fm.zero_frequencies and float(fm.frequencies(fm.current_noise()).abs().max()) == 0.0
    q, k = torch.randn(5, 4, 16, dtype=torch.float64), torch.randn(5, 4, 16, dtype=torch.float64)
    torch.testing.assert_close(fm.estimate(q, k), fm.kernel(q, k))  # constant features: the estimate is exact
    qs, ks = q * 16**-0.25, k * 16**-0.25
    torch.testing.assert_close(fm.kernel(q, k), torch.exp(-0.5 * (qs.square().sum(-1) + ks.square().sum(-1))))


def test_kl_performer_draws_real_frequencies_when_m_is_not_d():
    fm = kernels.build("performer", 16, 2, reference="kl", num_features=32)  # not the code's square case
    assert not fm.zero_frequencies
    omega = fm.frequencies(fm.current_noise())
    assert float(omega.norm(dim=-1).min()) > 0.5


@pytest.mark.parametrize("name", [n for n in COVERED if n != "elu"])
def test_one_draw_serves_every_head_and_survives_redraws(name):
    fm = kernels.build(name, 16, 4, reference="kl").train()
    for _ in range(2):
        fm.on_forward()  # training forwards redraw (performer: every 1000th; resample forces one)
        fm.resample()
        for t in fm.current_noise().values():
            if fm.noise_has_head_axis:
                torch.testing.assert_close(t, t[:1].expand_as(t))
    x = torch.randn(3, 1, 16).expand(3, 4, 16)  # the same input in every head
    if name.startswith("fastfood"):
        assert fm.B.shape == (1, 16) and fm.S.shape == (1, 16)  # one learned set of diagonals, as in the code
    if not name.startswith("gmm"):  # GMM means and covariances are learned per head in the code too
        f = fm.query(x)
        torch.testing.assert_close(f, f[:, :1].expand_as(f))
    ours = kernels.build(name, 16, 4)
    if ours.noise_has_head_axis:  # ours draws per head (the generators share one draw already)
        assert any(float((t - t[:1]).abs().max()) > 0 for t in ours.current_noise().values())


def test_the_codes_feature_counts_per_task_and_its_draw_policy():
    def dims(name, d, task=None, **kw):
        return kernels.build(name, d, 8, reference="kl", reference_task=task, **kw).feature_dim

    # GMM-RKS n_dims: 4P+1 on ListOps, 2d+1 on Text, 2P+1 on Retrieval (d = 32 there); P = pow2cast(d ln d)
    assert dims("gmm-rks", 64, "listops") == 4 * 256 + 1 and dims("gmm-rks", 64, "text") == 2 * 64 + 1
    assert dims("gmm-rks", 32, "retrieval") == 2 * 128 + 1
    assert kernels.build("gmm-rks", 64, 8, reference="kl", reference_task="text").smoothing == 0.36
    assert dims("gmm-prf", 64) == 256 and dims("performer", 64) == 128 and dims("rff", 64) == 2 * 256 + 1
    assert dims("generative-prf", 64) == 127  # the code's "n_dims - 1, // 2" quirk: 256 requested, 127 given
    assert dims("gmm-rks", 64, "listops", num_features=4) == 17  # explicit options win
    gmm = kernels.build("gmm-prf", 16, 2, reference="kl")
    assert not gmm.stabilize and gmm.redraw == "step" and gmm.eval_draw == "stochastic"
    perf = kernels.build("performer", 16, 2, reference="kl")
    assert not perf.stabilize and perf.redraw == 1000 and perf.eval_draw == "current"
    assert KernelAttention(64, num_heads=4, kernel="elu").eps == 1e-6  # the code's LinearAttention eps


def test_bad_reference_options_are_named():
    with pytest.raises(ValueError, match=r"covers the kernels of the KL code, \['performer'"):
        kernels.build("rebased", 16, 2, reference="kl")
    with pytest.raises(ValueError, match="reference must be one of \\['kl'\\]"):
        kernels.build("gmm-rks", 16, 2, reference="fla")
    with pytest.raises(ValueError, match="reference_task must be one of"):
        kernels.build("gmm-rks", 16, 2, reference="kl", reference_task="image")
    with pytest.raises(ValueError, match="reference_task needs reference='kl'"):
        kernels.build("gmm-rks", 16, 2, reference_task="text")

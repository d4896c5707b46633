import pytest
import torch

from kernelized.layers.rotary import Rotary, apply_rotary


def test_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 2, 8), torch.randn(1, 1, 2, 8)

    def score(m, n):
        return (apply_rotary(q, torch.tensor([m])) * apply_rotary(k, torch.tensor([n]))).sum(-1)

    torch.testing.assert_close(score(7, 3), score(107, 103), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(score(0, 5), score(20, 25), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(score(7, 3), score(3, 7))  # the rotation is not symmetric in m - n


def test_rotation_preserves_norm_and_is_identity_at_zero():
    torch.manual_seed(1)
    x = torch.randn(2, 5, 3, 16)
    y = apply_rotary(x, torch.arange(5))
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(y[:, 0], x[:, 0])
    assert not torch.allclose(y[:, 1:], x[:, 1:])


def test_offset_matches_slice_of_full_sequence():
    torch.manual_seed(2)
    x = torch.randn(2, 9, 2, 6)
    rot = Rotary(6)
    full = rot(x)
    torch.testing.assert_close(rot(x[:, 4:], offset=4), full[:, 4:])
    torch.testing.assert_close(rot(x[:, 8:9], offset=8), full[:, 8:9])


def test_bad_input():
    with pytest.raises(ValueError, match="even"):
        Rotary(5)
    with pytest.raises(ValueError, match="even head dim"):
        apply_rotary(torch.randn(1, 2, 1, 3), torch.arange(2))
    with pytest.raises(ValueError, match="positions"):
        apply_rotary(torch.randn(1, 2, 1, 4), torch.arange(3))

import pytest
import torch

from kernelized.eval.ar_hit import ar_hit_mask


def brute_force(row: list[int]) -> list[bool]:
    """hit[t] iff (row[t-1], row[t]) == (row[s-1], row[s]) for some 1 <= s < t."""
    return [t >= 1 and any((row[s - 1], row[s]) == (row[t - 1], row[t]) for s in range(1, t)) for t in range(len(row))]


def test_hand_examples():
    # "it means no worries ... it means no -> worries": the second "worries" completes a seen bigram
    t = torch.tensor([5, 1, 2, 7, 1, 2, 1, 2, 3, 1])
    assert ar_hit_mask(t).tolist() == [False, False, False, False, False, True, False, True, False, False]
    # a repeated token alone is not a hit: the bigram (x, y) must repeat, not y
    assert ar_hit_mask(torch.tensor([4, 4, 9, 4])).tolist() == [False, False, False, False]
    # runs: (4,4) at t=1 first, repeats at t=2 and t=3
    assert ar_hit_mask(torch.tensor([4, 4, 4, 4])).tolist() == [False, False, True, True]
    # overlapping occurrences: (1,2) at t=1 and t=3; (2,1) at t=2 then t=4
    assert ar_hit_mask(torch.tensor([[1, 2, 1, 2, 1]])).tolist() == [[False, False, False, True, True]]
    assert ar_hit_mask(torch.tensor([[3]])).tolist() == [[False]]
    assert ar_hit_mask(torch.zeros(2, 0, dtype=torch.long)).shape == (2, 0)


def test_matches_brute_force_on_random_sequences():
    g = torch.Generator().manual_seed(0)
    for vocab, T in [(2, 30), (5, 40), (20, 64), (1000, 50)]:
        tokens = torch.randint(0, vocab, (6, T), generator=g)
        mask = ar_hit_mask(tokens)
        assert mask.dtype == torch.bool and mask.shape == tokens.shape
        assert mask.tolist() == [brute_force(r) for r in tokens.tolist()]
        assert not mask[:, 0].any()


def test_rows_are_independent():
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 4, (5, 33), generator=g)
    batch = ar_hit_mask(tokens)
    for b in range(5):
        assert torch.equal(batch[b], ar_hit_mask(tokens[b]))
    # a bigram seen only in another row is not a hit
    assert ar_hit_mask(torch.tensor([[1, 2, 0], [0, 1, 2]])).tolist() == [[False] * 3, [False] * 3]


def test_padding_never_hits_nor_creates_hits():
    tokens = torch.tensor([[0, 0, 0, 7, 8, 7, 8]])
    pad = torch.tensor([[True, True, True, False, False, False, False]])
    assert ar_hit_mask(tokens).tolist() == [[False, False, True, False, False, False, True]]
    assert ar_hit_mask(tokens, padding_mask=pad).tolist() == [[False] * 6 + [True]]


def test_bad_input():
    with pytest.raises(ValueError, match="integer"):
        ar_hit_mask(torch.randn(2, 3))
    with pytest.raises(ValueError, match="shape"):
        ar_hit_mask(torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="padding_mask"):
        ar_hit_mask(torch.zeros(2, 3, dtype=torch.long), padding_mask=torch.zeros(2, 4, dtype=torch.bool))

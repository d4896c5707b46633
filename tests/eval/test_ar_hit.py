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


class Uniform(torch.nn.Module):
    """Logits that say nothing: perplexity V on every slice."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab

    def forward(self, x):
        return torch.zeros(*x.shape, self.vocab)


class BigramRecall(torch.nn.Module):
    """Predicts, with probability ~1, the token that followed the current token last time in the window."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab

    def forward(self, x):
        B, T = x.shape
        logits = torch.zeros(B, T, self.vocab)
        for b in range(B):
            for t in range(T):
                prev = [s for s in range(t) if x[b, s] == x[b, t]]
                if prev:
                    logits[b, t, x[b, prev[-1] + 1]] = 50.0
        return logits


def test_perplexity_slices():
    import math

    from kernelized import eval as keval
    from kernelized.eval.perplexity import evaluate_perplexity, lm_eval_fn

    assert keval.ar_hit_mask is ar_hit_mask
    g = torch.Generator().manual_seed(3)
    stream = torch.randint(0, 6, (4, 25), generator=g)
    x, y = stream[:, :-1], stream[:, 1:]
    out = lm_eval_fn(Uniform(6), (x, y))
    hit = ar_hit_mask(stream)[:, 1:]
    assert int(out["ar_hit_loss"][1]) == int(hit.sum()) and int(out["other_loss"][1]) == int((~hit).sum())
    torch.testing.assert_close(out["ar_hit_loss"][0] + out["other_loss"][0], out["loss"][0])
    data = list(zip(x, y))
    metrics = evaluate_perplexity(Uniform(6), data, batch_size=3)
    for name in ("ppl", "ar_hit_ppl", "other_ppl"):
        assert math.isclose(metrics[name], 6.0, rel_tol=1e-5)
    assert math.isclose(metrics["ar_hit_fraction"], hit.float().mean().item(), rel_tol=1e-6)
    # a model that recalls bigrams from context is perfect exactly on AR hits whose bigram is the latest one
    recall = evaluate_perplexity(
        BigramRecall(6), [(torch.tensor([1, 2, 3, 1, 2, 3, 1]), torch.tensor([2, 3, 1, 2, 3, 1, 5]))]
    )
    assert math.isclose(recall["ar_hit_ppl"], 1.0, rel_tol=1e-6) and recall["other_ppl"] > 1e3
    assert recall["ar_hit_tokens"] == 3  # the second 2, 3, 1 complete seen bigrams; (1, 5) is new


def test_bigram_counts_match_brute_force():
    from collections import Counter

    from kernelized.eval.ar_hit import BigramCounts

    g = torch.Generator().manual_seed(5)
    stream = torch.randint(0, 7, (300,), generator=g)
    counter = Counter(zip(stream[:-1].tolist(), stream[1:].tolist()))
    counts = BigramCounts(stream, vocab_size=9)  # ids 7, 8 never occur
    tokens = torch.randint(0, 9, (3, 20), generator=g)
    got = counts(tokens)
    expected = [[0] + [counter[(r[t - 1], r[t])] for t in range(1, 20)] for r in tokens.tolist()]
    assert got.tolist() == expected and (got[tokens == 8] == 0).all()


def test_frequency_buckets_partition_the_ar_hits():
    from kernelized.eval.ar_hit import BigramCounts
    from kernelized.eval.perplexity import FREQUENCY_BUCKETS, bucket_name, lm_eval_fn, perplexities

    g = torch.Generator().manual_seed(6)
    train = torch.randint(0, 5, (5000,), generator=g)  # each bigram of 0..4 ~200 times
    train[:40] = 5  # bigram (5, 5) is frequent; (5, x) and (x, 5) are rare
    r = int(train[40])  # (5, r) occurs once in training
    # hits: (5, 5) at t=2 (39 in training), (5, r) at t=12 (1), (0, 1) at t=7 (~200), (2, 5) at t=11 (never)
    stream = torch.tensor([[5, 5, 5, r, 0, 1, 0, 1, 2, 5, 2, 5, r]])
    x, y = stream[:, :-1], stream[:, 1:]
    out = lm_eval_fn(Uniform(6), (x, y), bigrams=BigramCounts(train, 6))
    names = [bucket_name(lo, hi) for lo, hi in FREQUENCY_BUCKETS]
    assert names == ["train0", "train1-9", "train10-99", "train100+"]
    assert sum(int(out[f"ar_hit_loss_{n}"][1]) for n in names) == int(out["ar_hit_loss"][1])
    total = sum(float(out[f"ar_hit_loss_{n}"][0]) for n in names)
    assert abs(total - float(out["ar_hit_loss"][0])) < 1e-3
    counts = {n: int(out[f"ar_hit_loss_{n}"][1]) for n in names}
    assert all(c > 0 for c in counts.values()), counts
    metrics = perplexities({k: float(s) / float(c) for k, (s, c) in out.items() if c})  # empty slices: no value
    from kernelized.eval.perplexity import DISTANCE_BUCKETS

    by_distance = [bucket_name(lo, hi, "dist") for lo, hi in DISTANCE_BUCKETS]  # a partition of the hits too
    assert sum(int(out[f"ar_hit_loss_{n}"][1]) for n in by_distance) == int(out["ar_hit_loss"][1])
    from kernelized.eval.ar_hit import ar_hit_distance

    gaps = ar_hit_distance(stream)[0, 1:]
    assert int(out["ar_hit_loss_dist1-3"][1]) == int(((gaps >= 1) & (gaps < 4)).sum()) >= 3  # gaps 1, 2, 2 (, 2), 9
    assert int(out["ar_hit_loss_dist4-15"][1]) == 1
    for n in names:  # a uniform model has perplexity 6 on every slice
        assert abs(metrics[f"ar_hit_ppl_{n}"] - 6.0) < 1e-4
    assert abs(sum(metrics[f"ar_hit_share_{n}"] for n in names) - metrics["ar_hit_fraction"]) < 1e-9


def test_ar_hit_distance_is_the_gap_to_the_latest_earlier_occurrence_against_brute_force():
    from kernelized.eval.ar_hit import ar_hit_distance

    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 4, (3, 40), generator=g)
    pad = torch.zeros(3, 40, dtype=torch.bool)
    pad[2, 30:] = True
    dist = ar_hit_distance(tokens, pad)
    for b in range(3):
        for t in range(40):
            earlier = [s for s in range(1, t) if not (pad[b, s] or pad[b, s - 1] or pad[b, t] or pad[b, t - 1])
                       and (tokens[b, s - 1], tokens[b, s]) == (tokens[b, t - 1], tokens[b, t])]  # fmt: skip
            assert int(dist[b, t]) == (t - max(earlier) if earlier else 0), (b, t)
    assert torch.equal(dist > 0, ar_hit_mask(tokens, pad))
    assert ar_hit_distance(tokens[0]).tolist() == dist[0].tolist()  # [T] in, [T] out

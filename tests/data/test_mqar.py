import itertools

import numpy as np
import pytest
import torch

from kernelized.data.mqar import MQARConfig, check_mqar, mqar_datasets, multiquery_ar, paper_num_kv_pairs


def _check_example(x: np.ndarray, y: np.ndarray, vocab: int, kv: int, fillers_zero: bool = True) -> None:
    """Every rule of one example ``x, y [L]``."""
    half, context = vocab // 2, 2 * kv
    keys, values = x[0:context:2], x[1:context:2]
    assert ((keys >= 1) & (keys < half)).all() and ((values >= half) & (values < vocab)).all()
    assert len(set(keys)) == kv and len(set(values)) == kv
    assert (y[:context] == -100).all()
    labelled = np.flatnonzero(y != -100)
    assert len(labelled) == kv
    assert ((labelled - context) % 2 == 0).all()  # queries sit on even slots of the query region
    value_of = dict(zip(keys, values))
    assert sorted(x[labelled]) == sorted(keys)  # every key is queried once
    for pos in labelled:
        assert y[pos] == value_of[x[pos]]  # the label is the queried key's value, at the key's position
    if fillers_zero:
        rest = np.ones(len(x), dtype=bool)
        rest[:context], rest[labelled] = False, False
        assert (x[rest] == 0).all()


@pytest.mark.parametrize("vocab,length,kv", [(12, 16, 2), (64, 32, 8), (8192, 128, 16), (100, 40, 10)])
def test_every_example_follows_the_rules(vocab, length, kv):
    x, y = multiquery_ar(50, vocab_size=vocab, seq_len=length, num_kv_pairs=kv, seed=3)
    assert x.shape == y.shape == (50, length) and x.dtype == y.dtype == torch.int64
    for xi, yi in zip(x.numpy(), y.numpy()):
        _check_example(xi, yi, vocab, kv)


def test_worked_example_layout():
    """The reference's shape: ``k v k v`` context, then keys answered at their own positions."""
    x, y = multiquery_ar(1, vocab_size=12, seq_len=16, num_kv_pairs=2, seed=0)
    x, y = x[0].tolist(), y[0].tolist()
    k1, v1, k2, v2 = x[:4]
    answers = {x[i]: y[i] for i in range(16) if y[i] != -100}
    assert answers == {k1: v1, k2: v2}


def test_random_fillers_keep_keys_and_labels():
    kw = dict(vocab_size=64, seq_len=64, num_kv_pairs=4)
    x0, y0 = multiquery_ar(200, random_non_queries=False, seed=5, **kw)
    x1, y1 = multiquery_ar(200, random_non_queries=True, seed=5, **kw)
    assert torch.equal(y0, y1)
    kept = x0 != 0
    assert torch.equal(x1[kept], x0[kept])
    filled = x1[~kept]
    assert filled.min() >= 0 and filled.max() < 64 and (filled != 0).float().mean() > 0.9


def test_query_slots_follow_the_power_law():
    """One pair and 8 slots: slot g has probability ∝ (g + 1)**(a - 1)."""
    n, space = 40_000, 8
    for a in (0.01, 1.0):
        x, y = multiquery_ar(n, vocab_size=16, seq_len=2 + 2 * space, num_kv_pairs=1, power_a=a, seed=1)
        slot = (torch.nonzero(y != -100)[:, 1] - 2) // 2
        freq = torch.bincount(slot, minlength=space).double().numpy() / n
        p = np.arange(1, space + 1) ** (a - 1.0)
        p /= p.sum()
        assert np.abs(freq - p).max() < 4 * np.sqrt(p * (1 - p) / n).max()


def test_slots_are_weighted_draws_without_replacement():
    """Two pairs, three slots: the unordered slot pair follows numpy's sequential weighted draw."""
    n, a, space = 40_000, 0.3, 3
    x, y = multiquery_ar(n, vocab_size=16, seq_len=4 + 2 * space, num_kv_pairs=2, power_a=a, seed=2)
    slots = ((torch.nonzero(y != -100)[:, 1] - 4) // 2).view(n, 2).numpy()
    w = np.arange(1, space + 1) ** (a - 1.0)
    w /= w.sum()
    for pair in itertools.combinations(range(space), 2):
        i, j = pair
        expected = w[i] * w[j] / (1 - w[i]) + w[j] * w[i] / (1 - w[j])
        got = np.mean((slots.min(1) == i) & (slots.max(1) == j))
        assert abs(got - expected) < 4 * np.sqrt(expected * (1 - expected) / n)


def test_keys_are_uniform_ordered_tuples():
    n = 20_000
    x, _ = multiquery_ar(n, vocab_size=12, seq_len=16, num_kv_pairs=2, seed=4)
    pairs = x[:, 0] * 10 + x[:, 2]  # (first key, second key), keys in {1..5}
    counts = torch.bincount(pairs, minlength=60).double()
    possible = [10 * i + j for i in range(1, 6) for j in range(1, 6) if i != j]
    assert counts.sum() == counts[possible].sum()  # never a repeated key
    expected = n / len(possible)
    assert (counts[possible] - expected).abs().max() < 5 * np.sqrt(expected)


def test_deterministic_by_seed():
    kw = dict(vocab_size=128, seq_len=64, num_kv_pairs=8, random_non_queries=True)
    a, b, c = (multiquery_ar(30, seed=s, **kw) for s in (7, 7, 8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_train_and_test_use_different_streams():
    task = MQARConfig(vocab_size=8192, seq_len=64, num_kv_pairs=8)
    train, test = mqar_datasets(task, 300, 100, seed=0)
    again_train, again_test = mqar_datasets(task, 300, 100, seed=0)
    assert torch.equal(train.tensors[0], again_train.tensors[0]) and torch.equal(test.tensors[0], again_test.tensors[0])
    seen = {tuple(row) for row in train.tensors[0].tolist()}
    assert not any(tuple(row) in seen for row in test.tensors[0].tolist())
    # the test split is not a continuation or copy of the train stream either
    longer, _ = mqar_datasets(task, 400, 1, seed=0)
    assert not torch.equal(longer.tensors[0][300:301], test.tensors[0][:1])


def test_large_batches_are_generated_in_chunks_with_the_same_rules(monkeypatch):
    import kernelized.data.mqar as mqar

    monkeypatch.setattr(mqar, "_CHUNK_ELEMENTS", 64)  # 8 rows per chunk
    x, y = multiquery_ar(30, vocab_size=32, seq_len=32, num_kv_pairs=4, seed=9)
    for xi, yi in zip(x.numpy(), y.numpy()):
        _check_example(xi, yi, 32, 4)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(vocab_size=8192, seq_len=64, num_kv_pairs=17), "num_kv_pairs"),  # 4 * 17 > 64
        (dict(vocab_size=16, seq_len=64, num_kv_pairs=8), "vocab_size"),  # 7 keys for 8 pairs
        (dict(vocab_size=8192, seq_len=63, num_kv_pairs=4), "seq_len"),
        (dict(vocab_size=8192, seq_len=64, num_kv_pairs=0), "num_kv_pairs"),
        (dict(vocab_size=8192, seq_len=64, num_kv_pairs=4, power_a=0.0), "power_a"),
    ],
)
def test_bad_input_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_mqar(**kwargs)
    with pytest.raises(ValueError, match=match):
        multiquery_ar(2, **kwargs)
    with pytest.raises(ValueError, match=match):
        MQARConfig(**kwargs)


def test_smallest_vocab_that_fits():
    x, y = multiquery_ar(20, vocab_size=18, seq_len=32, num_kv_pairs=8, seed=0)  # keys 1..8, all used
    for xi, yi in zip(x.numpy(), y.numpy()):
        _check_example(xi, yi, 18, 8)
        assert sorted(xi[0:16:2]) == list(range(1, 9))


def test_paper_pairs():
    assert [paper_num_kv_pairs(L) for L in (128, 256, 512, 1024, 2048)] == [16, 64, 128, 256, 512]

"""Multi-Query Associative Recall (MQAR): zoology's ``multiquery_ar``, vectorised and seeded.

An example of length L starts with ``num_kv_pairs`` key-value pairs, then queries every key once in the
remaining ``L - 2 * num_kv_pairs`` positions; the model must answer each query with the key's value.
Worked example (``vocab_size=12, num_kv_pairs=2, seq_len=16``; keys in [1, 6), values in [6, 12))::

    inputs  3    6    1    8    0    0    1    0    3    0    0 ...
    labels  -100 -100 -100 -100 -100 -100 8    -100 6    -100 ...

The label sits at the position of the queried key (next-token prediction key -> value); everything else
is -100, ignored by the loss and the accuracy. Rules, as in zoology (HazyResearch/zoology,
``zoology/data/multiquery_ar.py``):

- keys are drawn without replacement from ``[1, V/2)`` (0 is the filler token), values without
  replacement from ``[V/2, V)``;
- the query region has ``space = (L - 2 * num_kv_pairs) // 2`` even slots; slot ``g`` is drawn with
  probability ``p(g) ∝ a * (g + 1)**(a - 1)`` (a power law, ``a = power_a = 0.01`` makes near slots
  likely), ``num_kv_pairs`` distinct slots without replacement, and the key is written at offset ``2 g``;
- fillers are 0, or with ``random_non_queries=True`` any token drawn uniformly from ``[0, V)`` (they may
  collide with keys and values, as in zoology).

Differences from zoology, all in the random-number plumbing, not in the distribution: a
``numpy.random.Generator`` per call instead of the global seed; sampling without replacement is vectorised
(the first k distinct of a row of candidates drawn with replacement, which is exactly a draw without
replacement; weighted slots use the Gumbel-top-k trick, which is exactly numpy's sequential weighted sampling
without replacement). Zoology's extra assertion ``vocab_size > seq_len`` is not needed by the task and is
not enforced here; what is needed is checked (see :func:`check_mqar`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import TensorDataset

from kernelized._checks import check_positive_int

#: Rows generated at once are bounded so that the [rows, space] slot scores stay ~16M numbers.
_CHUNK_ELEMENTS = 2**24


@dataclass(frozen=True)
class MQARConfig:
    """One MQAR task: vocabulary, length, pairs, query-gap power law, fillers."""

    vocab_size: int = 8192
    seq_len: int = 64
    num_kv_pairs: int = 8
    power_a: float = 0.01
    random_non_queries: bool = False

    def __post_init__(self):
        check_mqar(self.vocab_size, self.seq_len, self.num_kv_pairs, self.power_a)


def check_mqar(vocab_size: int, seq_len: int, num_kv_pairs: int, power_a: float = 0.01) -> None:
    """Raise ``ValueError`` unless the task can be generated: pairs fit the length and the vocabulary."""
    check_positive_int("vocab_size", vocab_size)
    check_positive_int("seq_len", seq_len, minimum=2)
    check_positive_int("num_kv_pairs", num_kv_pairs)
    if seq_len % 2:
        raise ValueError(f"seq_len must be even (queries sit on even slots), got {seq_len}")
    if 4 * num_kv_pairs > seq_len:
        raise ValueError(
            f"num_kv_pairs must be <= seq_len / 4 = {seq_len // 4} (2 tokens per pair in the context and "
            f"2 slots per query), got num_kv_pairs={num_kv_pairs} for seq_len={seq_len}"
        )
    num_keys = vocab_size // 2 - 1  # keys live in [1, V/2)
    if num_kv_pairs > num_keys:
        raise ValueError(
            f"vocab_size must give at least num_kv_pairs={num_kv_pairs} distinct keys in [1, vocab_size/2), i.e. "
            f"vocab_size >= {2 * (num_kv_pairs + 1)}, got vocab_size={vocab_size} ({max(num_keys, 0)} keys)"
        )
    if not isinstance(power_a, (int, float)) or isinstance(power_a, bool) or not power_a > 0:
        raise ValueError(f"power_a must be a number > 0, got {power_a!r}")


def _distinct(rng: np.random.Generator, low: int, high: int, rows: int, k: int) -> np.ndarray:
    """``[rows, k]`` tokens from ``[low, high)``, distinct within each row, uniform over ordered tuples.

    Sequential rejection, vectorised: draw a row of candidates with replacement and keep the first k
    distinct ones in order (exactly a draw without replacement). Rows whose candidates hold fewer than k
    distinct tokens are drawn again with twice as many candidates.
    """
    n = high - low
    expected = sum(n / (n - i) for i in range(k))  # draws needed on average (coupon collector)
    m = int(1.25 * expected) + 8
    dtype = np.uint16 if high <= 2**16 else np.int64  # 16-bit keys sort by radix, much faster
    out = np.empty((rows, k), dtype=np.int64)
    todo = np.arange(rows)
    while todo.size:
        cand = rng.integers(low, high, size=(todo.size, m), dtype=dtype)
        order = np.argsort(cand, axis=1, kind="stable")  # stable: among equal tokens the first comes first
        sorted_ = np.take_along_axis(cand, order, axis=1)
        first = np.ones_like(cand, dtype=bool)
        np.put_along_axis(first, order[:, 1:], sorted_[:, 1:] != sorted_[:, :-1], axis=1)
        count = np.cumsum(first, axis=1)
        done = count[:, -1] >= k
        keep = first[done] & (count[done] <= k)
        out[todo[done]] = cand[done][keep].reshape(-1, k)
        todo, m = todo[~done], 2 * m
    return out


def _slots(rng: np.random.Generator, space: int, rows: int, k: int, power_a: float) -> np.ndarray:
    """``[rows, k]`` distinct query slots in ``[0, space)``, weighted ``∝ (g + 1)**(a - 1)`` without replacement.

    Gumbel-top-k: the k largest ``log p + Gumbel`` form a sequential weighted draw without replacement.
    """
    log_p = (power_a - 1.0) * np.log(np.arange(1, space + 1, dtype=np.float64))
    scores = log_p + rng.gumbel(size=(rows, space))
    if k == space:
        return np.argsort(-scores, axis=1)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    # order the k winners by score, as the sequential draw would
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def multiquery_ar(
    num_examples: int,
    *,
    vocab_size: int = 8192,
    seq_len: int = 64,
    num_kv_pairs: int = 8,
    power_a: float = 0.01,
    random_non_queries: bool = False,
    seed: int | np.random.Generator = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate MQAR examples: ``inputs [N, L]`` and ``labels [N, L]`` (int64; -100 where unlabelled).

    Deterministic in ``seed`` (an int or a ``numpy.random.Generator``). See the module docstring for the rules.
    """
    check_positive_int("num_examples", num_examples)
    check_mqar(vocab_size, seq_len, num_kv_pairs, power_a)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    context = 2 * num_kv_pairs
    space = (seq_len - context) // 2
    half = vocab_size // 2
    inputs = np.zeros((num_examples, seq_len), dtype=np.int64)
    labels = np.full((num_examples, seq_len), -100, dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // max(space, num_kv_pairs))
    for start in range(0, num_examples, step):
        rows = slice(start, min(start + step, num_examples))
        n = rows.stop - rows.start
        keys = _distinct(rng, 1, half, n, num_kv_pairs)
        values = _distinct(rng, half, vocab_size, n, num_kv_pairs)
        query_pos = context + 2 * _slots(rng, space, n, num_kv_pairs, power_a)  # [n, kv]
        block = inputs[rows]
        block[:, 0:context:2] = keys
        block[:, 1:context:2] = values
        np.put_along_axis(block, query_pos, keys, axis=1)
        np.put_along_axis(labels[rows], query_pos, values, axis=1)
        if random_non_queries:
            filler = block == 0
            block[filler] = rng.integers(0, vocab_size, size=int(filler.sum()))
    return torch.from_numpy(inputs), torch.from_numpy(labels)


def mqar_datasets(
    task: MQARConfig, num_train: int, num_test: int, seed: int = 0
) -> tuple[TensorDataset, TensorDataset]:
    """Train and test sets of ``TensorDataset(inputs [N, L], labels [N, L])``.

    The two splits come from independent streams of one ``numpy.random.SeedSequence(seed)`` (its two
    children), so they never share a random stream, like zoology's disjoint train/test seed ranges.
    """
    train_ss, test_ss = np.random.SeedSequence(seed).spawn(2)
    kwargs = dict(
        vocab_size=task.vocab_size,
        seq_len=task.seq_len,
        num_kv_pairs=task.num_kv_pairs,
        power_a=task.power_a,
        random_non_queries=task.random_non_queries,
    )
    train = multiquery_ar(num_train, seed=np.random.default_rng(train_ss), **kwargs)
    test = multiquery_ar(num_test, seed=np.random.default_rng(test_ss), **kwargs)
    return TensorDataset(*train), TensorDataset(*test)


def paper_num_kv_pairs(seq_len: int) -> int:
    """The ReBased Figure 1 rule: 16 pairs at L = 128, else L / 4."""
    return 16 if seq_len == 128 else seq_len // 4

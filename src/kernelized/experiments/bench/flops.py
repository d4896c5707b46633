"""FLOP models of the timed forms: useful FLOPs of one forward pass (a multiply-add counts 2).

Causal products count half of the T x T square; the bench counts a backward pass as twice the forward, so a
forward+backward cell is 3x these. Shapes: batch ``B``, heads ``H``, length ``T``, q/k width ``dk`` (raw) or ``F``
(features), value width ``dv``, chunk length ``chunk``.
"""

from __future__ import annotations


def flops_quadratic(B: int, H: int, T: int, dk: int, dv: int, causal: bool = True) -> float:
    """Attention-like forward: ``q k^T`` and ``A v`` over the (causal half of the) T x T square."""
    pairs = T * T / 2 if causal else T * T
    return 2 * B * H * pairs * (dk + dv)


def flops_chunk(B: int, H: int, T: int, F: int, dv: int, chunk: int) -> float:
    """Chunked linear attention forward with the normaliser as an extra value column: per token, reading and
    updating the ``[F, Dv+1]`` state, plus the causal half of the in-chunk ``q k^T`` and ``A v``."""
    return 2 * B * H * T * (2 * F * (dv + 1) + chunk / 2 * (F + dv + 1))


def flops_recurrent(B: int, H: int, T: int, F: int, dv: int) -> float:
    """Token-by-token linear attention forward: read and update the ``[F, Dv+1]`` state per token."""
    return 2 * B * H * T * 2 * F * (dv + 1)


def flops_kv_step(B: int, H: int, L: int, d: int) -> float:
    """One decode step of softmax attention over a KV cache of ``L`` tokens, head dim ``d``: scores and values."""
    return 2 * B * H * L * 2 * d

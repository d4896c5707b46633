"""Zoology's AR-hit slicing (Arora et al. 2023, arXiv 2312.04927 §3).

A token is an *AR hit* when it completes a bigram that already occurred earlier in the same context: the
model could predict it by recalling what followed the current token last time ("Hakuna Matata ... it means
no -> worries"). Perplexity on AR hits and on the other tokens is reported separately.
"""

from __future__ import annotations

import torch


def ar_hit_mask(tokens: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """AR-hit mask over *target* positions: ``mask[b, t]`` is True when ``tokens[b, t]`` is an AR hit.

    Alignment: position t is the token being predicted (from logits at position t-1). ``mask[b, t]`` is True
    iff t >= 1 and the bigram ``(tokens[b, t-1], tokens[b, t])`` equals ``(tokens[b, s-1], tokens[b, s])`` for
    some ``1 <= s < t``. So ``mask[:, 0]`` is always False. For a language model fed ``x = tokens[:, :-1]``
    with targets ``y = tokens[:, 1:]``, the mask over y (and over the logits' positions) is
    ``ar_hit_mask(tokens)[:, 1:]``. Rows are independent.

    Args:
        tokens: integer ids ``[B, T]`` (or ``[T]``, giving ``[T]``).
        padding_mask: optional bool ``[B, T]``, True = padding; a bigram touching padding is never a hit and
            never makes a later one.

    Returns:
        bool ``[B, T]`` (same shape as tokens).

    Vectorised: a stable sort of the bigram ids in each row puts repeats of one bigram next to each other in
    time order; every entry but the first of its run is a hit. O(B T log T).
    """
    if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point() or tokens.dtype == torch.bool:
        got = tokens.dtype if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be an integer tensor [B, T], got {got}")
    squeeze = tokens.dim() == 1
    if squeeze:
        tokens = tokens[None]
        padding_mask = None if padding_mask is None else padding_mask[None]
    if tokens.dim() != 2:
        raise ValueError(f"tokens must have shape [B, T] or [T], got {tuple(tokens.shape)}")
    if padding_mask is not None and padding_mask.shape != tokens.shape:
        raise ValueError(
            f"padding_mask must have the shape of tokens {tuple(tokens.shape)}, got {tuple(padding_mask.shape)}"
        )
    B, T = tokens.shape
    mask = torch.zeros(B, T, dtype=torch.bool, device=tokens.device)
    if T < 2:
        return mask[0] if squeeze else mask
    tokens = tokens.long()
    if (tokens < 0).any():
        raise ValueError("tokens must be non-negative ids")
    vocab = int(tokens.max()) + 1
    bigram = tokens[:, :-1] * vocab + tokens[:, 1:]  # [B, T-1]; bigram j ends at position j+1
    if padding_mask is not None:
        bad = padding_mask[:, :-1] | padding_mask[:, 1:]
        # padded bigrams get distinct negative ids: they never equal anything
        unique = -1 - torch.arange(B * (T - 1), device=tokens.device).view(B, T - 1)
        bigram = torch.where(bad, unique, bigram)
    sorted_ids, order = torch.sort(bigram, dim=1, stable=True)
    repeat = torch.zeros_like(sorted_ids, dtype=torch.bool)
    repeat[:, 1:] = sorted_ids[:, 1:] == sorted_ids[:, :-1]
    hits = torch.zeros_like(repeat).scatter(1, order, repeat)
    mask[:, 1:] = hits
    return mask[0] if squeeze else mask


def ar_hit_distance(tokens: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """How far back each AR hit's bigram occurred last: ``dist[b, t] = t - s`` for the latest ``1 <= s < t`` with
    ``(tokens[b, s-1], tokens[b, s]) == (tokens[b, t-1], tokens[b, t])``; 0 where ``tokens[b, t]`` is not an AR hit
    (so ``ar_hit_distance(x) > 0`` equals :func:`ar_hit_mask`). int64 ``[B, T]``, aligned as that mask."""
    mask = ar_hit_mask(tokens, padding_mask)  # validates, and gives the shape
    squeeze = tokens.dim() == 1
    tokens = tokens[None] if squeeze else tokens
    padding_mask = None if padding_mask is None else (padding_mask[None] if squeeze else padding_mask)
    B, T = tokens.shape
    dist = torch.zeros(B, T, dtype=torch.long, device=tokens.device)
    if T >= 2:
        tokens = tokens.long()
        bigram = tokens[:, :-1] * (int(tokens.max()) + 1) + tokens[:, 1:]
        if padding_mask is not None:
            bad = padding_mask[:, :-1] | padding_mask[:, 1:]
            bigram = torch.where(bad, -1 - torch.arange(B * (T - 1), device=tokens.device).view(B, T - 1), bigram)
        sorted_ids, order = torch.sort(bigram, dim=1, stable=True)  # repeats of a bigram adjacent, in time order
        gap = torch.zeros_like(order)
        gap[:, 1:] = torch.where(sorted_ids[:, 1:] == sorted_ids[:, :-1], order[:, 1:] - order[:, :-1], 0)
        dist[:, 1:] = torch.zeros_like(gap).scatter(1, order, gap)
    dist = dist * (mask if not squeeze else mask[None])
    return dist[0] if squeeze else dist


class BigramCounts:
    """How often each bigram occurs in a token stream (the training data), for Zoology's split of AR hits by
    the bigram's training-set frequency (rare bigrams are what separate architectures).

    ``BigramCounts(stream [N], vocab_size)(tokens [B, T]) -> counts [B, T]`` (int64): ``counts[b, t]`` is the
    number of times the bigram ``(tokens[b, t-1], tokens[b, t])`` occurs in the stream; 0 at t = 0. Aligned
    with :func:`ar_hit_mask` (target positions).
    """

    def __init__(self, stream: torch.Tensor, vocab_size: int):
        if stream.dim() != 1 or stream.is_floating_point():
            raise ValueError(f"stream must be a 1-d integer tensor [N], got {stream.dtype} {tuple(stream.shape)}")
        self.vocab_size = int(vocab_size)
        stream = stream.long()
        self.ids, self.counts = torch.unique(stream[:-1] * self.vocab_size + stream[1:], return_counts=True)
        self._by_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.long()
        out = torch.zeros_like(tokens)
        if tokens.shape[-1] < 2 or self.ids.numel() == 0:
            return out
        if tokens.device not in self._by_device:  # one copy of the table per device, made once
            self._by_device[tokens.device] = (self.ids.to(tokens.device), self.counts.to(tokens.device))
        ids, counts = self._by_device[tokens.device]
        query = tokens[..., :-1] * self.vocab_size + tokens[..., 1:]
        pos = torch.searchsorted(ids, query).clamp_max(ids.numel() - 1)
        out[..., 1:] = torch.where(ids[pos] == query, counts[pos], 0)
        return out

"""BERT's masked-LM corruption: choose 15 % of the real tokens; of those, 80 % become [MASK], 10 % a random
token, 10 % stay; the labels are the original ids at the chosen positions and -100 (ignored) elsewhere.

Special tokens ([CLS], [SEP], [PAD], ...) are never chosen. Seeded by a ``torch.Generator``, so a run's masks are
a function of its seed and step (exact resume)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

IGNORE = -100


def mask_tokens(
    ids: torch.Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    special_ids: Sequence[int],
    generator: torch.Generator,
    prob: float = 0.15,
    first_random_id: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, labels)`` of ``ids [B, T]`` (int64): the corrupted inputs and the labels (see above). Random
    replacements are drawn from ``[first_random_id, vocab_size)`` (pass the first non-special id to keep them
    ordinary word pieces)."""
    if ids.dtype != torch.long or ids.dim() != 2:
        raise ValueError(f"ids must be int64 [B, T], got {ids.dtype} {tuple(ids.shape)}")
    if not 0 < prob < 1:
        raise ValueError(f"prob must lie in (0, 1), got {prob!r}")
    special = torch.isin(ids, torch.as_tensor(list(special_ids), dtype=ids.dtype))
    u = torch.rand(ids.shape, generator=generator)
    chosen = (u < prob) & ~special
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    action = torch.rand(ids.shape, generator=generator)  # < 0.8: [MASK]; 0.8-0.9: random; else kept
    random_ids = torch.randint(first_random_id, vocab_size, ids.shape, generator=generator)
    inputs = torch.where(chosen & (action < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, inputs)
    return inputs, labels

"""BERT's masked-LM corruption: choose 15 % of the real tokens; of those, 80 % become [MASK], 10 % a random
token, 10 % stay; the labels are the original ids at the chosen positions and -100 (ignored) elsewhere.

Special tokens ([CLS], [SEP], [PAD], ...) are never chosen. Seeded by a ``torch.Generator``, so a run's masks are
a function of its seed (exact resume). :func:`pack_windows` packs a corpus's sentences into fixed windows and
:func:`masked_dataset` masks them: a pretraining set for a bidirectional
:class:`kernelized.models.backbone.LanguageModel` (``causal=False``) and the framework's trainer, whose loss
already ignores label -100."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.utils.data

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


def pack_windows(pieces: Sequence[Sequence[int]], seq_len: int, cls_id: int, sep_id: int, pad_id: int) -> torch.Tensor:
    """Sentences of word-piece ids packed into ``[N, seq_len]`` windows ``[CLS] s1 s2 ... [SEP]`` (BERT's
    full-sentence packing: a sentence longer than a window is split across windows); the last window padded."""
    if seq_len < 3:
        raise ValueError(f"seq_len must be >= 3 ([CLS], a token, [SEP]), got {seq_len}")
    stream = [t for sentence in pieces for t in sentence]
    if not stream:
        raise ValueError("pack_windows: no tokens (every sentence is empty)")
    body = seq_len - 2
    windows = []
    for start in range(0, len(stream), body):
        chunk = [cls_id, *stream[start : start + body], sep_id]
        windows.append(chunk + [pad_id] * (seq_len - len(chunk)))
    return torch.tensor(windows, dtype=torch.long)


def masked_dataset(windows: torch.Tensor, seed: int, **mask_kwargs) -> torch.utils.data.TensorDataset:
    """``(inputs, labels)`` of :func:`mask_tokens` over ``windows`` with a generator seeded by ``seed`` (static
    masking, as BERT's original: the same masks every epoch; a new seed draws new ones)."""
    inputs, labels = mask_tokens(windows, generator=torch.Generator().manual_seed(seed), **mask_kwargs)
    return torch.utils.data.TensorDataset(inputs, labels)

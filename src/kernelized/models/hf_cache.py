"""A `transformers` ``Cache`` that carries kernelized's own decoding state, so HF ``generate`` costs per token what
:func:`kernelized.models.generate` costs.

The state is the native one (:class:`kernelized.models.backbone.SequenceModel`): ``{"offset": tokens seen,
"blocks": [each mixer's state]}``, each mixer's state being

- kernel attention: ``(S [B, H, F, Dv], z [B, H, F])``, constant in size;
- softmax attention: ``{"k", "v": [B, S, H, D], "pad": [B, S]}``, a KV cache that grows;
- sliding-window attention: a ring buffer ``{"k", "v": [B, W, H, D], "valid": [B, W], "pos": [W], ...}``;
- BaseConv: the last inputs ``[B, kernel_size - 1, D]``.

Beam search reorders it (:meth:`KernelizedCache.reorder_cache`), and other strategies repeat or select rows: every
tensor of rank >= 2 has the batch first and is indexed along it; rank-0/1 entries (the ring buffer's slot
positions, shared by the rows) and Python numbers are shared by all rows and left alone.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache


def map_batch(state, fn):
    """``state`` with ``fn`` applied to every tensor that has a batch axis (rank >= 2)."""
    if isinstance(state, torch.Tensor):
        return fn(state) if state.dim() >= 2 else state
    if isinstance(state, dict):
        return {k: map_batch(v, fn) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(map_batch(v, fn) for v in state)
    return state


class KernelizedCache(Cache):
    """Every layer's native decoding state; ``state`` is None until the prompt has gone through the model."""

    is_compileable = False

    def __init__(self, state: dict | None = None):  # no Cache.__init__: it builds per-layer KV containers
        self.layers = []
        self.offloading = False
        self.state = state
        self.left_padding: torch.Tensor | None = None  # [B]: each row's count of left padding (its position shift)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens the state has seen (padding included)."""
        return 0 if self.state is None else int(self.state["offset"])

    def get_max_cache_shape(self, layer_idx: int = 0) -> int:
        return -1  # no fixed size

    def _apply(self, fn) -> None:
        self.state = map_batch(self.state, fn)
        if self.left_padding is not None:
            self.left_padding = fn(self.left_padding[:, None])[:, 0]

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search: row i continues from row ``beam_idx[i]``."""
        self._apply(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._apply(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._apply(lambda t: t[indices])

    def crop(self, max_length: int) -> None:
        raise NotImplementedError("a recurrent state cannot be cropped (assisted decoding is not supported)")

    def __len__(self) -> int:
        return 0 if self.state is None else len(self.state["blocks"])

    def __repr__(self) -> str:
        return f"KernelizedCache(seen={self.get_seq_length()}, layers={len(self)})"

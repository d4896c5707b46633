"""Bidirectional encoders for sequence classification (LRA) on top of :class:`SequenceModel`.

- :class:`EncoderClassifier`: tokens ``[B, T]`` -> logits ``[B, C]``; pooling ``"cls"`` (a learned [CLS] token is
  prepended, LRA's ListOps/Text/Image) or ``"mean"`` (over real tokens, LRA's Pathfinder).
- :class:`DualEncoderClassifier`: LRA Retrieval's two towers with shared weights and no cross-attention;
  the head reads ``[u, v, u * v, u - v]`` of the two pooled encodings (LRA paper App. A.1.3).

Padding: id ``pad_id`` (0) marks padding; it becomes the ``key_padding_mask`` of every mixer, is skipped by mean
pooling, and columns that are padding in every row of a batch are cut before encoding. The pooled result of a
sequence therefore does not depend on how much padding follows it (tests/models/test_classifier.py).
Any mixer spec works: ``blocks=[{"mixer": {"mixer": "kernel", "kernel": "gmm-prf", ...}, "mlp": "gelu"}] * L``.
"""

from __future__ import annotations

import torch
from torch import nn

from kernelized._checks import check_choice, check_positive_int
from kernelized.models.backbone import ModelConfig, SequenceModel, init_weights

POOLINGS = ("cls", "mean")


class _Head(nn.Module):
    """LRA's classifier head: ``Linear(in, hidden) -> ReLU -> Linear(hidden, num_classes)``."""

    def __init__(self, d_in: int, hidden: int, num_classes: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class EncoderClassifier(nn.Module):
    """Bidirectional encoder + pooling + MLP head: ``tokens [B, T] -> logits [B, num_classes]``.

    Args:
        cfg: the backbone's :class:`ModelConfig`; it must have ``causal=False``. With ``pooling="cls"`` its
            ``max_len`` must allow the extra [CLS] position, and ``cls_id`` must be a valid token id.
        num_classes: C; 1 = one regression output (GLUE's STS-B).
        pooling: ``"cls"`` or ``"mean"``.
        head_hidden: hidden width of the head (default ``2 * d_model``).
        pad_id: token id of padding; None = no padding (every token is real).
        cls_id: token id prepended for ``"cls"`` pooling (its embedding is learned like any other token's).
    """

    def __init__(
        self,
        cfg: ModelConfig,
        num_classes: int,
        pooling: str = "cls",
        head_hidden: int | None = None,
        pad_id: int | None = 0,
        cls_id: int = 1,
    ):
        super().__init__()
        if cfg.causal:
            raise ValueError("an encoder classifier needs a bidirectional backbone: ModelConfig.causal must be False")
        check_choice("pooling", pooling, POOLINGS)
        check_positive_int("num_classes", num_classes, minimum=1)
        if pooling == "cls" and not 0 <= cls_id < cfg.vocab_size:
            raise ValueError(f"cls_id must be a token id in [0, vocab_size={cfg.vocab_size}), got {cls_id}")
        self.cfg, self.pooling, self.pad_id, self.cls_id = cfg, pooling, pad_id, cls_id
        self.num_classes = num_classes
        self.encoder = SequenceModel(cfg)
        self.head = _Head(cfg.d_model, head_hidden or 2 * cfg.d_model, num_classes, cfg.dropout)
        init_weights(self)

    @property
    def max_tokens(self) -> int:
        """The longest input (without [CLS]) the model takes."""
        return self.cfg.max_len - (1 if self.pooling == "cls" else 0)

    def padding_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """bool ``[B, T]``, True at padding."""
        if self.pad_id is None:
            return torch.zeros(tokens.shape, dtype=torch.bool, device=tokens.device)
        return tokens == self.pad_id

    def encode(
        self, tokens: torch.Tensor, key_padding_mask: torch.Tensor | None = None, segments: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``tokens [B, T]`` (and segment ids ``[B, T]`` for a model with segment embeddings) -> pooled ``[B, D]``."""
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
            got = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"tokens must be [B, T], got {got}")
        pad = self.padding_mask(tokens) if key_padding_mask is None else key_padding_mask.bool()
        if pad.shape != tokens.shape:
            raise ValueError(
                f"key_padding_mask must have the shape of tokens {tuple(tokens.shape)}, got {tuple(pad.shape)}"
            )
        # cut the columns that are padding in every row (right padding of the whole batch): same result, less work
        real_cols = (~pad).any(0).nonzero()
        keep = int(real_cols.max()) + 1 if len(real_cols) else 1
        tokens, pad = tokens[:, :keep], pad[:, :keep]
        segments = segments[:, :keep] if segments is not None else None
        if tokens.shape[1] > self.max_tokens:
            raise ValueError(
                f"sequence of {tokens.shape[1]} tokens is longer than the model allows "
                f"(max_len={self.cfg.max_len}{', one position is the [CLS] token' if self.pooling == 'cls' else ''})"
            )
        if self.pooling == "cls":
            cls = torch.full_like(tokens[:, :1], self.cls_id)
            tokens = torch.cat([cls, tokens], 1)
            pad = torch.cat([torch.zeros_like(pad[:, :1]), pad], 1)
            segments = torch.cat([torch.zeros_like(segments[:, :1]), segments], 1) if segments is not None else None
        h = self.encoder(tokens, key_padding_mask=pad if pad.any() else None, segments=segments)  # [B, T, D]
        if self.pooling == "cls":
            return h[:, 0]
        w = (~pad).to(h.dtype)[..., None]
        return (h * w).sum(1) / w.sum(1).clamp_min(1.0)

    def forward(
        self, tokens: torch.Tensor, key_padding_mask: torch.Tensor | None = None, segments: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``tokens [B, T]`` -> logits ``[B, num_classes]`` (a regression model: ``[B, 1]``)."""
        return self.head(self.encode(tokens, key_padding_mask, segments))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class DualEncoderClassifier(nn.Module):
    """Two towers with one shared encoder: ``(x1 [B, T1], x2 [B, T2]) -> logits [B, num_classes]``.

    The head sees ``[u, v, u * v, u - v]`` (``[B, 4D]``) of the pooled encodings ``u, v``. Arguments as
    :class:`EncoderClassifier`.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        num_classes: int = 2,
        pooling: str = "cls",
        head_hidden: int | None = None,
        pad_id: int | None = 0,
        cls_id: int = 1,
    ):
        super().__init__()
        self.tower = EncoderClassifier(cfg, num_classes, pooling, head_hidden, pad_id, cls_id)
        self.tower.head = None  # the tower only encodes; the pair head is below
        self.cfg, self.num_classes = cfg, num_classes
        self.head = _Head(4 * cfg.d_model, head_hidden or 2 * cfg.d_model, num_classes, cfg.dropout)
        init_weights(self.head)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """``x1 [B, T1], x2 [B, T2]`` -> logits ``[B, num_classes]``."""
        if x1.dim() != 2 or x2.dim() != 2 or x1.shape[0] != x2.shape[0]:
            raise ValueError(f"x1 and x2 must be [B, T] with the same B, got {tuple(x1.shape)} and {tuple(x2.shape)}")
        u, v = self.tower.encode(x1), self.tower.encode(x2)
        return self.head(torch.cat([u, v, u * v, u - v], dim=-1))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def encoder_config(
    vocab_size: int,
    d_model: int,
    num_layers: int,
    mixer: dict | list[dict],
    *,
    mlp_hidden: int | None = None,
    max_len: int = 2048,
    positions: str = "sinusoidal",
    dropout: float = 0.0,
    embed_std: float = 1.0,
    num_segments: int = 0,
) -> ModelConfig:
    """A bidirectional :class:`ModelConfig` of ``num_layers`` blocks ``{mixer, gelu MLP}``; ``mixer`` is one spec
    (every layer) or a list of specs that layer i takes as ``mixer[i % len(mixer)]`` (a hybrid).

    ``embed_std``: the token embedding's init std; 1.0 as LRA's encoders (``nn.initializers.normal(stddev=1.0)``
    in ``lra_benchmarks/models/layers/common_layers.py``), so the tokens are not drowned by sinusoidal positions.
    ``num_segments``: 2 for BERT's sentence A / B embeddings (GLUE's pairs), 0 for none.
    """
    check_positive_int("num_layers", num_layers)
    pattern = list(mixer) if isinstance(mixer, (list, tuple)) else [mixer]
    if not pattern or not all(isinstance(m, dict) for m in pattern):
        raise ValueError(f"mixer must be a mixer spec dict or a non-empty list of them, got {mixer!r}")
    return ModelConfig(
        vocab_size=vocab_size,
        d_model=d_model,
        blocks=[
            {"mixer": dict(pattern[i % len(pattern)]), "mlp": "gelu", "mlp_hidden": mlp_hidden}
            for i in range(num_layers)
        ],  # fmt: skip
        max_len=max_len,
        positions=positions,
        dropout=dropout,
        causal=False,
        tie_embeddings=False,
        embed_std=embed_std,
        num_segments=num_segments,
    )

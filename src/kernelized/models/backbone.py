"""The sequence backbone every model shares: embeddings -> pre-norm blocks of {mixer, mlp} -> final norm.

A model is data: ``ModelConfig(blocks=[{"mixer": {...}, "mlp": "swiglu"}, ...])``. The MQAR model, the language
models and the LRA encoders are all instances of it; read top to bottom like nanoGPT's model.py.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from kernelized._checks import check_choice, check_positive_int
from kernelized.kernels import FeatureMap
from kernelized.layers import MLP, build_mixer

POSITIONS = ("learned", "sinusoidal", "none")
NORMS = ("layernorm", "rmsnorm")


@dataclass
class ModelConfig:
    """Everything that defines a model.

    Attributes:
        vocab_size: number of token ids.
        d_model: width D.
        blocks: one dict per residual block: ``{"mixer": <mixer spec>, "mlp": None | "gelu" | "swiglu",
            "mlp_hidden": optional hidden size}``; a mixer spec is ``{"mixer": "kernel", "kernel": ...}``,
            ``{"mixer": "softmax"}``, ``{"mixer": "baseconv"}``, ... (see ``layers.build_mixer``).
        max_len: longest sequence (learned and sinusoidal positions).
        positions: ``"learned"``, ``"sinusoidal"`` or ``"none"`` (e.g. rotary inside the mixers).
        norm: ``"layernorm"`` or ``"rmsnorm"``.
        dropout: on embeddings and block outputs.
        causal: autoregressive mixers (LMs, MQAR) or bidirectional (encoders).
        tie_embeddings: the LM head shares the token embedding.
        embed_std: standard deviation of the token embedding at init. 0.02 (GPT-2) suits learned positions of the
            same scale; beside sinusoidal positions (amplitude 1 per coordinate) it leaves the tokens 1/50 of the
            input, and a classifier starts blind to its input (LRA initialises token embeddings with std 1.0).
        num_segments: 0 = no segment embeddings; 2 = BERT's token-type embeddings (sentence A / B of a pair),
            added to the token and position embeddings when ``segments [B, T]`` is passed (segment 0 otherwise).
    """

    vocab_size: int
    d_model: int
    blocks: list[dict] = field(default_factory=list)
    max_len: int = 2048
    positions: str = "learned"
    norm: str = "layernorm"
    dropout: float = 0.0
    causal: bool = True
    tie_embeddings: bool = True
    embed_std: float = 0.02
    num_segments: int = 0

    def __post_init__(self):
        check_positive_int("vocab_size", self.vocab_size)
        check_positive_int("d_model", self.d_model)
        check_positive_int("max_len", self.max_len)
        check_choice("positions", self.positions, POSITIONS)
        check_choice("norm", self.norm, NORMS)
        check_positive_int("num_segments", self.num_segments, minimum=0)
        if not isinstance(self.embed_std, (int, float)) or not self.embed_std > 0:
            raise ValueError(f"embed_std must be a positive number, got {self.embed_std!r}")
        if not isinstance(self.blocks, list) or not self.blocks:
            raise ValueError(f"blocks must be a non-empty list of block dicts, got {self.blocks!r}")
        for i, block in enumerate(self.blocks):
            if not isinstance(block, dict) or "mixer" not in block:
                raise ValueError(f"blocks[{i}] must be a dict with a 'mixer' spec, got {block!r}")
            unknown = set(block) - {"mixer", "mlp", "mlp_hidden"}
            if unknown:
                raise ValueError(f"blocks[{i}] has unknown keys {sorted(unknown)}; expected mixer, mlp, mlp_hidden")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"model config has unknown fields {unknown}; expected a subset of {sorted(known)}")
        return cls(**d)


def _norm(kind: str, d: int) -> nn.Module:
    return nn.LayerNorm(d) if kind == "layernorm" else nn.RMSNorm(d)


def sinusoidal_positions(max_len: int, d: int) -> torch.Tensor:
    """The Transformer's fixed positional encoding ``[max_len, d]``."""
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    inv = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    table = torch.zeros(max_len, d)
    table[:, 0::2] = torch.sin(pos * inv)
    table[:, 1::2] = torch.cos(pos * inv)[:, : d // 2]
    return table


class Block(nn.Module):
    """``x + mixer(norm(x))``, then ``x + mlp(norm(x))`` when the block has an MLP."""

    def __init__(self, cfg: ModelConfig, spec: dict):
        super().__init__()
        self.norm1 = _norm(cfg.norm, cfg.d_model)
        self.mixer = build_mixer(spec["mixer"], cfg.d_model, causal=cfg.causal)
        self.mlp = None
        if spec.get("mlp"):
            self.norm2 = _norm(cfg.norm, cfg.d_model)
            self.mlp = MLP(cfg.d_model, spec.get("mlp_hidden"), activation=spec["mlp"], dropout=cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)
        self._mixer_options = set(inspect.signature(self.mixer.forward).parameters)

    def forward(self, x, key_padding_mask=None, state=None, output_state=False, **mixer_kwargs):
        """Returns ``(x, new_mixer_state)``; mixer_kwargs go to the mixer only if its forward takes them."""
        extra = {k: v for k, v in mixer_kwargs.items() if k in self._mixer_options}
        out = self.mixer(
            self.norm1(x), key_padding_mask=key_padding_mask, state=state, output_state=output_state, **extra
        )
        h, new_state = out if output_state else (out, None)
        x = x + self.dropout(h)
        if self.mlp is not None:
            x = x + self.dropout(self.mlp(self.norm2(x)))
        return x, new_state


class SequenceModel(nn.Module):
    """Tokens ``[B, T]`` -> hidden states ``[B, T, D]``.

    The state for incremental decoding is ``{"offset": tokens seen so far, "blocks": [each mixer's state]}``.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        if cfg.positions == "learned":
            self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        elif cfg.positions == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_positions(cfg.max_len, cfg.d_model), persistent=False)
        self.segment = nn.Embedding(cfg.num_segments, cfg.d_model) if cfg.num_segments else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, spec) for spec in cfg.blocks)
        self.norm = _norm(cfg.norm, cfg.d_model)

    def embed_tokens(
        self,
        tokens: torch.Tensor,
        offset: int = 0,
        segments: torch.Tensor | None = None,
        position_shift: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token (+ position, + segment) embeddings ``[B, T, D]`` of the tokens at positions ``offset ..
        offset + T - 1``, each row moved back by ``position_shift [B]`` (its count of left padding, so a
        left-padded row's first real token sits at position 0: padded batches decode as their rows alone)."""
        if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.int64, torch.int32) or tokens.dim() != 2:
            got = f"{tokens.dtype} {tuple(tokens.shape)}" if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"tokens must be an integer tensor [B, T], got {got}")
        T = tokens.shape[1]
        if self.cfg.positions != "none" and offset + T > self.cfg.max_len:
            raise ValueError(
                f"sequence length {offset + T} (offset {offset} + {T} tokens) exceeds max_len={self.cfg.max_len} "
                f"of the {self.cfg.positions} positions"
            )
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.cfg.vocab_size):
            raise ValueError(
                f"tokens must lie in [0, vocab_size={self.cfg.vocab_size}), got range "
                f"[{int(tokens.min())}, {int(tokens.max())}]"
            )
        x = self.embed(tokens)
        positions = torch.arange(offset, offset + T, device=tokens.device)
        if position_shift is not None:
            positions = (positions[None, :] - position_shift.to(positions.device)[:, None]).clamp_min(0)  # [B, T]
        if self.cfg.positions == "learned":
            x = x + self.pos(positions)
        elif self.cfg.positions == "sinusoidal":
            x = x + self.pos_table[positions].to(x.dtype)
        if self.segment is not None:
            x = x + self.segment(self._segment_ids(tokens, segments))
        elif segments is not None:
            raise ValueError("segments were given but the model has no segment embeddings (ModelConfig.num_segments=0)")
        return self.dropout(x)

    def _segment_ids(self, tokens: torch.Tensor, segments: torch.Tensor | None) -> torch.Tensor:
        if segments is None:
            return torch.zeros_like(tokens)
        if segments.shape != tokens.shape:
            raise ValueError(f"segments must be shaped as tokens {tuple(tokens.shape)}, got {tuple(segments.shape)}")
        if segments.numel() and (int(segments.min()) < 0 or int(segments.max()) >= self.cfg.num_segments):
            raise ValueError(
                f"segments must lie in [0, num_segments={self.cfg.num_segments}), got range "
                f"[{int(segments.min())}, {int(segments.max())}]"
            )
        return segments.long()

    def forward(
        self,
        tokens: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        state: dict | None = None,
        output_state: bool = False,
        segments: torch.Tensor | None = None,
        position_shift: torch.Tensor | None = None,
        **mixer_kwargs,
    ):
        """``tokens [B, T]`` -> ``hidden [B, T, D]`` (and the new state when ``output_state``).

        ``key_padding_mask``: bool ``[B, T]``, True at padding. ``segments``: int ``[B, T]`` segment ids (models
        with ``num_segments``; default all 0). ``position_shift``: int ``[B]``, see :meth:`embed_tokens`.
        ``mixer_kwargs`` reach every mixer that takes them (e.g. ``mode="recurrent"`` for kernel attention when
        decoding)."""
        offset = 0 if state is None else state["offset"]
        x = self.embed_tokens(tokens, offset, segments, position_shift)
        block_states = [None] * len(self.blocks) if state is None else state["blocks"]
        new_states = []
        for block, block_state in zip(self.blocks, block_states):
            x, s = block(x, key_padding_mask, block_state, output_state, **mixer_kwargs)
            new_states.append(s)
        x = self.norm(x)
        if output_state:
            return x, {"offset": offset + tokens.shape[1], "blocks": new_states}
        return x

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class LanguageModel(nn.Module):
    """``tokens [B, T] -> logits [B, T, vocab]``: a SequenceModel with a (tied) output head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = SequenceModel(cfg)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.backbone.embed.weight
        init_weights(self)

    def forward(self, tokens, key_padding_mask=None, state=None, output_state=False, segments=None, **mixer_kwargs):
        out = self.backbone(tokens, key_padding_mask, state, output_state, segments=segments, **mixer_kwargs)
        if output_state:
            hidden, new_state = out
            return self.head(hidden), new_state
        return self.head(out)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def init_weights(model: nn.Module) -> None:
    """GPT-2 style: N(0, 0.02) for linear and embedding weights, zero biases; each backbone's token embedding
    N(0, ``cfg.embed_std``).

    Feature maps keep their own initialisation (ReBased's gamma = 1, beta = 0; spectral generators' xavier).
    """
    inside_maps = {id(m) for fm in model.modules() if isinstance(fm, FeatureMap) for m in fm.modules()}
    for module in model.modules():
        if id(module) in inside_maps:
            continue
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    for module in model.modules():
        if isinstance(module, SequenceModel):
            nn.init.normal_(module.embed.weight, std=module.cfg.embed_std)

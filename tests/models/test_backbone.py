"""The shared backbone: incremental decoding equals the full forward; configs and inputs are checked."""

from __future__ import annotations

import pytest
import torch

from kernelized.models import LanguageModel, ModelConfig, SequenceModel
from tests.conftest import assert_close

HYBRID = [
    {"mixer": {"mixer": "baseconv", "kernel_size": 3}},
    {"mixer": {"mixer": "kernel", "kernel": "rebased", "num_heads": 2, "feature_dim": 4}, "mlp": "swiglu"},
    {"mixer": {"mixer": "softmax", "num_heads": 2}, "mlp": "gelu"},
    {"mixer": {"mixer": "kernel", "kernel": "taylor", "num_heads": 2, "feature_dim": 4}},
]


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_decoding_token_by_token_equals_full_forward(positions):
    cfg = ModelConfig(vocab_size=50, d_model=16, blocks=HYBRID, max_len=40, positions=positions)
    model = LanguageModel(cfg).double().eval()
    tokens = torch.randint(0, 50, (2, 33))
    full = model(tokens)
    logits, state = model(tokens[:, :13], output_state=True)  # odd prefill, chunk form
    parts = [logits]
    for t in range(13, 33):
        logits, state = model(tokens[:, t : t + 1], state=state, output_state=True, mode="recurrent")
        parts.append(logits)
    assert state["offset"] == 33
    assert_close("decode", full, torch.cat(parts, 1), ratio=1e-10)


def test_tied_head_and_bidirectional_encoder():
    cfg = ModelConfig(vocab_size=30, d_model=8, blocks=HYBRID[1:2], causal=False, positions="none")
    model = LanguageModel(cfg)
    assert model.head.weight is model.backbone.embed.weight
    enc = SequenceModel(cfg)
    x = torch.randint(0, 30, (1, 10))
    h = enc(x)
    x2 = x.clone()
    x2[0, -1] = (x[0, -1] + 1) % 30
    assert (enc(x2)[0, 0] - h[0, 0]).abs().max() > 0  # the first token sees the last one: bidirectional


def test_bad_input():
    cfg = ModelConfig(vocab_size=20, d_model=8, blocks=HYBRID[:1], max_len=10)
    model = LanguageModel(cfg)
    with pytest.raises(ValueError, match="sequence length 12 .* exceeds max_len=10"):
        model(torch.zeros(1, 12, dtype=torch.long))
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, vocab_size=20\)"):
        model(torch.full((1, 4), 20))
    with pytest.raises(ValueError, match="tokens must be an integer tensor"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="blocks must be a non-empty list"):
        ModelConfig(vocab_size=20, d_model=8, blocks=[])
    with pytest.raises(ValueError, match="positions must be one of"):
        ModelConfig(vocab_size=20, d_model=8, blocks=HYBRID[:1], positions="rotary")
    with pytest.raises(ValueError, match="unknown keys \\['ffn'\\]"):
        ModelConfig(vocab_size=20, d_model=8, blocks=[{"mixer": {"mixer": "baseconv"}, "ffn": "gelu"}])
    with pytest.raises(ValueError, match="unknown fields \\['layers'\\]"):
        ModelConfig.from_dict({"vocab_size": 20, "d_model": 8, "layers": 2})

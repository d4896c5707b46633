"""Encoder classifiers: padding never changes a sequence's result, towers share weights, they learn, bad input."""

from __future__ import annotations

import pytest
import torch

from kernelized.models.classifier import DualEncoderClassifier, EncoderClassifier, encoder_config

pytestmark = pytest.mark.usefixtures("one_thread")


MIXERS = {
    "softmax": {"mixer": "softmax", "num_heads": 2},
    "elu": {"mixer": "kernel", "kernel": "elu", "num_heads": 2, "feature_dim": 8},
    "rebased": {"mixer": "kernel", "kernel": "rebased", "num_heads": 2, "feature_dim": 4},
    "gmm-prf": {
        "mixer": "kernel",
        "kernel": "gmm-prf",
        "num_heads": 2,
        "feature_dim": 8,
        "kernel_options": {"num_features": 16},
    },
}


def _batch(vocab=20, B=4, T=11):
    """Right-padded tokens with different real lengths per row (ids >= 2 are real, 0 is padding)."""
    x = torch.randint(2, vocab, (B, T))
    lengths = [T, 7, 3, 1][:B]
    for i, n in enumerate(lengths):
        x[i, n:] = 0
    return x, lengths


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("name", list(MIXERS))
def test_padding_does_not_change_the_result(name, pooling):
    model = EncoderClassifier(encoder_config(20, 16, 2, MIXERS[name], max_len=40), 5, pooling=pooling).eval()
    x, lengths = _batch()
    with torch.no_grad():
        batched = model(x)
        alone = torch.cat([model(x[i : i + 1, :n]) for i, n in enumerate(lengths)])
        more_pad = model(torch.cat([x, torch.zeros(4, 9, dtype=torch.long)], 1))
        # an explicit mask gives the same as the pad ids, and garbage under the mask changes nothing
        garbage = torch.where(x == 0, torch.randint(2, 20, x.shape), x)
        masked = model(garbage, key_padding_mask=x == 0)
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(more_pad, batched, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(masked, batched, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(batched[0], batched[1])  # and the model does look at the tokens


def test_dual_encoder_shares_one_encoder_and_reads_the_nli_features():
    model = DualEncoderClassifier(encoder_config(20, 16, 1, MIXERS["elu"], max_len=32), pooling="mean").eval()
    assert not hasattr(model, "encoder2") and sum(1 for m in model.modules() if isinstance(m, EncoderClassifier)) == 1
    x1, _ = _batch(T=9)
    x2, lengths2 = _batch(T=12)
    with torch.no_grad():
        out = model(x1, x2)
        u = model.tower.encode(x1)
        v = torch.cat([model.tower.encode(x2[i : i + 1, :n]) for i, n in enumerate(lengths2)])
        ref = model.head(torch.cat([u, v, u * v, u - v], -1))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    assert out.shape == (4, 2)


def test_gradients_reach_every_parameter_and_pad_embedding_gets_none():
    model = EncoderClassifier(encoder_config(20, 16, 2, MIXERS["softmax"], max_len=40), 3, pooling="cls")
    x, _ = _batch()
    model(x).logsumexp(-1).sum().backward()
    emb = model.encoder.embed.weight.grad
    assert emb[0].abs().max() == 0  # padding is invisible
    assert emb[1].abs().max() > 0  # the [CLS] token is learned
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_classifier_learns_a_long_range_rule():
    """Label = does token 3 occur anywhere? Needs attention across the sequence; mean pooling, elu kernel."""
    torch.manual_seed(0)
    model = EncoderClassifier(encoder_config(8, 32, 1, MIXERS["elu"], max_len=24), 2, pooling="mean")
    x = torch.randint(4, 8, (256, 24))
    labels = torch.randint(0, 2, (256,))
    pos = torch.randint(0, 24, (256,))
    x[labels == 1, pos[labels == 1]] = 3
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        idx = torch.randint(0, 256, (32,))
        loss = torch.nn.functional.cross_entropy(model(x[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (model(x).argmax(-1) == labels).float().mean().item()
    assert acc > 0.9


def test_bad_input():
    causal = encoder_config(20, 16, 1, MIXERS["elu"], max_len=8)
    causal.causal = True
    with pytest.raises(ValueError, match="causal must be False"):
        EncoderClassifier(causal, 2)
    with pytest.raises(ValueError, match="pooling must be one of"):
        EncoderClassifier(encoder_config(20, 16, 1, MIXERS["elu"], max_len=8), 2, pooling="max")
    model = EncoderClassifier(encoder_config(20, 16, 1, MIXERS["elu"], max_len=8), 2, pooling="cls")
    with pytest.raises(ValueError, match="8 tokens is longer than the model allows \\(max_len=8, one position"):
        model(torch.randint(2, 20, (2, 8)))
    assert model(torch.randint(2, 20, (2, 7))).shape == (2, 2)
    with pytest.raises(ValueError, match="tokens must be \\[B, T\\]"):
        model(torch.randint(2, 20, (7,)))
    with pytest.raises(ValueError, match="tokens must lie in"):
        model(torch.full((1, 3), 25))
    dual = DualEncoderClassifier(encoder_config(20, 16, 1, MIXERS["elu"], max_len=8))
    with pytest.raises(ValueError, match="same B"):
        dual(torch.randint(2, 20, (2, 5)), torch.randint(2, 20, (3, 5)))

import pytest
import torch

from kernelized.models import LanguageModel, ModelConfig
from kernelized.models.generation import generate, incremental_logits, sample_next, state_numel

V = 37


pytestmark = pytest.mark.usefixtures("one_thread")


def hybrid(positions="learned", rotary=False, **extra) -> LanguageModel:
    """Every mixer type: kernel attention (two kernels), softmax with a KV cache, sliding window, BaseConv."""
    blocks = [
        {"mixer": {"mixer": "baseconv", "kernel_size": 3}, "mlp": "swiglu"},
        {
            "mixer": {"mixer": "kernel", "kernel": "rebased", "num_heads": 2, "feature_dim": 4, "chunk_size": 4},
            "mlp": "swiglu",
        },
        {"mixer": {"mixer": "sliding_window", "num_heads": 2, "window": 3}, "mlp": "swiglu"},
        {"mixer": {"mixer": "softmax", "num_heads": 2, "rotary": rotary}, "mlp": "swiglu"},
        {
            "mixer": {"mixer": "kernel", "kernel": "taylor", "num_heads": 2, "feature_dim": 4, "chunk_size": 5},
            "mlp": None,
        },
    ]
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=V, d_model=16, blocks=blocks, max_len=64, positions=positions, **extra)
    return LanguageModel(cfg).eval()


@pytest.mark.parametrize("prefill", [1, 7, 12])
@pytest.mark.parametrize("positions,rotary", [("learned", False), ("none", True)])
def test_decoded_logits_equal_full_forward(prefill, positions, rotary):
    model = hybrid(positions, rotary)
    tokens = torch.randint(0, V, (2, 21))
    full = model(tokens)
    step, sizes = incremental_logits(model, tokens, prefill)
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-4)
    # only the softmax layer's KV cache grows: 2 * H * Dh per token (+1 pad flag), never the kernel states
    growth = {b - a for a, b in zip(sizes, sizes[1:])}
    assert growth == {2 * 2 * 8 * 2 + 2}


def test_kernel_and_window_states_do_not_grow():
    blocks = [
        {"mixer": {"mixer": "kernel", "kernel": "rebased", "num_heads": 2, "feature_dim": 4}, "mlp": "swiglu"},
        {"mixer": {"mixer": "sliding_window", "num_heads": 2, "window": 4}, "mlp": "swiglu"},
        {"mixer": {"mixer": "baseconv"}, "mlp": None},
    ]
    model = LanguageModel(ModelConfig(vocab_size=V, d_model=16, blocks=blocks, positions="none")).eval()
    tokens = torch.randint(0, V, (1, 30))
    step, sizes = incremental_logits(model, tokens, prefill=5)
    torch.testing.assert_close(step, model(tokens), rtol=1e-4, atol=1e-4)
    assert len(set(sizes)) == 1  # constant memory per token


def test_greedy_generation_matches_argmax_of_full_forward():
    model = hybrid()
    prompt = torch.randint(0, V, (2, 5))
    out = generate(model, prompt, 8, temperature=0)
    assert out.shape == (2, 13) and torch.equal(out[:, :5], prompt)
    ref = prompt
    for _ in range(8):
        ref = torch.cat([ref, model(ref)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, ref)
    # top_k=1 sampling is greedy whatever the temperature
    assert torch.equal(generate(model, prompt, 8, temperature=2.0, top_k=1), ref)


def test_sampling_is_reproducible_and_respects_top_k():
    model = hybrid()
    prompt = torch.randint(0, V, (3, 4))
    a = generate(model, prompt, 6, temperature=1.5, generator=torch.Generator().manual_seed(1))
    b = generate(model, prompt, 6, temperature=1.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    out = generate(model, prompt, 6, top_k=3, generator=torch.Generator().manual_seed(2))
    logits = model(out[:, :-1])[:, 3:]  # the logits each new token was drawn from
    top3 = logits.topk(3, dim=-1).indices
    assert (top3 == out[:, 4:, None]).any(-1).all()


def test_sample_next_follows_the_tempered_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).expand(20000, 4)
    g = torch.Generator().manual_seed(0)
    for temperature in (1.0, 0.5):
        draws = sample_next(logits, temperature, generator=g)
        freq = torch.bincount(draws, minlength=4).float() / len(draws)
        torch.testing.assert_close(freq, torch.softmax(logits[0] / temperature, -1), atol=0.015, rtol=0)
    draws = sample_next(logits, 1.0, top_k=2, generator=g)
    assert set(draws.tolist()) == {0, 1}


def test_eos_stops_rows():
    model = hybrid()
    prompt = torch.randint(0, V, (2, 3))
    greedy = generate(model, prompt, 6, temperature=0)
    eos = int(greedy[0, 4])  # the second token row 0 generates
    out = generate(model, prompt, 6, temperature=0, eos_id=eos)
    assert out.shape[1] <= greedy.shape[1]
    for row, ref in zip(out.tolist(), greedy.tolist()):
        first = next((i for i in range(3, len(ref)) if ref[i] == eos), len(ref))
        assert row[: first + 1] == ref[: first + 1]  # identical up to the row's first eos ...
        assert all(t == eos for t in row[first:])  # ... then eos only
    # generation stops once every row has emitted eos
    last = max(next((i for i in range(3, 9) if r[i] == eos), 8) for r in greedy.tolist())
    assert out.shape[1] == last + 1
    assert state_numel({"a": torch.zeros(2, 3), "b": [torch.zeros(4), None]}) == 10


def test_bad_input():
    model = hybrid()
    with pytest.raises(ValueError, match="max_len=64"):
        generate(model, torch.zeros(1, 60, dtype=torch.long), 10)
    with pytest.raises(ValueError, match="max_len=64"):
        model(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="prompt"):
        generate(model, torch.zeros(1, 0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, torch.zeros(1, 2, dtype=torch.long), 3, temperature=-1.0)
